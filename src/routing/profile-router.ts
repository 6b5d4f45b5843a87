/**
 * The backend for each login: the profile a route names for the login's exact name or its
 * domain, else the default profile (the flags). nginx's mail proxy and perdition choose a
 * backend per user the same way.
 */
import type { Logger } from 'winston';
import { routeOf, type Routing } from '../config/profiles.js';
import type { ClientInfo, Credentials, Maildrop, MaildropProvider } from '../maildrop/maildrop.js';

export class ProfileRouter implements MaildropProvider {
  constructor(
    private readonly routing: Routing,
    /** The way in to each profile's backend, by profile name. */
    private readonly backends: ReadonlyMap<string, MaildropProvider>,
    private readonly logger: Logger,
  ) {}

  authenticate(credentials: Credentials, client: ClientInfo): Promise<Maildrop> {
    const profile = routeOf(this.routing, credentials.user);
    if (this.logger.isDebugEnabled())
      this.logger.debug(`Login routed to profile ${profile}`, {
        client: `${client.address}:${client.port}`,
        user: credentials.user,
      });
    return this.backends.get(profile)!.authenticate(credentials, client);
  }
}
