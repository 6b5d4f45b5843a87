/**
 * Exclusive access to a maildrop (RFC 1939 section 4): one POP3 session per mailbox at a
 * time. Implementations may be local to this process or shared between proxy instances.
 */

/** Why a held lock is no longer ours. */
export type LockLossCause = 'expired' | 'taken';

export interface LockLease {
  /** Gives the mailbox back; safe to call more than once. Never touches a lock no longer ours. */
  release(): Promise<void>;
  /**
   * Aborted, with a LockLossCause as its reason, once the lock is no longer ours: a shared lock
   * that could not be renewed within its time to live, or that another session holds. The
   * session must then end without changing the mailbox (Dovecot ends a session whose lock
   * refresh fails). A lock of this process alone is never lost.
   */
  readonly lost: AbortSignal;
}

export interface LockRegistry {
  /**
   * Takes the lock for `key`, or resolves to undefined when another session holds it.
   * Rejects when the registry cannot tell (a shared registry that is unreachable).
   */
  acquire(key: string): Promise<LockLease | undefined>;
  /** Lets go of the registry's own resources at shutdown. */
  close?(): Promise<void>;
}
