/**
 * Creating imapflow connections to the backend, with our timeouts and logging, and turning
 * imapflow's failures into MaildropError kinds.
 */
import { ImapFlow, type ImapFlowOptions } from 'imapflow';
import type { Logger } from 'winston';
import { MaildropError } from '../maildrop/errors.js';
import type { Credentials } from '../maildrop/maildrop.js';
import { classifyServerFailure, type ServerFailure } from './failure-texts.js';

export type ImapTlsMode = 'implicit' | 'starttls' | 'none';

export interface ImapSettings {
  readonly host: string;
  readonly port: number;
  readonly tls: ImapTlsMode;
  readonly verifyTls: boolean;
  readonly ca: Buffer | undefined;
  readonly mailbox: string;
  readonly servername: string | undefined;
  /** Longest wait for any one backend step (a login, a command). */
  readonly timeoutMs: number;
  /**
   * Longest wait for the TCP (and TLS) connection and the server's greeting: short, since a
   * server that does not even greet is down, unlike one slowly refusing a wrong password.
   */
  readonly connectTimeoutMs: number;
}

/** Who the backend connection is for: the client's address reaches the server in IMAP ID. */
export interface ClientAddress {
  readonly address: string;
  readonly port: number;
  readonly sessionId?: string;
}

export interface ConnectHooks {
  /** Cut imapflow's login to what is needed (see leanSession); off where imapflow does not fit it. */
  readonly loginDiet?: boolean;
  /**
   * The server throttled this connection and suggested staying away this long (Exchange
   * Online's "Suggested Backoff Time"), at login or at any later command.
   */
  readonly onThrottle?: (backoffMs: number) => void;
}

/** Connects and logs in; the returned client is authenticated and has an error listener. */
export async function connectImap(
  settings: ImapSettings,
  login: Credentials,
  client: ClientAddress,
  logger: Logger,
  hooks: ConnectHooks = {},
): Promise<ImapFlow> {
  let throttledMs: number | undefined;
  const onThrottle = (ms: number) => {
    throttledMs = ms;
    hooks.onThrottle?.(ms);
  };
  const owner: Owner = { cid: client.sessionId };
  const imap = new ImapFlow(clientOptions(settings, login, client, logger, onThrottle, owner));
  owners.set(imap, owner);
  // Without a listener, a socket error after login would crash the process.
  imap.on('error', (err: Error) => logger.debug(`IMAP connection error: ${err.message}`, ownerMeta(owner)));
  if (hooks.loginDiet === true) leanSession(imap, settings.mailbox);
  try {
    await withTimeout(imap.connect(), settings.connectTimeoutMs + settings.timeoutMs, 'IMAP login');
    if (hooks.loginDiet === true) knowMailbox(imap, settings.mailbox);
    return imap;
  } catch (err) {
    imap.close();
    // A hint imapflow did not log (a text it does not recognise as throttling) counts too.
    const backoffMs = serverFailureOf(err)?.backoffMs;
    if (backoffMs !== undefined && backoffMs !== throttledMs) hooks.onThrottle?.(backoffMs);
    throw classifyLoginError(err, throttledMs);
  }
}

/**
 * The session a connection now works for. Its socket's events run in the context of the session
 * that opened it (session-context.ts); a connection kept for reuse serves later sessions too,
 * so its lines name their owner explicitly.
 */
interface Owner {
  cid: string | undefined;
}

const owners = new WeakMap<ImapFlow, Owner>();

/** A kept connection now works for this session (its lines carry the session's id). */
export function adoptConnection(imap: ImapFlow, sessionId: string | undefined): void {
  const owner = owners.get(imap);
  if (owner !== undefined) owner.cid = sessionId;
}

const ownerMeta = (owner: Owner): Record<string, unknown> => (owner.cid === undefined ? {} : { cid: owner.cid });

/** The parts of imapflow's connection this module adjusts (not in its typings). */
interface ImapFlowInternals {
  run(command: string, ...args: unknown[]): Promise<unknown>;
  authenticate(): Promise<unknown>;
  capabilities: Map<string, unknown>;
  options: { auth?: { pass?: string; loginMethod?: string } };
  folders: Map<string, unknown>;
  namespace: { prefix: string; delimiter: string } | undefined;
  namespaces: unknown;
  usable: boolean;
}

