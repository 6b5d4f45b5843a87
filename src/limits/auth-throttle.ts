/**
 * Slows down password guessing per client address: each failed login from an address is
 * answered later than the one before (doubling up to a ceiling), and an address's record fades
 * after a quiet spell. It never refuses a login outright, and it only delays the failures of
 * the address that fails, so an attacker cannot lock a real user out by guessing from elsewhere.
 */
const FIRST_DELAY_MS = 250;
/** A failure older than this no longer counts. */
export const FORGET_AFTER_MS = 15 * 60 * 1000;
/** Addresses remembered at most; the oldest go first. */
const MAX_ADDRESSES = 100_000;

interface Record {
  failures: number;
  last: number;
}

export class AuthThrottle {
  private readonly records = new Map<string, Record>();

  constructor(
    private readonly maxDelayMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Notes a failed login; returns how long to wait before answering it. */
  failed(address: string): number {
    const now = this.now();
    const previous = this.records.get(address);
    const failures = previous && now - previous.last < FORGET_AFTER_MS ? previous.failures + 1 : 1;
    this.records.delete(address);
    this.records.set(address, { failures, last: now });
    if (this.records.size > MAX_ADDRESSES) this.records.delete(this.records.keys().next().value!);
    return failureDelay(failures, this.maxDelayMs);
  }
}

/** The delay before answering the n-th recent failure from an address: 0.25 s, doubling, at most maxDelayMs. */
export function failureDelay(failures: number, maxDelayMs: number): number {
  return Math.min(maxDelayMs, FIRST_DELAY_MS * 2 ** Math.min(Math.max(failures, 1) - 1, 20));
}
