/**
 * Runs the proxy in this process in front of a test Dovecot, on a free loopback port, with its
 * log captured so tests can read it.
 */
import { Writable } from 'node:stream';
import type { AbuseLimits, MailboxPolicy, ProxyConfig } from '../../src/config/options.js';
import { parseRouting, type BackendEndpoint, type ProfileSettings } from '../../src/config/profiles.js';
import type { ImapTlsMode } from '../../src/imap/imap-client.js';
import type { RelayEndpoint } from '../../src/smtp/relay-client.js';
import type { LookupConfig } from '../../src/config/lookup-flags.js';
import type { LockRegistry } from '../../src/lock/lock-registry.js';
import { createLogger, type LogFormat, type LogLevel } from '../../src/logging/logger.js';
import { createProxy, type Pop3ImapProxy } from '../../src/proxy.js';
import { RawPop3 } from './pop3-client.js';

export interface TestProxy {
  readonly port: number;
  /** The implicit-TLS port, when `tls.implicit` was asked for. */
  readonly tlsPort: number | undefined;
  /** The SMTP submission port (plain or implicit TLS), when `smtp` was asked for. */
  readonly smtpPort: number | undefined;
  readonly server: Pop3ImapProxy;
  /** Every log line so far. */
  log(): string;
  close(): Promise<void>;
}

export interface TestProxyOptions {
  imapPort: number;
  imapHost?: string;
  idleTimeoutMs?: number;
  backendTimeoutMs?: number;
  backendConnectTimeoutMs?: number;
  /** --backend-reuse in ms; 0 (the default here) keeps no backend connection between sessions. */
  backendReuseMs?: number;
  uidlFormat?: string;
  mailbox?: string;
  logLevel?: LogLevel;
  logFormat?: LogFormat;
  locks?: LockRegistry;
  /** Client-side TLS: STLS on the plain port; `implicit` adds a TLS port. */
  tls?: { certFile: string; keyFile: string; implicit?: boolean };
  allowPlaintextAuth?: boolean;
  limits?: Partial<AbuseLimits>;
  /** Another listen address than 127.0.0.1 (to test clients that are not on loopback). */
  listenHost?: string;
  imapServername?: string;
  imapTls?: ImapTlsMode;
  imapCa?: Buffer;
  imapVerifyTls?: boolean;
  /** Serve /metrics, /healthz and /readyz on a free port (server.metricsAddress). */
  metrics?: boolean;
  /** The mailbox policy, and the default profile's delete mode and --flag-on-dele. */
  policy?: Partial<MailboxPolicy & Pick<ProfileSettings, 'deleteMode' | 'flagOnDele'>>;
  proxyProtocol?: boolean;
  /** Shared state (locks, failed-login throttle, LOGIN-DELAY) in this Redis; ttlMs is --lock-ttl. */
  lockRedis?: { url: string; ttlMs: number };
  /** Backend profiles and routes, as the config file writes them. */
  profiles?: Record<string, unknown>;
  routes?: Record<string, string>;
  usersFile?: string;
  /** SMTP submission on a free port, relaying to the default profile's `smtpRelay`. */
  smtp?: { maxSize?: number; implicitTls?: boolean };
  smtpRelay?: RelayEndpoint;
  /** Routing by lookup (--lookup-url and its companions). */
  lookup?: LookupConfig;
  /** --http-proxy. */
  httpProxy?: string;
  /** --config's path, as the log names it. */
  configFile?: string;
}

/** Generous limits, so that tests which are not about them never meet them. */
const TEST_LIMITS: AbuseLimits = {
  maxConnections: 1000,
  maxConnectionsPerIp: 1000,
  authTimeoutMs: 60_000,
  maxAuthFailures: 100,
  authFailDelayMs: 0,
  maxErrors: 1000,
};

