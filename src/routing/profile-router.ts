/**
 * The backend for each login: the profile the login routes (login-routes.ts) pick: a route of
 * the config file for the login's exact name or its domain, else the default profile (the
 * flags), or, with --lookup-url, the lookup service's answer. nginx's mail proxy and perdition
 * choose a backend per user the same way.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'winston';
import { MaildropError } from '../maildrop/errors.js';
import type { ClientInfo, Credentials, Maildrop, MaildropProvider } from '../maildrop/maildrop.js';
import { RouteRefused, RouteUnavailable, type LoginRoutes } from './login-routes.js';

export class ProfileRouter implements MaildropProvider {
  constructor(
    private readonly routes: LoginRoutes,
    /** The way in to each profile's backend, by profile name. */
    private readonly backends: ReadonlyMap<string, MaildropProvider>,
    private readonly logger: Logger,
  ) {}

  async authenticate(credentials: Credentials, client: ClientInfo): Promise<Maildrop> {
    const password = 'password' in credentials ? credentials.password : undefined;
    let route;
    try {
      route = await this.routes.route({ user: credentials.user, password, protocol: 'pop3', client });
    } catch (err) {
      if (err instanceof RouteRefused) {
        // The lookup's Auth-Wait comes first; the session's own failed-login delay follows.
        if (err.waitMs > 0) await sleep(err.waitMs);
        throw new MaildropError('credentials', err.message, { cause: err });
      }
      if (err instanceof RouteUnavailable) throw new MaildropError('temporary', err.message, { cause: err });
      throw err;
    }
    if (this.logger.isDebugEnabled()) {
      const renamed = route.user === credentials.user ? '' : ` as ${route.user}`;
      const meta = { client: `${client.address}:${client.port}`, user: credentials.user };
      this.logger.debug(`Login routed to profile ${route.profile}${renamed}`, meta);
    }
    const routed: Credentials = { ...credentials, user: route.user };
    return this.backends.get(route.profile)!.authenticate(routed, client);
  }
}
