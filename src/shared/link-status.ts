/**
 * Whether the shared state (Redis) answers, as the operator sees it: one log line when it goes
 * away, one when it is back, however many logins meet it in between, and a callback for the
 * metrics gauge. Pure: the clock is injectable.
 */
export type LinkState = 'connecting' | 'up' | 'down';

export interface LinkLog {
  info(message: string): void;
  warn(message: string): void;
}

/** What the replicas do while Redis is away (README: "When Redis goes away"). */
export const WHILE_DOWN =
  'logins are refused with [SYS/TEMP] (the mailbox locks cannot be taken), the failed-login throttle and ' +
  'LOGIN-DELAY count in this process alone and the kept mailbox listings come from this process or the backend ' +
  'until it is back';

export class LinkStatus {
  private current: LinkState = 'connecting';
  private since: number;
  private lastReason = 'not connected yet';

  constructor(
    /** Where Redis is, without credentials: for the log. */
    private readonly where: string,
    private readonly log: LinkLog,
    private readonly onChange: (up: boolean) => void = () => undefined,
    private readonly now: () => number = Date.now,
  ) {
    this.since = now();
  }

  get state(): LinkState {
    return this.current;
  }

  get isUp(): boolean {
    return this.current === 'up';
  }

  /** Why Redis is not up (the last error seen), for /readyz. */
  get reason(): string {
    return this.lastReason;
  }

  /** Redis answered (or the connection is ready). */
  up(): void {
    if (this.current === 'up') return;
    const was = this.current;
    this.current = 'up';
    this.onChange(true);
    if (was === 'down') {
      const seconds = Math.round((this.now() - this.since) / 100) / 10;
      this.log.info(
        `Redis at ${this.where} is reachable again after ${seconds} s: locks, the failed-login throttle, ` +
          'LOGIN-DELAY and the kept mailbox listings are shared again',
      );
    } else {
      this.log.info(
        `Shared state (locks, failed-login throttle, LOGIN-DELAY, kept mailbox listings) in Redis at ${this.where}`,
      );
    }
    this.since = this.now();
  }

  /** Redis could not be reached (a connection error, a closed connection, a command timeout). */
  down(reason: string): void {
    this.lastReason = reason;
    if (this.current === 'down') return;
    this.current = 'down';
    this.since = this.now();
    this.onChange(false);
    this.log.warn(`Redis at ${this.where} is unreachable (${reason}): ${WHILE_DOWN}`);
  }
}

/** A Redis URL as it may be logged: scheme, host, port and database, never a password. */
export function describeRedisUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}${parsed.pathname === '/' ? '' : parsed.pathname}`;
  } catch {
    return 'the configured URL';
  }
}