/** Whether the installed imapflow has the internals the login diet replaces and reads (see fast-paths.ts). */
export function loginDietFits(client: object): boolean {
  const internals = client as Partial<ImapFlowInternals>;
  return (
    typeof internals.run === 'function' &&
    typeof internals.authenticate === 'function' &&
    internals.capabilities instanceof Map &&
    internals.folders instanceof Map &&
    typeof internals.options === 'object' &&
    internals.options !== null &&
    typeof internals.usable === 'boolean'
  );
}

/** Set on a connection whose NAMESPACE was not asked at login: see ensureNamespace(). */
const NAMESPACE_SKIPPED = Symbol('namespaceSkipped');

/**
 * The login command diet. imapflow's connect() runs, between the greeting and the first
 * command of ours: ID, AUTHENTICATE PLAIN (two round trips: it never uses SASL-IR for PLAIN),
 * ID again when the server said little, NAMESPACE, COMPRESS, ENABLE, and before SELECT a LIST
 * and an LSUB of the mailbox. Each is a round trip, which over a WAN is most of a session.
 * Kept: ID (with x-originating-ip, before login: that is what Dovecot honours) and the login.
 * Changed or cut:
 * - a password goes in LOGIN (one round trip) unless the server says LOGINDISABLED or the
 *   password is too long for LOGIN (fitsLogin);
 * - ID is sent once;
 * - NAMESPACE only matters to mailbox names other than INBOX (imapflow puts the personal
 *   prefix in front of them): skipped when the mailbox is INBOX; asked later by
 *   ensureNamespace() if another folder is needed (moving deleted mail at QUIT);
 * - the LIST before SELECT only fills imapflow's folder metadata, which SELECT does not need
 *   (knowMailbox() below).
 * The capabilities come from the greeting and the login response where the server sends them
 * (imapflow asks CAPABILITY only when it did not).
 */
function leanSession(imap: ImapFlow, mailbox: string): void {
  const internals = imap as unknown as ImapFlowInternals;
  const run = internals.run.bind(imap);
  let idAnswer: Promise<unknown> | undefined;
  const skipNamespace = mailbox.toUpperCase() === 'INBOX';
  internals.run = (command: string, ...args: unknown[]) => {
    if (!internals.usable) {
      if (command === 'ID') return (idAnswer ??= run(command, ...args));
      if (command === 'NAMESPACE' && skipNamespace) {
        (imap as unknown as Record<symbol, boolean>)[NAMESPACE_SKIPPED] = true;
        return Promise.resolve(undefined);
      }
    }
    return run(command, ...args);
  };
  const authenticate = internals.authenticate.bind(imap);
  internals.authenticate = () => {
    const auth = internals.options.auth;
    const loginAllowed = !internals.capabilities.has('LOGINDISABLED');
    if (auth?.pass !== undefined && !auth.loginMethod && loginAllowed && fitsLogin(auth.pass)) {
      auth.loginMethod = 'LOGIN';
    }
    return authenticate();
  };
}

/**
 * Whether a password can go in LOGIN: Dovecot's login process drops the connection when a
 * LOGIN argument is longer than 1024 octets, where AUTHENTICATE PLAIN takes it.
 */
function fitsLogin(password: string): boolean {
  return Buffer.byteLength(password) <= MAX_LOGIN_ARGUMENT;
}

const MAX_LOGIN_ARGUMENT = 1024;

/** Runs the NAMESPACE that the login skipped, before anything names another folder. */
export async function ensureNamespace(imap: ImapFlow): Promise<void> {
  const flags = imap as unknown as Record<symbol, boolean>;
  if (!flags[NAMESPACE_SKIPPED]) return;
  flags[NAMESPACE_SKIPPED] = false;
  await (imap as unknown as ImapFlowInternals).run('NAMESPACE');
}

/**
 * Tells imapflow the mailbox exists, so that SELECT goes out without the LIST and LSUB it
 * would send first to learn the folder's metadata (a SELECT of a missing folder still fails).
 */
