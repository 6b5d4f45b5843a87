/**
 * The proxy's POP3 side with the memory store behind it instead of IMAP: SessionServices built
 * as src/proxy.ts builds them (the policy from LoginChecks, a MemoryLockRegistry, a logger
 * whose lines the test can read), for an in-memory session (memory-connection.ts) or for a
 * real Pop3Server on a loopback port (startMemoryProxy), which needs no other server.
 */
import { Writable } from 'node:stream';
import type { AbuseLimits } from '../../src/config/options.js';
import { ConnectionLimiter } from '../../src/limits/connection-limiter.js';
import { LoginChecks } from '../../src/limits/login-checks.js';
import type { LockLossCause, LockRegistry } from '../../src/lock/lock-registry.js';
import { MemoryLockRegistry } from '../../src/lock/memory-lock-registry.js';
import { createLogger, type LogLevel } from '../../src/logging/logger.js';
import { Pop3Server } from '../../src/pop3/server.js';
import type { LoginOutcome, SessionEvents, SessionServices } from '../../src/pop3/session-services.js';
import { MemoryStore } from './memory-maildrop.js';

/**
 * src/proxy.ts's IMPLEMENTATION, spelled out: importing proxy.ts would load the whole IMAP,
 * Redis and OAuth stack, which this tier is meant to do without.
 */
export const IMPLEMENTATION = 'pop3-imap-proxy';

/** Generous limits, as test/support/proxy.ts has them: tests not about a limit never meet it. */
export const MEMORY_TEST_LIMITS: AbuseLimits = {
  maxConnections: 1000,
  maxConnectionsPerIp: 1000,
  authTimeoutMs: 60_000,
  maxAuthFailures: 100,
  authFailDelayMs: 0,
  maxErrors: 1000,
};

/** Every session event, as the metrics would count it. */
export class RecordingEvents implements SessionEvents {
  started = 0;
  readonly ended: string[] = [];
  readonly logins: LoginOutcome[] = [];
  readonly commands: string[] = [];
  readonly retrievals: { octets: number; whole: boolean }[] = [];
  deletes = 0;
  readonly expunges: number[] = [];
  readonly lockWaits: number[] = [];
  readonly locksLost: LockLossCause[] = [];
  readonly refused: ('total' | 'per-ip')[] = [];

  sessionStarted(): void {
    this.started++;
  }
  sessionEnded(reason: string): void {
    this.ended.push(reason);
  }
  login(outcome: LoginOutcome): void {
    this.logins.push(outcome);
  }
  command(name: string): void {
    this.commands.push(name);
  }
  retrieved(octets: number, whole: boolean): void {
    this.retrievals.push({ octets, whole });
  }
  deleted(): void {
    this.deletes++;
  }
  expunged(count: number): void {
    this.expunges.push(count);
  }
  lockWaited(seconds: number): void {
    this.lockWaits.push(seconds);
  }
  lockLost(cause: LockLossCause): void {
    this.locksLost.push(cause);
  }
  connectionRefused(limit: 'total' | 'per-ip'): void {
    this.refused.push(limit);
  }
}

export interface MemoryServicesOptions {
  readonly store?: MemoryStore;
  readonly locks?: LockRegistry;
  /** As if a certificate were configured: STLS offered, plaintext refused off loopback. */
  readonly tlsAvailable?: boolean;
  readonly allowPlaintextAuth?: boolean;
  readonly limits?: Partial<AbuseLimits>;
  readonly greeting?: string;
  readonly loginDelayS?: number;
  readonly expire?: number | 'NEVER';
  readonly logLevel?: LogLevel;
}

export interface MemoryServices {
  readonly services: SessionServices;
  readonly store: MemoryStore;
  readonly locks: LockRegistry;
  readonly events: RecordingEvents;
  readonly limits: AbuseLimits;
  /** Every log line so far. */
  log(): string;
}

export function memoryServices(options: MemoryServicesOptions = {}): MemoryServices {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  const logger = createLogger({ level: options.logLevel ?? 'info', format: 'text', stream: sink });
  const limits = { ...MEMORY_TEST_LIMITS, ...options.limits };
  const checks = new LoginChecks({
    authFailDelayMs: limits.authFailDelayMs,
    loginDelayMs: options.loginDelayS === undefined ? undefined : options.loginDelayS * 1000,
  });
  const store = options.store ?? new MemoryStore();
  const locks = options.locks ?? new MemoryLockRegistry();
  const events = new RecordingEvents();
  const services: SessionServices = {
    provider: store,
    locks,
    logger,
    implementation: IMPLEMENTATION,
    policy: {
      tlsAvailable: options.tlsAvailable ?? false,
      allowPlaintextAuth: options.allowPlaintextAuth ?? false,
      maxAuthFailures: limits.maxAuthFailures,
      maxErrors: limits.maxErrors,
      authFailed: (address) => checks.authFailed(address),
      greeting: options.greeting ?? 'POP3 server ready.',
      loginDelayS: options.loginDelayS,
      loginWait: (mailbox) => checks.loginWait(mailbox),
      loggedIn: (mailbox) => checks.loggedIn(mailbox),
      expire: options.expire,
    },
    events,
  };
  return { services, store, locks, events, limits, log: () => lines.join('') };
}

export interface MemoryProxyOptions extends MemoryServicesOptions {
  readonly idleTimeoutMs?: number;
  readonly maxLineLength?: number;
  readonly maxOverlongLines?: number;
}

export interface MemoryProxy extends MemoryServices {
  readonly port: number;
  readonly server: Pop3Server;
  close(): Promise<void>;
}

/** A Pop3Server on a free 127.0.0.1 port, as createProxy() sets it up, over the memory store. */
export async function startMemoryProxy(options: MemoryProxyOptions = {}): Promise<MemoryProxy> {
  const built = memoryServices(options);
  const server = new Pop3Server(
    {
      host: '127.0.0.1',
      port: 0,
      limits: {
        maxLineLength: options.maxLineLength ?? 512,
        maxOverlongLines: options.maxOverlongLines ?? 3,
        idleTimeoutMs: options.idleTimeoutMs ?? 600_000,
        authTimeoutMs: built.limits.authTimeoutMs,
      },
      limiter: new ConnectionLimiter(built.limits),
      tls: undefined,
      tlsPort: undefined,
      proxyProtocol: false,
    },
    built.services,
  );
  const address = await server.listen();
  return { ...built, port: address.port, server, close: () => server.close() };
}

/** Waits until every session of the server has ended and been cleaned up (bounded). */
export async function allSessionsOver(proxy: MemoryProxy, timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (proxy.server.activeSessions > 0 || proxy.events.ended.length < proxy.events.started) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return true;
}
