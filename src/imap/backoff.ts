/**
 * Mailboxes the server asked us to leave alone for a while. Exchange Online answers a client
 * it throttles with "Suggested Backoff Time: N milliseconds" and closes the connection; logging
 * in again at once only prolongs the throttling. So the mailbox is noted here until then, and
 * a login to it fails at once, without connecting, as a temporary failure.
 *
 * Pure bookkeeping with an injectable clock; bounded in entries and in how long one lasts.
 */
import { MaildropError } from '../maildrop/errors.js';

/** A server's suggestion is followed up to this long: a wrong or huge hint must not lock a user out for days. */
export const MAX_BACKOFF_MS = 10 * 60 * 1000;
/** Mailboxes remembered at once; past that, the one noted first goes. */
const MAX_ENTRIES = 10_000;

export class BackoffRegistry {
  /** Mailbox key -> the time (clock ms) before which no login is tried. In insertion order. */
  private readonly until = new Map<string, number>();

  constructor(
    private readonly now: () => number = Date.now,
    private readonly maxBackoffMs = MAX_BACKOFF_MS,
    private readonly maxEntries = MAX_ENTRIES,
  ) {}

  /** Notes that `key` should not be tried for `ms` (capped); a longer back-off already noted stays. */
  backOff(key: string, ms: number): void {
    if (!(ms > 0)) return;
    const until = this.now() + Math.min(ms, this.maxBackoffMs);
    const current = this.until.get(key);
    if (current !== undefined && current >= until) return;
    this.until.delete(key);
    this.until.set(key, until);
    if (this.until.size > this.maxEntries) this.prune();
  }

  /** Milliseconds left before `key` may be tried again; 0 when it may be now. */
  remaining(key: string): number {
    const until = this.until.get(key);
    if (until === undefined) return 0;
    const left = until - this.now();
    if (left > 0) return left;
    this.until.delete(key);
    return 0;
  }

  /** The time `key` may be tried again (clock ms), if it is backing off. */
  retryAt(key: string): number | undefined {
    return this.remaining(key) > 0 ? this.until.get(key) : undefined;
  }

  get size(): number {
    return this.until.size;
  }

  private prune(): void {
    const now = this.now();
    for (const [key, until] of this.until) if (until <= now) this.until.delete(key);
    for (const key of this.until.keys()) {
      if (this.until.size <= this.maxEntries) break;
      this.until.delete(key);
    }
  }
}

/** A login refused because its mailbox is backing off: kind 'temporary', with when to retry. */
export class BackoffError extends MaildropError {
  /** Epoch milliseconds from which a login may be tried again. */
  readonly retryAt: number;
  /** Milliseconds from when the error was made until then. */
  readonly retryAfterMs: number;

  constructor(retryAfterMs: number, now: number = Date.now()) {
    const retryAt = now + retryAfterMs;
    const until = `${new Date(retryAt).toISOString()} (in ${Math.ceil(retryAfterMs / 1000)} s)`;
    super('temporary', `the mail server throttled this mailbox; not trying again before ${until}`);
    this.name = 'BackoffError';
    this.retryAt = retryAt;
    this.retryAfterMs = retryAfterMs;
  }
}