function knowMailbox(imap: ImapFlow, mailbox: string): void {
  const internals = imap as unknown as ImapFlowInternals;
  const prefix = internals.namespace?.prefix ?? '';
  const path =
    mailbox.toUpperCase() === 'INBOX' ? 'INBOX' : prefix && !mailbox.startsWith(prefix) ? prefix + mailbox : mailbox;
  if (!internals.folders.has(path)) internals.folders.set(path, { path, flags: new Set(), listed: true });
}

/** Rejects when `promise` does not settle within `ms`. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    const late = () => new MaildropError('temporary', `${what} timed out after ${ms / 1000} s`, { fatal: true });
    timer = setTimeout(() => reject(late()), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function clientOptions(
  settings: ImapSettings,
  login: Credentials,
  client: ClientAddress,
  logger: Logger,
  onThrottle: (backoffMs: number) => void,
  owner: Owner,
): ImapFlowOptions {
  return {
    host: settings.host,
    port: settings.port,
    ...(settings.servername ? { servername: settings.servername } : {}),
    secure: settings.tls === 'implicit',
    // 'none' must never upgrade, 'starttls' must never fall back to plaintext.
    doSTARTTLS: settings.tls === 'starttls',
    tls: {
      rejectUnauthorized: settings.verifyTls,
      minVersion: 'TLSv1.2',
      ...(settings.ca ? { ca: settings.ca } : {}),
    },
    auth:
      'password' in login
        ? { user: login.user, pass: login.password }
        : { user: login.user, accessToken: login.accessToken },
    // Sent in IMAP ID before login (RFC 2971): a server that trusts this proxy (Dovecot's
    // login_trusted_networks) then logs, and rate-limits, the real client instead of us.
    clientInfo: {
      name: 'pop3-imap-proxy',
      'x-originating-ip': client.address,
      'x-originating-port': String(client.port),
      // Dovecot takes it as its own session id (from login_trusted_networks): one id in both logs.
      ...(client.sessionId === undefined ? {} : { 'x-session-id': client.sessionId }),
    },
    logger: imapLogger(logger, onThrottle, owner),
    disableAutoIdle: true,
    // A round trip each, for nothing a POP3 session uses: COMPRESS would also cost CPU on every
    // byte, and ENABLE (CONDSTORE, UTF8=ACCEPT, IMAP4rev2) is not needed for HIGHESTMODSEQ,
    // which CONDSTORE servers report at SELECT anyway (where one does not, the snapshot cache
    // asks for the \Deleted flags instead: slower, never wrong).
    disableCompression: true,
    disableAutoEnable: true,
    connectionTimeout: settings.connectTimeoutMs,
    greetingTimeout: settings.connectTimeoutMs,
    socketTimeout: Math.max(settings.timeoutMs, 5 * 60 * 1000),
  };
}

/**
 * imapflow's own log, at debug level. It masks credentials in the commands it logs.
 *
 * imapflow recognises Exchange's throttling answer ("Request is throttled. Suggested Backoff
 * Time: N milliseconds") and then waits before failing the command; when the server closes the
 * connection meanwhile, as Exchange does, the command fails as a lost connection and the hint
 * is gone. Its warning entry is the one place that always carries the hint, so it is watched.
 */
function imapLogger(
  logger: Logger,
  onThrottle: (backoffMs: number) => void,
  owner: Owner,
): NonNullable<ImapFlowOptions['logger']> {
  const forward = (entry: unknown) => {
    if (!logger.isDebugEnabled()) return;
    const { msg, ...rest } = (entry ?? {}) as { msg?: string } & Record<string, unknown>;
    logger.debug(`imap: ${msg ?? ''}`, { ...ownerMeta(owner), imap: scrub(rest) });
  };
  const warn = (entry: unknown) => {
    const e = (entry ?? {}) as { msg?: unknown; throttleDelay?: unknown };
    if (e.msg === 'Throttling detected' && typeof e.throttleDelay === 'number' && e.throttleDelay > 0) {
      const hint = `IMAP server throttled the connection; it suggests backing off ${e.throttleDelay} ms`;
      logger.warn(hint, ownerMeta(owner));
      onThrottle(e.throttleDelay);
    }
    forward(entry);
  };
  return {
    debug: forward,
    info: forward,
    warn,
    error: forward,
    // Lets imapflow skip serializing every response for a log line nobody reads. Its 'trace'
    // level (every FETCH response) is never wanted: it would drown the protocol trace.
    isLevelEnabled: (level: string) => level !== 'trace' && logger.isDebugEnabled(),
  } as NonNullable<ImapFlowOptions['logger']>;
}

