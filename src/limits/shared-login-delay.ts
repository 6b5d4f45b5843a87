/**
 * LOGIN-DELAY shared by every replica: a login leaves a mark in Redis that lives as long as the
 * delay, so a client that lands on another replica too early is told to wait there as well.
 * Redis keeps the time (the mark's time to live), so the replicas' clocks need not agree. The
 * process keeps its own record too (a LoginDelay), which answers whenever Redis cannot.
 */
import type { ExpiringStore } from '../shared/expiring-store.js';
import type { LoginDelay } from './login-delay.js';

export class SharedLoginDelay {
  constructor(
    private readonly store: ExpiringStore,
    private readonly local: LoginDelay,
    private readonly delayMs: number,
    /** Told each time Redis could not answer and the process's record was used alone. */
    private readonly onFallback: () => void = () => undefined,
  ) {}

  /** Seconds until the mailbox may be logged in to again, on any replica; 0 when it may now. */
  async wait(mailbox: string): Promise<number> {
    const local = this.local.wait(mailbox);
    try {
      const ms = await this.store.remaining(mailbox);
      return Math.max(local, Math.ceil(ms / 1000));
    } catch {
      this.onFallback();
      return local;
    }
  }

  loggedIn(mailbox: string): void {
    this.local.loggedIn(mailbox);
    this.store.mark(mailbox, this.delayMs).catch(() => this.onFallback());
  }
}
