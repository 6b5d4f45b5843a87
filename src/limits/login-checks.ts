/**
 * The failed-login throttle and LOGIN-DELAY as a session asks for them, right after the store
 * refused or accepted the credentials: from this process's own records, or, with replicas, from
 * the records they share in Redis (each falling back to the process's own while Redis is away).
 */
import type { ExpiringStore } from '../shared/expiring-store.js';
import { AuthThrottle } from './auth-throttle.js';
import { LoginDelay } from './login-delay.js';
import { SharedAuthThrottle } from './shared-auth-throttle.js';
import { SharedLoginDelay } from './shared-login-delay.js';

export interface LoginChecksOptions {
  /** The longest delay before a failed login's reply. */
  readonly authFailDelayMs: number;
  /** The least time between two logins to one mailbox; undefined for none. */
  readonly loginDelayMs: number | undefined;
  /** Where the replicas share their records; undefined: this process alone. */
  readonly shared?: { readonly failures: ExpiringStore; readonly logins: ExpiringStore };
  /** Told each time Redis could not answer and the process's own record was used. */
  readonly onFallback?: (check: 'throttle' | 'login-delay') => void;
  readonly now?: () => number;
}

export class LoginChecks {
  private readonly throttle: AuthThrottle;
  private readonly delay: LoginDelay | undefined;
  private readonly sharedThrottle: SharedAuthThrottle | undefined;
  private readonly sharedDelay: SharedLoginDelay | undefined;

  constructor(options: LoginChecksOptions) {
    const now = options.now ?? Date.now;
    this.throttle = new AuthThrottle(options.authFailDelayMs, now);
    this.delay = options.loginDelayMs === undefined ? undefined : new LoginDelay(options.loginDelayMs, now);
    const shared = options.shared;
    if (!shared) return;
    const fallback = options.onFallback ?? (() => undefined);
    this.sharedThrottle = new SharedAuthThrottle(shared.failures, this.throttle, options.authFailDelayMs, () =>
      fallback('throttle'),
    );
    if (this.delay && options.loginDelayMs !== undefined) {
      this.sharedDelay = new SharedLoginDelay(shared.logins, this.delay, options.loginDelayMs, () =>
        fallback('login-delay'),
      );
    }
  }

  /** SessionPolicy.authFailed: notes a failed login; resolves to how long to wait before answering it. */
  async authFailed(address: string): Promise<number> {
    if (!this.sharedThrottle) return this.throttle.failed(address);
    return this.sharedThrottle.failed(address).shared;
  }

  /** SessionPolicy.loginWait: seconds until the mailbox may be logged in to again. */
  async loginWait(mailbox: string): Promise<number> {
    if (this.sharedDelay) return this.sharedDelay.wait(mailbox);
    return this.delay?.wait(mailbox) ?? 0;
  }

  /** SessionPolicy.loggedIn. */
  loggedIn(mailbox: string): void {
    if (this.sharedDelay) this.sharedDelay.loggedIn(mailbox);
    else this.delay?.loggedIn(mailbox);
  }
}
