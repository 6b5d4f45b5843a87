/**
 * What the proxy counts, in Prometheus terms (prom-client). The protocol and backend code
 * report events through the small interfaces they define; this module turns them into series.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { LockLossCause } from '../lock/lock-registry.js';
import type {
  EvictionReason,
  LoginOutcome,
  PoolEvents,
  SessionEvents,
  SubmissionEvents,
  SubmissionLogin,
  SubmissionResult,
} from './events.js';

const PREFIX = 'pop3proxy_';

export class ProxyMetrics implements SessionEvents {
  readonly registry = new Registry();
  private readonly sessionsActive = new Gauge({
    name: `${PREFIX}sessions_active`,
    help: 'POP3 sessions open now',
    registers: [this.registry],
  });
  private readonly sessions = new Counter({
    name: `${PREFIX}sessions_total`,
    help: 'POP3 sessions ended, by how they ended',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  private readonly logins = new Counter({
    name: `${PREFIX}logins_total`,
    help: 'Login attempts by outcome: ok, auth (rejected credentials), in-use (mailbox locked), backend-error',
    labelNames: ['outcome'],
    registers: [this.registry],
  });
  private readonly commands = new Counter({
    name: `${PREFIX}commands_total`,
    help: 'POP3 commands received, by name',
    labelNames: ['command'],
    registers: [this.registry],
  });
  private readonly messages = new Counter({
    name: `${PREFIX}messages_retrieved_total`,
    help: 'Messages delivered whole by RETR',
    registers: [this.registry],
  });
  private readonly bytes = new Counter({
    name: `${PREFIX}bytes_retrieved_total`,
    help: 'Message octets delivered by RETR and TOP',
    registers: [this.registry],
  });
  private readonly deletes = new Counter({
    name: `${PREFIX}deletes_total`,
    help: 'Messages marked deleted by DELE',
    registers: [this.registry],
  });
  private readonly expunges = new Counter({
    name: `${PREFIX}expunged_total`,
    help: 'Messages removed from the store at QUIT',
    registers: [this.registry],
  });
  private readonly refused = new Counter({
    name: `${PREFIX}connections_refused_total`,
    help: 'Connections refused by the connection limits',
    labelNames: ['limit'],
    registers: [this.registry],
  });
  private readonly lockWait = new Histogram({
    name: `${PREFIX}lock_wait_seconds`,
    help: 'Time to take (or be refused) the mailbox lock',
    buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1],
    registers: [this.registry],
  });
  private readonly reuse = new Counter({
    name: `${PREFIX}backend_reuse_total`,
    help: 'Logins with --backend-reuse on: hit (a kept backend connection served it) or miss (a new connection)',
    labelNames: ['result'],
    registers: [this.registry],
  });
  private readonly reuseEvictions = new Counter({
    name: `${PREFIX}backend_reuse_evictions_total`,
    help:
      'Kept backend connections closed without being used again, by reason: expired, closed (by the ' +
      'server), capacity, replaced (another password), shutdown',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  /** For the pool of kept backend connections (--backend-reuse). */
  readonly poolEvents: PoolEvents = {
    hit: () => this.reuse.inc({ result: 'hit' }),
    miss: () => this.reuse.inc({ result: 'miss' }),
    evicted: (reason: EvictionReason) => this.reuseEvictions.inc({ reason }),
  };
  private readonly backend = new Histogram({
    name: `${PREFIX}backend_command_seconds`,
    help: 'Latency of backend (IMAP) steps, by step',
    labelNames: ['step'],
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });

  private readonly unexpected = new Counter({
    name: `${PREFIX}unexpected_errors_total`,
    help:
      'Errors that escaped all handling (each logged with its stack and ended only its session), by kind: ' +
      'exception, rejection',
    labelNames: ['kind'],
    registers: [this.registry],
  });
  private readonly locksLost = new Counter({
    name: `${PREFIX}locks_lost_total`,
    help:
      'Sessions ended because their shared mailbox lock was lost, by cause: expired (not renewed within ' +
      '--lock-ttl), taken (held by another session)',
    labelNames: ['cause'],
    registers: [this.registry],
  });
  private readonly fastPaths = new Gauge({
    name: `${PREFIX}fast_path`,
    help:
      "Whether a fast path into imapflow's internals is on (1) or switched off because the installed " +
      'imapflow does not fit it (0), by hook',
    labelNames: ['hook'],
    registers: [this.registry],
  });

  private readonly smtpActive = new Gauge({
    name: `${PREFIX}smtp_sessions_active`,
    help: 'SMTP submission sessions open now',
    registers: [this.registry],
  });
  private readonly smtpLogins = new Counter({
    name: `${PREFIX}smtp_logins_total`,
    help: 'SMTP submission logins by outcome: ok, auth (rejected credentials), backend-error (relay or token trouble)',
    labelNames: ['outcome'],
    registers: [this.registry],
  });
  private readonly smtpMessages = new Counter({
    name: `${PREFIX}smtp_messages_total`,
    help:
      'Messages submitted, by result: accepted (the relay said 250), refused (by the relay or the proxy), ' +
      'failed (the relay could not be reached), abandoned (the client or a shutdown cut it)',
    labelNames: ['result'],
    registers: [this.registry],
  });
  private readonly smtpBytes = new Counter({
    name: `${PREFIX}smtp_bytes_relayed_total`,
    help: 'Octets of messages the relay accepted',
    registers: [this.registry],
  });
  /** For the SMTP front door. */
  readonly submissionEvents: SubmissionEvents = {
    login: (outcome: SubmissionLogin) => this.smtpLogins.inc({ outcome }),
    message: (result: SubmissionResult, octets: number) => {
      this.smtpMessages.inc({ result });
      if (result === 'accepted') this.smtpBytes.inc(octets);
    },
  };

  private redis: { up: Gauge; fallbacks: Counter } | undefined;

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: PREFIX });
  }

  sessionStarted(): void {
    this.sessionsActive.inc();
  }

  sessionEnded(reason: string): void {
    this.sessionsActive.dec();
    this.sessions.inc({ reason });
  }

  login(outcome: LoginOutcome): void {
    this.logins.inc({ outcome });
  }

  command(name: string): void {
    this.commands.inc({ command: name });
  }

  retrieved(octets: number, whole: boolean): void {
    if (whole) this.messages.inc();
    this.bytes.inc(octets);
  }

  deleted(): void {
    this.deletes.inc();
  }

  expunged(count: number): void {
    this.expunges.inc(count);
  }

  lockWaited(seconds: number): void {
    this.lockWait.observe(seconds);
  }

  connectionRefused(limit: 'total' | 'per-ip'): void {
    this.refused.inc({ limit });
  }

  /** For the backend: one step's latency. */
  backendStep(step: string, seconds: number): void {
    this.backend.observe({ step }, seconds);
  }

  /** An SMTP submission session opened (1) or closed (-1). */
  smtpSession(delta: 1 | -1): void {
    this.smtpActive.inc(delta);
  }

  /** An error escaped all handling (see logging/unexpected-errors.ts). */
  unexpectedError(kind: 'exception' | 'rejection'): void {
    this.unexpected.inc({ kind });
  }

  /** A session ended because its shared lock was lost. */
  lockLost(cause: LockLossCause): void {
    this.locksLost.inc({ cause });
  }

  /** Whether each hook into imapflow's internals fits the installed imapflow. */
  fastPath(hook: string, on: boolean): void {
    this.fastPaths.set({ hook }, on ? 1 : 0);
  }

  /** With shared state (--redis): whether Redis answers. The series exist only then. */
  redisUp(up: boolean): void {
    this.redis ??= {
      up: new Gauge({
        name: `${PREFIX}redis_up`,
        help: 'Whether Redis (the state replicas share) answers: 1 yes, 0 no',
        registers: [this.registry],
      }),
      fallbacks: new Counter({
        name: `${PREFIX}redis_fallbacks_total`,
        help: 'Checks answered from this process alone because Redis could not answer, by check: throttle, login-delay',
        labelNames: ['check'],
        registers: [this.registry],
      }),
    };
    this.redis.up.set(up ? 1 : 0);
  }

  /** A check that Redis could not answer was answered from this process's own record. */
  redisFallback(check: 'throttle' | 'login-delay'): void {
    this.redis?.fallbacks.inc({ check });
  }
}
