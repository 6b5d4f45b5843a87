/**
 * Wires the parts together: the POP3 server in front, the IMAP backend behind, the lock
 * registry between them, and the metrics endpoint beside them.
 */
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import type { Logger } from 'winston';
import type { ProxyConfig } from './config/options.js';
import { LocalUsers } from './auth/local-users.js';
import { BackendPool } from './imap/backend-pool.js';
import { reportFastPaths } from './imap/fast-paths.js';
import { probeImap } from './imap/probe.js';
import type { LockRegistry } from './lock/lock-registry.js';
import { MemoryLockRegistry } from './lock/memory-lock-registry.js';
import { RedisLockRegistry } from './lock/redis-lock-registry.js';
import { ConnectionLimiter } from './limits/connection-limiter.js';
import { LoginChecks } from './limits/login-checks.js';
import { startMetricsEndpoint } from './metrics/http-endpoint.js';
import { ProxyMetrics } from './metrics/metrics.js';
import { TokenMetrics } from './metrics/token-metrics.js';
import { outboundHttp, type OutboundHttp } from './net/outbound-http.js';
import type { ClientInfo } from './maildrop/maildrop.js';
import { isLoopback } from './net/address.js';
import { Pop3Server } from './pop3/server.js';
import { profileBackend, type SharedBackendOptions } from './routing/backends.js';
import { profileAccess } from './routing/profile-access.js';
import { SubmissionServer } from './smtp/submission-server.js';
import { Submitters } from './smtp/submitters.js';
import { ProfileRouter } from './routing/profile-router.js';
import { StaticRoutes, type LoginRoutes } from './routing/login-routes.js';
import { LookupRoutes } from './routing/lookup.js';
import { RedisExpiringStore } from './shared/expiring-store.js';
import { RedisListings } from './shared/listing-store.js';
import { RedisLink } from './shared/redis-link.js';
import { TlsCredentials } from './tls/tls-credentials.js';

export const IMPLEMENTATION = 'pop3-imap-proxy';

/** FETCH window when streaming a message: large enough for few round trips, small enough to stream. */
const DOWNLOAD_CHUNK = 1024 * 1024;

/** Longest wait for Redis (shared locks) on one command. */
const REDIS_TIMEOUT_MS = 5000;

/** Longest wait for Redis on a login's throttle or LOGIN-DELAY check; past it the process's own record answers. */
const SHARED_CHECK_TIMEOUT_MS = 1000;

/** How long /readyz waits for the backend's greeting. */
const READY_PROBE_TIMEOUT_MS = 5000;

/** UIDs and sizes kept between sessions, over all mailboxes: 12 octets each, about 24 MB in all. */
const SNAPSHOT_CACHE_MESSAGES = 2_000_000;

/**
 * The kept listings the replicas share in Redis (--redis): each lives 7 days from its last use,
 * and all of them together take at most 256 MiB of Redis (about 3 octets a message: some 80
 * million messages), the least recently used going first. A login waits at most 200 ms for one.
 */
const SHARED_LISTING_TTL_MS = 7 * 24 * 3600 * 1000;
const SHARED_LISTINGS_MAX_BYTES = 256 * 1024 * 1024;
const SHARED_LISTING_DEADLINE_MS = 200;

/**
 * Kept backend connections (--backend-reuse): per mailbox, two (one session per mailbox at a
 * time; a second for a session that ended while another started); in all, enough for a busy
 * minute of a large site, well under what a Dovecot or an Exchange tenant allows.
 */
const POOL_PER_MAILBOX = 2;
const POOL_TOTAL = 1000;

/** The running proxy: its POP3 listeners and, when configured, its metrics endpoint. */
export class Pop3ImapProxy {
  /** Kept backend connections (--backend-reuse), closed with the proxy. */
  backendPool: BackendPool | undefined;
  /** The agent of the proxy's own HTTP requests (tokens, lookups), closed with the proxy. */
  outbound: OutboundHttp | undefined;
  /** How logins are routed: the config file's routes, or the lookup service. */
  routes: LoginRoutes | undefined;
  private endpoint: http.Server | undefined;

  constructor(
    private readonly config: ProxyConfig,
    private readonly logger: Logger,
    readonly pop3: Pop3Server,
    readonly metrics: ProxyMetrics,
    private readonly locks: LockRegistry,
    private readonly ready: () => Promise<void>,
    private readonly users: LocalUsers | undefined,
    /** The connection to the state replicas share, when there is one. */
    private readonly redis?: RedisLink,
    /** SMTP submission, when a port for it is configured. */
    readonly smtp?: SubmissionServer,
  ) {}

