/**
 * Creating imapflow connections to the backend, with our timeouts and logging, and turning
 * imapflow's failures into MaildropError kinds.
 */
import { ImapFlow, type ImapFlowOptions } from 'imapflow';
import type { Logger } from 'winston';
import { MaildropError } from '../maildrop/errors.js';
import type { Credentials } from '../maildrop/maildrop.js';

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
}

/** Connects and logs in; the returned client is authenticated and has an error listener. */
export async function connectImap(settings: ImapSettings, login: Credentials, client: ClientAddress, logger: Logger): Promise<ImapFlow> {
  const imap = new ImapFlow(clientOptions(settings, login, client, logger));
  // Without a listener, a socket error after login would crash the process.
  imap.on('error', (err: Error) => logger.debug(`IMAP connection error: ${err.message}`));
  try {
    await withTimeout(imap.connect(), settings.connectTimeoutMs + settings.timeoutMs, 'IMAP login');
    return imap;
  } catch (err) {
    imap.close();
    throw classifyLoginError(err);
  }
}

/** Rejects when `promise` does not settle within `ms`. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new MaildropError('temporary', `${what} timed out after ${ms / 1000} s`, { fatal: true })), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function clientOptions(settings: ImapSettings, login: Credentials, client: ClientAddress, logger: Logger): ImapFlowOptions {
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
    auth: 'password' in login ? { user: login.user, pass: login.password } : { user: login.user, accessToken: login.accessToken },
    // Sent in IMAP ID before login (RFC 2971): a server that trusts this proxy (Dovecot's
    // login_trusted_networks) then logs, and rate-limits, the real client instead of us.
    clientInfo: {
      name: 'pop3-imap-proxy',
      'x-originating-ip': client.address,
      'x-originating-port': String(client.port),
    },
    logger: imapLogger(logger),
    disableAutoIdle: true,
    connectionTimeout: settings.connectTimeoutMs,
    greetingTimeout: settings.connectTimeoutMs,
    socketTimeout: Math.max(settings.timeoutMs, 5 * 60 * 1000),
  };
}

/** imapflow's own log, at debug level. It masks credentials in the commands it logs. */
function imapLogger(logger: Logger): NonNullable<ImapFlowOptions['logger']> {
  const forward = (entry: unknown) => {
    if (!logger.isDebugEnabled()) return;
    const { msg, ...rest } = (entry ?? {}) as { msg?: string } & Record<string, unknown>;
    logger.debug(`imap: ${msg ?? ''}`, { imap: scrub(rest) });
  };
  return {
    debug: forward,
    info: forward,
    warn: forward,
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

const TEMPORARY_CODES = new Set(['UNAVAILABLE', 'SERVERBUG', 'LIMIT', 'INUSE']);
const PERMANENT_CODES = new Set(['PRIVACYREQUIRED', 'CONTACTADMIN']);
const TLS_CODE = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|ERR_SSL/;

interface ImapError {
  authenticationFailed?: boolean;
  /** TLS could not be had: a failed handshake, or STARTTLS required and not offered. */
  tlsFailed?: boolean;
  serverResponseCode?: string;
  code?: string;
  message?: string;
}

function classifyLoginError(err: unknown): MaildropError {
  if (err instanceof MaildropError) return err;
  const e = (err ?? {}) as ImapError;
  const message = e.message ?? String(err);
  const code = (e.serverResponseCode ?? '').toUpperCase();
  if (TEMPORARY_CODES.has(code)) return new MaildropError('temporary', `backend refused login for now (${code})`, { cause: err });
  if (PERMANENT_CODES.has(code)) return new MaildropError('permanent', `backend refused login (${code})`, { cause: err });
  if (e.authenticationFailed) return new MaildropError('credentials', 'credentials rejected by the backend', { cause: err });
  if (e.tlsFailed || (e.code && TLS_CODE.test(e.code))) return new MaildropError('permanent', `TLS with the backend failed: ${message}`, { cause: err });
  return new MaildropError('temporary', `backend unreachable: ${message}`, { cause: err, fatal: true });
}
