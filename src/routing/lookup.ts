/**
 * Routing by lookup: for each login the proxy asks an HTTP service in the shape of nginx mail's
 * auth_http (so that services written for nginx serve here too): a GET with the login in
 * request headers (Auth-Method, Auth-User, Auth-Pass only with --lookup-send-password,
 * Auth-Protocol, Auth-Login-Attempt, Client-IP); the answer is in the response headers:
 * `Auth-Status: OK` with `Auth-Profile` (a profile of the config file) and/or a rewritten
 * `Auth-User`, or any other Auth-Status text as a refusal, with `Auth-Wait` seconds before the
 * client hears it. As nginx does, the user name and password are percent-encoded in the request
 * (headers carry no bytes beyond ASCII), and a rewritten Auth-User is decoded.
 *
 * OK answers are kept for a short while per (user, protocol), never with a password: a busy
 * poller asks once in --lookup-cache seconds. Refusals are never kept, so a fixed account works
 * at its next login.
 */
import type { Logger } from 'winston';
import type { LookupConfig } from '../config/lookup-flags.js';
import { routeOf, type Routing } from '../config/profiles.js';
import type { ClientInfo } from '../maildrop/maildrop.js';
import type { FetchFunction } from '../net/outbound-http.js';
import { RouteRefused, RouteUnavailable, type LoginQuestion, type LoginRoutes, type Route } from './login-routes.js';

/** Longest Auth-Wait honoured: a session must not hang on a lookup's whim. */
const MAX_WAIT_MS = 60_000;
/** Kept answers at most; the oldest go first. */
const MAX_KEPT = 10_000;

interface Kept {
  readonly route: Route;
  readonly until: number;
}

export class LookupRoutes implements LoginRoutes {
  private readonly kept = new Map<string, Kept>();
  /** Logins tried on each connection so far (Auth-Login-Attempt); gone with the connection. */
  private readonly attempts = new WeakMap<ClientInfo, number>();

  constructor(
    private readonly config: LookupConfig,
    private readonly routing: Routing,
    private readonly fetch: FetchFunction,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  async route(question: LoginQuestion): Promise<Route> {
    const attempt = (this.attempts.get(question.client) ?? 0) + 1;
    this.attempts.set(question.client, attempt);
    const key = `${question.protocol}\n${question.user.toLowerCase()}`;
    const kept = this.kept.get(key);
    if (kept !== undefined && this.now() < kept.until) return kept.route;
    this.kept.delete(key);
    const route = await this.ask(question, attempt);
    if (this.config.cacheMs > 0) {
      if (this.kept.size >= MAX_KEPT) this.kept.delete(this.kept.keys().next().value!);
      this.kept.set(key, { route, until: this.now() + this.config.cacheMs });
    }
    return route;
  }

  private async ask(question: LoginQuestion, attempt: number): Promise<Route> {
    const headers: Record<string, string> = {
      'Auth-Method': 'plain',
      'Auth-User': escape(question.user),
      'Auth-Protocol': question.protocol,
      'Auth-Login-Attempt': String(attempt),
      'Client-IP': question.client.address,
    };
    if (this.config.sendPassword && question.password !== undefined) headers['Auth-Pass'] = escape(question.password);
    let response: Response;
    try {
      const signal = AbortSignal.timeout(this.config.timeoutMs);
      response = await this.fetch(this.config.url, { method: 'GET', headers, signal });
      // The answer is in the headers; a body is read and dropped so the connection can be kept.
      await response.arrayBuffer();
    } catch (err) {
      const timedOut = (err as Error).name === 'TimeoutError';
      const why = timedOut ? `no answer within ${this.config.timeoutMs / 1000} s` : describe(err);
      throw new RouteUnavailable(`the routing lookup failed: ${why}`, { cause: err });
    }
    const status = response.headers.get('auth-status');
    if (status === null) {
      throw new RouteUnavailable(`the routing lookup answered HTTP ${response.status} without Auth-Status`);
    }
    if (status.trim().toUpperCase() !== 'OK') {
      const said = status.trim().slice(0, 200);
      const wait = waitOf(response.headers.get('auth-wait'));
      throw new RouteRefused(`the routing lookup refused the login: ${said}`, wait);
    }
    const profile = response.headers.get('auth-profile')?.trim() || undefined;
    if (profile !== undefined && !this.routing.profiles.has(profile)) {
      const named = profile.slice(0, 100);
      this.logger.warn(`The routing lookup named profile "${named}", which the config file does not have`);
      throw new RouteUnavailable(`the routing lookup named an unknown profile "${profile.slice(0, 100)}"`);
    }
    const rewritten = response.headers.get('auth-user')?.trim() || undefined;
    const user = rewritten === undefined ? question.user : unescape(rewritten);
    if (profile === undefined && rewritten === undefined) {
      throw new RouteUnavailable('the routing lookup said OK but named neither Auth-Profile nor Auth-User');
    }
    // Without Auth-Profile the static routes pick the profile, for the (rewritten) name.
    return { profile: profile ?? routeOf(this.routing, user), user };
  }
}

/** Auth-Wait in seconds (nginx: whole seconds; fractions are taken too), at most a minute. */
function waitOf(value: string | null): number {
  if (value === null) return 0;
  const seconds = Number(value.trim());
  if (!Number.isFinite(seconds) || seconds <= 0) return 0;
  return Math.min(MAX_WAIT_MS, Math.round(seconds * 1000));
}

/** nginx's escaping of Auth-User and Auth-Pass: "%", space, controls and non-ASCII as %XX. */
function escape(value: string): string {
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    const plain = byte > 0x20 && byte < 0x7f && byte !== 0x25;
    out += plain ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

function unescape(value: string): string {
  if (!value.includes('%')) return value;
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

function describe(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (err as Error).message;
}