  /** Starts listening; resolves to the plain POP3 listener's address. */
  async listen(): Promise<AddressInfo> {
    const address = await this.pop3.listen();
    await this.smtp?.listen();
    if (this.config.metrics) {
      const redis = this.redis;
      this.endpoint = await startMetricsEndpoint({
        ...this.config.metrics,
        metrics: this.metrics,
        ready: this.ready,
        redisReady: redis && (() => redis.ready()),
        logger: this.logger,
      });
    }
    return address;
  }

  get tlsAddress(): AddressInfo | undefined {
    return this.pop3.tlsAddress;
  }

  get metricsAddress(): AddressInfo | undefined {
    return (this.endpoint?.address() as AddressInfo | null) ?? undefined;
  }

  get activeSessions(): number {
    return this.pop3.activeSessions + (this.smtp?.activeSessions ?? 0);
  }

  /** SIGHUP: the TLS certificate and the users file are read again; sessions go on. */
  reload(): void {
    this.pop3.reloadTls();
    this.smtp?.reloadTls();
    if (!this.users) return;
    try {
      this.users.reload();
      this.logger.info(`Users file reloaded: ${this.users.size} users`);
      for (const warning of this.users.warnings) this.logger.warn(warning);
    } catch (err) {
      this.logger.error(`Users file not reloaded, keeping the users in force: ${(err as Error).message}`);
    }
  }

  /** See Pop3Server.close(); the metrics endpoint stays up until the sessions are over. */
  async close(graceMs = 0): Promise<void> {
    await Promise.all([this.pop3.close(graceMs), this.smtp?.close(graceMs)]);
    this.backendPool?.close();
    await this.outbound?.close().catch(() => undefined);
    await this.locks.close?.();
    await this.redis?.close();
    const endpoint = this.endpoint;
    if (endpoint) await new Promise<void>((resolve) => endpoint.close(() => resolve()));
  }
}

