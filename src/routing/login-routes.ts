/**
 * Which profile a login goes to, and under which name, for both front doors (POP3's
 * ProfileRouter and SMTP's Submitters): the static routes of the config file, or the answer of
 * a lookup service (lookup.ts). A refusal and an unreachable lookup are errors of their own, so
 * that each protocol answers them in its words: a failed login, or a temporary failure.
 */
import { routeOf, type Routing } from '../config/profiles.js';
import type { ClientInfo } from '../maildrop/maildrop.js';

export type LoginProtocol = 'pop3' | 'smtp';

export interface LoginQuestion {
  readonly user: string;
  /** Undefined when the client brought a bearer token instead (AUTH XOAUTH2). */
  readonly password: string | undefined;
  readonly protocol: LoginProtocol;
  readonly client: ClientInfo;
}

export interface Route {
  readonly profile: string;
  /** The login name from here on: the client's, or the one the lookup rewrote it to. */
  readonly user: string;
}

export interface LoginRoutes {
  route(question: LoginQuestion): Promise<Route>;
}

/** The lookup said no: the client gets the failed-login reply once `waitMs` have passed. */
export class RouteRefused extends Error {
  constructor(
    message: string,
    readonly waitMs: number,
  ) {
    super(message);
    this.name = 'RouteRefused';
  }
}

/** The lookup could not answer (down, slow, nonsense): a temporary failure, never the client's fault. */
export class RouteUnavailable extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'RouteUnavailable';
  }
}

/** The config file's routes: the exact login name, else its domain, else the default profile. */
export class StaticRoutes implements LoginRoutes {
  constructor(private readonly routing: Routing) {}

  route(question: LoginQuestion): Promise<Route> {
    return Promise.resolve({ profile: routeOf(this.routing, question.user), user: question.user });
  }
}
