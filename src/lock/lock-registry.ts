/**
 * Exclusive access to a maildrop (RFC 1939 section 4): one POP3 session per mailbox at a
 * time. Implementations may be local to this process or shared between proxy instances.
 */
export interface LockLease {
  /** Gives the mailbox back; safe to call more than once. */
  release(): Promise<void>;
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
