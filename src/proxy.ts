/**
 * Wires the parts together: the POP3 server in front, the IMAP backend behind, the lock
 * registry between them, and the metrics endpoint beside them.
 */
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'winston';
import type { ProxyConfig } from './config/options.js';
import { LocalUsers } from './auth/local-users.js';
import { probeImap } from './imap/probe.js';
import type { LockRegistry } from './lock/lock-registry.js';
import { MemoryLockRegistry } from './lock/memory-lock-registry.js';
import { RedisLockRegistry } from './lock/redis-lock-registry.js';
import { AuthThrottle } from './limits/auth-throttle.js';
import { ConnectionLimiter } from './limits/connection-limiter.js';
import { LoginDelay } from './limits/login-delay.js';
import { startMetricsEndpoint } from './metrics/http-endpoint.js';
import { ProxyMetrics } from './metrics/metrics.js';
import { Pop3Server } from './pop3/server.js';
import { profileBackend, type SharedBackendOptions } from './routing/backends.js';
import { ProfileRouter } from './routing/profile-router.js';
import { TlsCredentials } from './tls/tls-credentials.js';

export const IMPLEMENTATION = 'pop3-imap-proxy';

/** FETCH window when streaming a message: large enough for few round trips, small enough to stream. */
const DOWNLOAD_CHUNK = 1024 * 1024;

/** Longest wait for Redis (shared locks) on one command. */
const REDIS_TIMEOUT_MS = 5000;

/** How long /readyz waits for the backend's greeting. */
const READY_PROBE_TIMEOUT_MS = 5000;

/** UIDs and sizes kept between sessions, over all mailboxes: 12 octets each, about 24 MB in all. */
const SNAPSHOT_CACHE_MESSAGES = 2_000_000;

/** The running proxy: its POP3 listeners and, when configured, its metrics endpoint. */
export class Pop3ImapProxy {
  private endpoint: http.Server | undefined;

  constructor(
    private readonly config: ProxyConfig,
    private readonly logger: Logger,
    readonly pop3: Pop3Server,
    readonly metrics: ProxyMetrics,
    private readonly locks: LockRegistry,
    private readonly ready: () => Promise<void>,
    private readonly users: LocalUsers | undefined,
  ) {}

  /** Starts listening; resolves to the plain POP3 listener's address. */
  async listen(): Promise<AddressInfo> {
    const address = await this.pop3.listen();
    if (this.config.metrics) {
      this.endpoint = await startMetricsEndpoint({ ...this.config.metrics, metrics: this.metrics, ready: this.ready, logger: this.logger });
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
    return this.pop3.activeSessions;
  }

  /** SIGHUP: the TLS certificate and the users file are read again; sessions go on. */
  reload(): void {
    this.pop3.reloadTls();
    if (!this.users) return;
    try {
      this.users.reload();
      this.logger.info(`Users file reloaded: ${this.users.size} users`);
    } catch (err) {
      this.logger.error(`Users file not reloaded, keeping the users in force: ${(err as Error).message}`);
    }
  }

  /** See Pop3Server.close(); the metrics endpoint stays up until the sessions are over. */
  async close(graceMs = 0): Promise<void> {
    await this.pop3.close(graceMs);
    await this.locks.close?.();
    const endpoint = this.endpoint;
    if (endpoint) await new Promise<void>((resolve) => endpoint.close(() => resolve()));
  }
}

export function createProxy(config: ProxyConfig, logger: Logger, locks: LockRegistry = lockRegistry(config, logger)): Pop3ImapProxy {
  const metrics = new ProxyMetrics();
  const shared: SharedBackendOptions = {
    timeoutMs: config.backendTimeoutMs,
    connectTimeoutMs: config.backendConnectTimeoutMs,
    chunkSize: DOWNLOAD_CHUNK,
    cacheMessages: SNAPSHOT_CACHE_MESSAGES,
    maxMessages: config.policy.maxMessages,
    markSeen: config.policy.markSeen,
    onStep: (step, seconds) => metrics.backendStep(step, seconds),
  };
  const users = config.usersFile === undefined ? undefined : new LocalUsers(config.usersFile);
  const backends = new Map([...config.routing.profiles].map(([name, profile]) => [name, profileBackend(name, profile, shared, users, logger)] as const));
  const provider = new ProfileRouter(config.routing, backends, logger);
  const backend = { ...config.imap, timeoutMs: config.backendTimeoutMs, connectTimeoutMs: config.backendConnectTimeoutMs };
  const tls = config.tls && new TlsCredentials(config.tls.certFile, config.tls.keyFile);
  const throttle = new AuthThrottle(config.limits.authFailDelayMs);
  const loginDelay = config.policy.loginDelayS === undefined ? undefined : new LoginDelay(config.policy.loginDelayS * 1000);
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
      limiter: new ConnectionLimiter(config.limits),
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
        authFailed: (address) => throttle.failed(address),
        greeting: config.policy.greeting,
        loginDelayS: config.policy.loginDelayS,
        loginWait: (mailbox) => loginDelay?.wait(mailbox) ?? 0,
        loggedIn: (mailbox) => loginDelay?.loggedIn(mailbox),
        expire: config.policy.expire,
      },
      events: metrics,
    },
  );
  return new Pop3ImapProxy(config, logger, pop3, metrics, locks, () => probeImap(backend, READY_PROBE_TIMEOUT_MS), users);
}

function lockRegistry(config: ProxyConfig, logger: Logger): LockRegistry {
  if (!config.lockRedis) return new MemoryLockRegistry();
  return new RedisLockRegistry({ ...config.lockRedis, timeoutMs: REDIS_TIMEOUT_MS }, logger);
}
