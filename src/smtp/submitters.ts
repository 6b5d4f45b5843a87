/**
 * Who a client submitting mail is, where its messages go and how the proxy logs in to the relay
 * for it: by the same routes and profiles as the POP3 side. With the password grant the client's
 * own name and password go to the relay (which checks them); with a token grant the client is
 * checked against the proxy's own users and the relay is logged in to as the user's mailbox with
 * a token from the same cache the IMAP side uses (or one of the profile's SMTP scope); a client
 * that brings its own bearer token (AUTH XOAUTH2) has it passed on.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Routing } from '../config/profiles.js';
import type { ClientInfo, Credentials } from '../maildrop/maildrop.js';
import { TokenError } from '../oauth/grants.js';
import { RouteRefused, RouteUnavailable, StaticRoutes, type LoginRoutes, type Route } from '../routing/login-routes.js';
import type { ProfileAccess, TokenSource } from '../routing/profile-access.js';
import type { RelayEndpoint, RelayLogin } from './relay-client.js';

/** Why a submitter was not let in: its credentials, or something it cannot mend (for now, or at all). */
export class SubmitterError extends Error {
  constructor(
    readonly kind: 'credentials' | 'temporary',
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'SubmitterError';
  }
}

export interface Submitter {
  /** The profile its login was routed to. */
  readonly profile: string;
  /**
   * The addresses it may give as the envelope sender (lower case): its mailbox and its send-as
   * addresses; undefined where the proxy cannot know them (a password login that is no
   * address): then the relay alone decides.
   */
  readonly senders: ReadonlySet<string> | undefined;
  /** Where its messages go; undefined: its profile has no relay. */
  readonly relay: RelayEndpoint | undefined;
  /** The relay login, with a token fetched now if the profile's grant takes one. */
  relayLogin(): Promise<RelayLogin>;
  /** The relay refused this login: a token is dropped from the cache, so that the next is fresh. */
  refused(login: RelayLogin): void;
  /** Whether the relay checks the credentials themselves (a refusal is then the client's 535). */
  readonly relayChecksCredentials: boolean;
}

export class Submitters {
  constructor(
    private readonly routing: Routing,
    private readonly access: ReadonlyMap<string, ProfileAccess>,
    /** The same routes POP3 logins take: the config file's, or the lookup service's answers. */
    private readonly routes: LoginRoutes = new StaticRoutes(routing),
  ) {}

  async authenticate(given: Credentials, client: ClientInfo): Promise<Submitter> {
    const route = await this.route(given, client);
    const profile = route.profile;
    const credentials: Credentials = { ...given, user: route.user };
    const settings = this.routing.profiles.get(profile)!;
    const access = this.access.get(profile)!;
    const relay = settings.smtpRelay;
    if ('accessToken' in credentials) {
      const login = { user: credentials.user, accessToken: credentials.accessToken };
      return fixed(profile, relay, login, addressOf(credentials.user));
    }
    const tokens = access.smtpTokens;
    if (tokens === undefined) {
      return fixed(
        profile,
        relay,
        { user: credentials.user, password: credentials.password },
        addressOf(credentials.user),
      );
    }
    const user = await access.users?.verify(credentials.user, credentials.password);
    if (user === undefined) throw new SubmitterError('credentials', 'unknown user or wrong password (local users)');
    const senders = new Set([user.account, ...user.sendAs].map((a) => a.toLowerCase()));
    return tokenLogin(profile, relay, tokens, user.account, senders, user.tokenAccount);
  }

  /** A refusal of the lookup is the client's 535 (after its Auth-Wait); an outage is a 454. */
  private async route(credentials: Credentials, client: ClientInfo): Promise<Route> {
    const password = 'password' in credentials ? credentials.password : undefined;
    try {
      return await this.routes.route({ user: credentials.user, password, protocol: 'smtp', client });
    } catch (err) {
      if (err instanceof RouteRefused) {
        if (err.waitMs > 0) await sleep(err.waitMs);
        throw new SubmitterError('credentials', err.message, { cause: err });
      }
      if (err instanceof RouteUnavailable) throw new SubmitterError('temporary', err.message, { cause: err });
      throw err;
    }
  }
}

/** A login whose relay credentials are the client's own. */
function fixed(
  profile: string,
  relay: RelayEndpoint | undefined,
  login: RelayLogin,
  address: string | undefined,
): Submitter {
  return {
    profile,
    relay,
    senders: address === undefined ? undefined : new Set([address]),
    relayLogin: () => Promise.resolve(login),
    refused: () => undefined,
    relayChecksCredentials: true,
  };
}

function tokenLogin(
  profile: string,
  relay: RelayEndpoint | undefined,
  tokens: TokenSource,
  mailbox: string,
  senders: Set<string>,
  tokenAccount: string | undefined,
): Submitter {
  // A delegate's token sends as the shared mailbox, as Microsoft documents for XOAUTH2's user=.
  const key = tokens.key(tokenAccount ?? mailbox);
  return {
    profile,
    relay,
    senders,
    relayLogin: async () => {
      try {
        return { user: mailbox, accessToken: await tokens.cache.get(key) };
      } catch (err) {
        const why = err instanceof TokenError ? err.message : `token request failed: ${(err as Error).message}`;
        throw new SubmitterError('temporary', why, { cause: err });
      }
    },
    refused: (login) => {
      if ('accessToken' in login) tokens.cache.invalidate(key, login.accessToken);
    },
    relayChecksCredentials: false,
  };
}

/** A login name that is an address, in lower case; undefined otherwise. */
function addressOf(login: string): string | undefined {
  return /^[^\s@]+@[^\s@]+$/.test(login) ? login.toLowerCase() : undefined;
}
