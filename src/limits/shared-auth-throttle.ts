/**
 * The failed-login throttle shared by every replica: the failures of an address are counted in
 * Redis, so a guesser spread over N replicas is slowed as one, not N times less. The process
 * keeps its own count too (an AuthThrottle), which answers whenever Redis cannot; the delay is
 * the larger of the two, so a Redis that restarted empty does not forgive what this process saw.
 */
import type { ExpiringStore } from '../shared/expiring-store.js';
import { AuthThrottle, failureDelay, FORGET_AFTER_MS } from './auth-throttle.js';

export interface NotedFailure {
  /** The delay this process's own record calls for. */
  readonly local: number;
  /** The delay the failures of every replica call for (the local one when Redis cannot say). */
  readonly shared: Promise<number>;
}

export class SharedAuthThrottle {
  constructor(
    private readonly store: ExpiringStore,
    private readonly local: AuthThrottle,
    private readonly maxDelayMs: number,
    /** Told each time Redis could not answer and the process's record was used alone. */
    private readonly onFallback: () => void = () => undefined,
  ) {}

  /** Notes a failed login from `address`, here at once and in Redis. */
  failed(address: string): NotedFailure {
    const local = this.local.failed(address);
    // Sliding like the local record: a failure counts while the last one is under 15 minutes old.
    const shared = this.store.increment(address, FORGET_AFTER_MS).then(
      (failures) => Math.max(local, failureDelay(failures, this.maxDelayMs)),
      () => {
        this.onFallback();
        return local;
      },
    );
    return { local, shared };
  }
}