export function createProxy(config: ProxyConfig, logger: Logger, givenLocks?: LockRegistry): Pop3ImapProxy {
  const metrics = new ProxyMetrics();
  reportFastPaths(logger, (hook, on) => metrics.fastPath(hook, on));
  const redis =
    config.redis &&
    new RedisLink({ url: config.redis.url, commandTimeoutMs: REDIS_TIMEOUT_MS }, logger, (up) => metrics.redisUp(up));
  const locks =
    givenLocks ??
    (config.redis && redis
      ? new RedisLockRegistry(redis, { ttlMs: config.redis.lockTtlMs }, logger)
      : new MemoryLockRegistry());
  const checks = new LoginChecks({
    authFailDelayMs: config.limits.authFailDelayMs,
    loginDelayMs: config.policy.loginDelayS === undefined ? undefined : config.policy.loginDelayS * 1000,
    shared: redis && {
      failures: new RedisExpiringStore(redis, 'auth-failures', SHARED_CHECK_TIMEOUT_MS),
      logins: new RedisExpiringStore(redis, 'login', SHARED_CHECK_TIMEOUT_MS),
    },
    onFallback: (check) => metrics.redisFallback(check),
  });
  const shared: SharedBackendOptions = {
    timeoutMs: config.backendTimeoutMs,
    connectTimeoutMs: config.backendConnectTimeoutMs,
    chunkSize: DOWNLOAD_CHUNK,
    cacheMessages: SNAPSHOT_CACHE_MESSAGES,
    maxMessages: config.policy.maxMessages,
    markSeen: config.policy.markSeen,
    listing: config.policy.listing,
    onStep: (step, seconds) => metrics.backendStep(step, seconds),
    pool: new BackendPool({
      reuseMs: config.backendReuseMs ?? 0,
      maxPerMailbox: POOL_PER_MAILBOX,
      maxTotal: POOL_TOTAL,
      events: metrics.poolEvents,
    }),
    listings:
      redis &&
      new RedisListings(redis, {
        maxMessages: SNAPSHOT_CACHE_MESSAGES,
        ttlMs: SHARED_LISTING_TTL_MS,
        maxBytes: SHARED_LISTINGS_MAX_BYTES,
        readDeadlineMs: SHARED_LISTING_DEADLINE_MS,
      }),
  };
  const users = config.usersFile === undefined ? undefined : new LocalUsers(config.usersFile);
  for (const warning of users?.warnings ?? []) logger.warn(warning);
  const outbound = outboundHttp(config.httpProxy);
  const events = new TokenMetrics(metrics.registry);
  const tokenContext = { fetch: outbound.fetch, events, logger, configFile: config.configFile };
  const profiles = [...config.routing.profiles];
  const access = new Map(profiles.map(([name, p]) => [name, profileAccess(name, p, users, tokenContext)] as const));
  const routes: LoginRoutes = config.lookup
    ? new LookupRoutes(config.lookup, config.routing, outbound.fetch, logger)
    : new StaticRoutes(config.routing);
  const backends = new Map(
    [...config.routing.profiles].map(
      ([name, profile]) => [name, profileBackend(name, profile, shared, access.get(name)!, logger)] as const,
    ),
  );
  const provider = new ProfileRouter(routes, backends, logger);
  const backend = {
    ...config.imap,
    timeoutMs: config.backendTimeoutMs,
    connectTimeoutMs: config.backendConnectTimeoutMs,
  };
  const tls = config.tls && new TlsCredentials(config.tls.certFile, config.tls.keyFile);
  // One count for both front doors: the limits are the machine's, whatever the protocol.
  const limiter = new ConnectionLimiter(config.limits);
  const pop3 = new Pop3Server(
    {
      host: config.listen.host,
      port: config.listen.port,
      limits: {
        maxLineLength: 512,
        maxOverlongLines: 3,
        idleTimeoutMs: config.idleTimeoutMs,
        authTimeoutMs: config.limits.authTimeoutMs,
      },
      limiter,
      tls,
      tlsPort: config.tls?.port,
      proxyProtocol: config.proxyProtocol,
    },
    {
      provider,
      locks,
      logger,
      implementation: IMPLEMENTATION,
      policy: {
        tlsAvailable: tls !== undefined,
        allowPlaintextAuth: config.allowPlaintextAuth,
        maxAuthFailures: config.limits.maxAuthFailures,
        maxErrors: config.limits.maxErrors,
        authFailed: (address) => checks.authFailed(address),
        greeting: config.policy.greeting,
        loginDelayS: config.policy.loginDelayS,
        loginWait: (mailbox) => checks.loginWait(mailbox),
        loggedIn: (mailbox) => checks.loggedIn(mailbox),
        expire: config.policy.expire,
        folderSeparator: config.policy.folderSeparator,
      },
      events: metrics,
    },
  );
  const submitters = new Submitters(config.routing, access, routes);
  const smtp = config.smtp && submissionServer(config, logger, metrics, checks, submitters, tls, limiter);
  const ready = () => probeImap(backend, READY_PROBE_TIMEOUT_MS);
  const proxy = new Pop3ImapProxy(config, logger, pop3, metrics, locks, ready, users, redis, smtp);
  proxy.backendPool = shared.pool;
  proxy.outbound = outbound;
  proxy.routes = routes;
  return proxy;
}

/** The SMTP front door, under the same limits, throttle and plaintext rule as POP3. */
function submissionServer(
  config: ProxyConfig,
  logger: Logger,
  metrics: ProxyMetrics,
  checks: LoginChecks,
  submitters: Submitters,
  tls: TlsCredentials | undefined,
  limiter: ConnectionLimiter,
): SubmissionServer {
  const smtp = config.smtp!;
  const tlsAvailable = tls !== undefined;
  const policy = {
    plaintextAuthRefused: (client: ClientInfo, secure: boolean) =>
      tlsAvailable && !config.allowPlaintextAuth && !secure && !isLoopback(client.address),
    maxAuthFailures: config.limits.maxAuthFailures,
    authFailed: (address: string) => checks.authFailed(address),
    maxSize: smtp.maxSize,
  };
  const relayOptions = {
    timeoutMs: config.backendTimeoutMs,
    connectTimeoutMs: config.backendConnectTimeoutMs,
    clientName: hostname(),
  };
  return new SubmissionServer(
    {
      host: config.listen.host,
      port: smtp.port,
      tlsPort: smtp.tlsPort,
      tls,
      proxyProtocol: config.proxyProtocol,
      limiter,
      idleTimeoutMs: config.idleTimeoutMs,
      handshakeTimeoutMs: config.limits.authTimeoutMs,
      name: hostname(),
      connectionRefused: (limit) => metrics.connectionRefused(limit),
      sessions: (delta) => metrics.smtpSession(delta),
    },
    { submitters, policy, relayOptions, events: metrics.submissionEvents, logger },
  );
}