/** Keeps only the fields worth reading from imapflow's entries (no raw payloads). */
function scrub(entry: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of ['cid', 'src', 'err', 'code', 'tag', 'command', 'host', 'port', 'secure']) {
    const value = entry[key];
    if (value === undefined) continue;
    out[key] = value instanceof Error ? value.message : value;
  }
  return out;
}

const TLS_CODE = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|ERR_SSL/;

/** The fields of imapflow's errors this module reads. */
export interface ImapError {
  authenticationFailed?: boolean;
  /** TLS could not be had: a failed handshake, or STARTTLS required and not offered. */
  tlsFailed?: boolean;
  /** The response code of a tagged NO/BAD, upper case, without brackets. */
  serverResponseCode?: string;
  /** The text of a tagged NO/BAD, without tag, status or code. */
  responseText?: string;
  /** 'NO', 'BAD' or 'BYE' when the server answered. */
  responseStatus?: string;
  /** The text of the server's BYE, on a NoConnection error. */
  reason?: string;
  /** With code ETHROTTLE: the backoff the server suggested, in ms. */
  throttleReset?: number;
  code?: string;
  message?: string;
}

/** What the server's own answer in this error means (its RFC 5530 code, or its text), if known. */
export function serverFailureOf(err: unknown): ServerFailure | undefined {
  const e = (err ?? {}) as ImapError;
  const text =
    typeof e.responseText === 'string' ? e.responseText : typeof e.reason === 'string' ? e.reason : undefined;
  const failure = classifyServerFailure(e.serverResponseCode, text);
  if (e.code === 'ETHROTTLE') {
    const backoffMs = typeof e.throttleReset === 'number' && e.throttleReset > 0 ? e.throttleReset : failure?.backoffMs;
    return { kind: 'temporary', reason: 'throttled', ...(backoffMs === undefined ? {} : { backoffMs }) };
  }
  return failure;
}

/**
 * A failed connect or login as a MaildropError. The server's RFC 5530 code decides first, then
 * the known texts of the big services (failure-texts.ts); only then imapflow's verdict, which
 * calls every NO or BAD to a login an authentication failure (an Exchange outage included).
 * `throttledMs`: the server throttled this connection (seen in imapflow's log, see imapLogger).
 */
export function classifyLoginError(err: unknown, throttledMs?: number): MaildropError {
  const failure = err instanceof MaildropError ? undefined : serverFailureOf(err);
  // Throttled, then cut off or timed out while imapflow waited: the throttling is the news.
  const temporary = !(err instanceof MaildropError) || err.kind === 'temporary';
  if (throttledMs !== undefined && failure?.kind !== 'credentials' && temporary) {
    const why = `backend throttled the login (suggested backoff ${throttledMs} ms)`;
    return new MaildropError('temporary', why, { cause: err });
  }
  if (err instanceof MaildropError) return err;
  const e = (err ?? {}) as ImapError;
  const message = e.message ?? String(err);
  if (failure !== undefined) {
    const why = failure.reason + (failure.backoffMs === undefined ? '' : `, suggested backoff ${failure.backoffMs} ms`);
    if (failure.kind === 'credentials') {
      return new MaildropError('credentials', `credentials rejected by the backend (${why})`, { cause: err });
    }
    if (failure.kind === 'permanent') {
      return new MaildropError('permanent', `backend refused login (${why})`, { cause: err });
    }
    return new MaildropError('temporary', `backend refused login for now (${why})`, { cause: err });
  }
  if (e.authenticationFailed) {
    return new MaildropError('credentials', 'credentials rejected by the backend', { cause: err });
  }
  if (e.tlsFailed || (e.code && TLS_CODE.test(e.code))) {
    return new MaildropError('permanent', `TLS with the backend failed: ${message}`, { cause: err });
  }
  return new MaildropError('temporary', `backend unreachable: ${message}`, { cause: err, fatal: true });
}
