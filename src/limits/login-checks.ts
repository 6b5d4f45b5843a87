/**
 * The failed-login throttle and LOGIN-DELAY as a session asks for them: synchronously
 * (SessionPolicy.authFailed, loginWait and loggedIn), right after the store refused or accepted
 * the credentials. In one process the answers are at hand. Shared in Redis they are not, so the
 * maildrop provider is wrapped: while a login is still in the provider's hands, right after the
 * store answered, the shared answer is fetched and set aside for the address or mailbox, and
 * the session's synchronous call, which comes next, takes it. A call with nothing set aside
 * (a failure that did not come through the provider) is answered from the process's own
 * record, and Redis is told in the background.
 */
import { isMaildropError } from '../maildrop/errors.js';
import type { Maildrop, MaildropProvider } from '../maildrop/maildrop.js';
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
  private readonly failures: SetAside;
  private readonly waits: SetAside;

  constructor(options: LoginChecksOptions) {
    const now = options.now ?? Date.now;
    this.throttle = new AuthThrottle(options.authFailDelayMs, now);
    this.delay = options.loginDelayMs === undefined ? undefined : new LoginDelay(options.loginDelayMs, now);
    this.failures = new SetAside(now);
    this.waits = new SetAside(now);
    const shared = options.shared;
    if (!shared) return;
    const fallback = options.onFallback ?? (() => undefined);
    this.sharedThrottle = new SharedAuthThrottle(shared.failures, this.throttle, options.authFailDelayMs, () => fallback('throttle'));
    if (this.delay && options.loginDelayMs !== undefined) {
      this.sharedDelay = new SharedLoginDelay(shared.logins, this.delay, options.loginDelayMs, () => fallback('login-delay'));
    }
  }

  /** The provider the sessions use: unchanged in one process; with shared records, one that fetches them. */
  wrap(provider: MaildropProvider): MaildropProvider {
    const throttle = this.sharedThrottle;
    const delay = this.sharedDelay;
    if (!throttle) return provider;
    return {
      authenticate: async (credentials, client) => {
        let maildrop: Maildrop;
        try {
          maildrop = await provider.authenticate(credentials, client);
        } catch (err) {
          if (isMaildropError(err) && err.kind === 'credentials') this.failures.put(client.address, await throttle.failed(client.address).shared);
          throw err;
        }
        if (delay) this.waits.put(maildrop.mailboxKey, await delay.wait(maildrop.mailboxKey));
        return maildrop;
      },
    };
  }

  /** SessionPolicy.authFailed: notes a failed login; returns how long to wait before answering it. */
  authFailed(address: string): number {
    const prepared = this.failures.take(address);
    if (prepared !== undefined) return prepared;
    if (!this.sharedThrottle) return this.throttle.failed(address);
    return this.sharedThrottle.failed(address).local;
  }

  /** SessionPolicy.loginWait: seconds until the mailbox may be logged in to again. */
  loginWait(mailbox: string): number {
    const prepared = this.waits.take(mailbox);
    if (prepared !== undefined) return prepared;
    return this.delay?.wait(mailbox) ?? 0;
  }

  /** SessionPolicy.loggedIn. */
  loggedIn(mailbox: string): void {
    if (this.sharedDelay) this.sharedDelay.loggedIn(mailbox);
    else this.delay?.loggedIn(mailbox);
  }
}

/** An answer set aside is only taken this soon after; later it is stale and dropped. */
const SET_ASIDE_FOR_MS = 10_000;
/** Answers set aside at most (each is normally taken at once, in the same turn of the event loop). */
const MAX_SET_ASIDE = 10_000;

/** Answers fetched ahead of a synchronous question, by key, first in first out. Pure; the clock is injectable. */
export class SetAside {
  private readonly entries = new Map<string, Array<{ value: number; at: number }>>();
  private count = 0;

  constructor(private readonly now: () => number = Date.now) {}

  put(key: string, value: number): void {
    if (this.count >= MAX_SET_ASIDE) {
      // Never taken: something asks without coming through the provider. Start over.
      this.entries.clear();
      this.count = 0;
    }
    const queue = this.entries.get(key);
    const entry = { value, at: this.now() };
    if (queue) queue.push(entry);
    else this.entries.set(key, [entry]);
    this.count++;
  }

  take(key: string): number | undefined {
    const queue = this.entries.get(key);
    if (!queue) return undefined;
    const oldest = this.now() - SET_ASIDE_FOR_MS;
    let entry = queue.shift();
    this.count--;
    while (entry !== undefined && entry.at < oldest) {
      entry = queue.shift();
      if (entry !== undefined) this.count--;
    }
    if (queue.length === 0) this.entries.delete(key);
    return entry?.value;
  }

  get size(): number {
    return this.count;
  }
}
