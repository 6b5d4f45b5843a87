/**
 * LOGIN-DELAY (RFC 2449): the least time between two logins to one mailbox. Clients that poll
 * too eagerly are told to wait ([LOGIN-DELAY]) instead of costing the backend a session.
 */
const MAX_MAILBOXES = 100_000;

export class LoginDelay {
  private readonly lastLogin = new Map<string, number>();

  constructor(
    private readonly delayMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Seconds until the mailbox may be logged in to again; 0 when it may now. */
  wait(mailbox: string): number {
    const last = this.lastLogin.get(mailbox);
    if (last === undefined) return 0;
    const left = last + this.delayMs - this.now();
    if (left > 0) return Math.ceil(left / 1000);
    this.lastLogin.delete(mailbox);
    return 0;
  }

  loggedIn(mailbox: string): void {
    this.lastLogin.delete(mailbox);
    this.lastLogin.set(mailbox, this.now());
    // Map order is insertion order: the first entries are the oldest logins.
    if (this.lastLogin.size > MAX_MAILBOXES) this.lastLogin.delete(this.lastLogin.keys().next().value!);
  }
}