export async function startProxy(options: TestProxyOptions): Promise<TestProxy> {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  const imap: BackendEndpoint = {
    host: options.imapHost ?? '127.0.0.1',
    port: options.imapPort,
    tls: options.imapTls ?? 'none',
    verifyTls: options.imapVerifyTls ?? true,
    ca: options.imapCa,
    mailbox: options.mailbox ?? 'INBOX',
    servername: options.imapServername,
  };
  const { deleteMode = { kind: 'expunge' }, flagOnDele = false, ...given } = options.policy ?? {};
  const policy: MailboxPolicy = {
    maxMessages: undefined,
    markSeen: false,
    listing: 'all',
    folderSeparator: undefined,
    greeting: 'POP3 server ready.',
    loginDelayS: undefined,
    expire: undefined,
    ...given,
  };
  const uidlFormat = options.uidlFormat ?? '%08Xu%08Xv';
  const defaults = { imap, deleteMode, flagOnDele, uidlFormat, auth: { grant: 'password' as const }, smtpRelay: options.smtpRelay, smtpScope: undefined };
  const config: ProxyConfig = {
    listen: { host: options.listenHost ?? '127.0.0.1', port: 0 },
    imap,
    tls: options.tls && { certFile: options.tls.certFile, keyFile: options.tls.keyFile, port: options.tls.implicit ? 0 : undefined },
    allowPlaintextAuth: options.allowPlaintextAuth ?? false,
    proxyProtocol: options.proxyProtocol ?? false,
    redis: options.lockRedis && { url: options.lockRedis.url, lockTtlMs: options.lockRedis.ttlMs },
    limits: { ...TEST_LIMITS, ...options.limits },
    policy,
    idleTimeoutMs: options.idleTimeoutMs ?? 600_000,
    shutdownGraceMs: 0,
    metrics: options.metrics ? { host: '127.0.0.1', port: 0 } : undefined,
    backendTimeoutMs: options.backendTimeoutMs ?? 30_000,
    backendConnectTimeoutMs: options.backendConnectTimeoutMs ?? 5000,
    backendReuseMs: options.backendReuseMs ?? 0,
    routing: parseRouting(options.profiles, options.routes, defaults, 'the test configuration'),
    usersFile: options.usersFile,
    log: { level: options.logLevel ?? 'debug', format: options.logFormat ?? 'text' },
    smtp: options.smtp && {
      port: options.smtp.implicitTls ? undefined : 0,
      tlsPort: options.smtp.implicitTls ? 0 : undefined,
      maxSize: options.smtp.maxSize ?? 35 * 1024 * 1024,
    },
    lookup: options.lookup,
    httpProxy: options.httpProxy,
    configFile: options.configFile,
  };
  const logger = createLogger({ ...config.log, stream: sink });
  const server = createProxy(config, logger, options.locks);
  const address = await server.listen();
  return {
    port: address.port,
    tlsPort: server.tlsAddress?.port,
    smtpPort: server.smtp?.addresses.plain?.port ?? server.smtp?.addresses.tls?.port,
    server,
    log: () => lines.join(''),
    close: () => server.close(),
  };
}

/**
 * Waits until the proxy's sessions are over and their cleanup has run: the connection may be
 * gone before the flags are restored and the lock released, so a login to the mailbox tells.
 */
export async function settled(proxy: TestProxy, user = 'alice', password = 'alice-secret'): Promise<void> {
  for (let i = 0; i < 200 && proxy.server.activeSessions > 0; i++) await new Promise((r) => setTimeout(r, 25));
  for (let i = 0; i < 200; i++) {
    const c = await RawPop3.connect(proxy.port);
    await c.command(`USER ${user}`);
    const reply = await c.command(`PASS ${password}`, 30_000);
    if (reply.startsWith('+OK')) {
      // QUIT releases the lock before it answers, so the next login finds it free.
      await c.command('QUIT');
      c.destroy();
      return;
    }
    c.destroy();
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('the mailbox lock was never released');
}
