/**
 * What the proxy's parts report for counting: a POP3 session's events, an SMTP submission's,
 * the kept backend connections'. Defined here, below the parts that report them, so that the
 * metrics depend on no protocol and every protocol only on this contract.
 */
import type { LockLossCause } from '../lock/lock-registry.js';

export type LoginOutcome = 'ok' | 'auth' | 'in-use' | 'backend-error';

/** What happens in sessions, for whoever counts it (metrics). */
export interface SessionEvents {
  sessionStarted(): void;
  sessionEnded(reason: string): void;
  login(outcome: LoginOutcome): void;
  command(name: string): void;
  /** Message octets sent by RETR (whole) or TOP. */
  retrieved(octets: number, whole: boolean): void;
  deleted(): void;
  expunged(count: number): void;
  lockWaited(seconds: number): void;
  /** A session ended because its shared mailbox lock was lost. */
  lockLost(cause: LockLossCause): void;
  connectionRefused(limit: 'total' | 'per-ip'): void;
}

export type SubmissionLogin = 'ok' | 'auth' | 'backend-error';
export type SubmissionResult = 'accepted' | 'refused' | 'failed' | 'abandoned';

export interface SubmissionEvents {
  login(outcome: SubmissionLogin): void;
  message(result: SubmissionResult, octets: number): void;
}

export type EvictionReason = 'expired' | 'closed' | 'capacity' | 'replaced' | 'shutdown';

export interface PoolEvents {
  /** A login served by a kept connection. */
  hit(): void;
  /** A login that had to connect (nothing kept for these credentials). */
  miss(): void;
  /** A kept connection closed without being used again. */
  evicted(reason: EvictionReason): void;
}
