/**
 * Logged-in backend connections kept between POP3 sessions of the same login (--backend-reuse).
 *
 * A session that ended cleanly (QUIT, or an abnormal end between commands with every flag it
 * stored taken back) may leave its IMAP connection here, mailbox still selected. The next
 * session of the same mailbox gets it instead of connecting and logging in again, but only if
 * it presents the very credentials that logged it in: the pool keeps, per connection, an HMAC
 * of user name and password (or token) under a key made at random when the process starts.
 * Neither the secret nor anything that could be checked against it offline outlives the
 * process.
 *
 * A connection is handed out at most `reuseMs` after the login that made it, never later: a
 * password changed or an account disabled on the backend takes effect within that time. It is
 * closed when that time is up, when the server closes it, and when the bounds (per mailbox, in
 * all) make room for a newer one. Every user gets only connections logged in as that user with
 * those credentials: the key is the mailbox (server, user, folder) and the HMAC together.
 */
import { createHmac, randomBytes } from 'node:crypto';
import type { ImapFlow } from 'imapflow';
import type { Credentials } from '../maildrop/maildrop.js';
import type { EvictionReason, PoolEvents } from '../metrics/events.js';

export interface BackendPoolOptions {
  /** How long after its login a connection may still be handed out; 0 keeps none. */
  readonly reuseMs: number;
  readonly maxTotal: number;
  readonly maxPerMailbox: number;
  readonly events?: PoolEvents;
}

interface Kept {
  readonly mailboxKey: string;
  readonly tag: string;
  readonly client: ImapFlow;
  /** When it may no longer be handed out (login time + reuseMs). */
  readonly expires: number;
  readonly timer: NodeJS.Timeout;
  readonly onClose: () => void;
}

/** What a pooled connection carries from its login: when, and with which credentials. */
export interface LoginStamp {
  readonly tag: string;
  /** performance.now() at login. */
  readonly at: number;
}

export type { EvictionReason, PoolEvents } from '../metrics/events.js';

export class BackendPool {
  /** Per-process key of the credential HMACs: never stored, never logged. */
  private readonly key = randomBytes(32);
  /** Oldest first (insertion order). */
  private readonly kept: Kept[] = [];
  private closed = false;

  constructor(private readonly options: BackendPoolOptions) {}

  get enabled(): boolean {
    return this.options.reuseMs > 0 && !this.closed;
  }

  get size(): number {
    return this.kept.length;
  }

  /** The keyed hash of these credentials: equal only for the same user and the same secret. */
  tag(credentials: Credentials): string {
    const secret = 'password' in credentials ? `p\0${credentials.password}` : `t\0${credentials.accessToken}`;
    return createHmac('sha256', this.key).update(credentials.user).update('\0').update(secret).digest('base64');
  }

  /**
   * A kept connection of this mailbox logged in with these credentials, taken out of the pool,
   * with the time of its login; undefined (a miss) when there is none.
   */
  take(mailboxKey: string, tag: string): { client: ImapFlow; stamp: LoginStamp } | undefined {
    if (!this.enabled) return undefined;
    const now = performance.now();
    // The newest first: it has the most time left.
    for (let i = this.kept.length - 1; i >= 0; i--) {
      const entry = this.kept[i];
      if (entry.mailboxKey !== mailboxKey || entry.tag !== tag) continue;
      this.remove(entry);
      if (entry.expires <= now || !entry.client.usable) {
        this.discard(entry, entry.expires <= now ? 'expired' : 'closed');
        continue;
      }
      this.options.events?.hit();
      return { client: entry.client, stamp: { tag, at: entry.expires - this.options.reuseMs } };
    }
    this.options.events?.miss();
    return undefined;
  }

  /**
   * Keeps a logged-in connection whose session is over and left it clean; closes it instead
   * when the pool is off or its time is up. The caller must no longer use it either way.
   */
  release(mailboxKey: string, stamp: LoginStamp, client: ImapFlow): boolean {
    const expires = stamp.at + this.options.reuseMs;
    const left = expires - performance.now();
    if (!this.enabled || left <= 0 || !client.usable) {
      close(client);
      return false;
    }
    // Another login of this mailbox with other credentials means those may be stale now.
    for (const other of this.kept.filter((e) => e.mailboxKey === mailboxKey && e.tag !== stamp.tag)) {
      this.remove(other);
      this.discard(other, 'replaced');
    }
    const same = this.kept.filter((e) => e.mailboxKey === mailboxKey);
    if (same.length >= this.options.maxPerMailbox) {
      this.remove(same[0]);
      this.discard(same[0], 'capacity');
    }
    if (this.kept.length >= this.options.maxTotal) {
      const oldest = this.kept[0];
      this.remove(oldest);
      this.discard(oldest, 'capacity');
    }
    const onClose = () => {
      if (!this.kept.includes(entry)) return;
      this.remove(entry);
      this.discard(entry, 'closed');
    };
    const timer = setTimeout(() => {
      if (!this.kept.includes(entry)) return;
      this.remove(entry);
      this.discard(entry, 'expired');
    }, left);
    timer.unref();
    const entry: Kept = { mailboxKey, tag: stamp.tag, client, expires, timer, onClose };
    client.once('close', onClose);
    this.kept.push(entry);
    return true;
  }

  /** Closes every kept connection; nothing is kept from now on. */
  close(): void {
    this.closed = true;
    for (const entry of this.kept.splice(0)) this.discard(entry, 'shutdown', false);
  }

  private remove(entry: Kept): void {
    const i = this.kept.indexOf(entry);
    if (i >= 0) this.kept.splice(i, 1);
    clearTimeout(entry.timer);
    entry.client.off('close', entry.onClose);
  }

  private discard(entry: Kept, reason: EvictionReason, count = true): void {
    if (count || reason === 'shutdown') this.options.events?.evicted(reason);
    close(entry.client);
  }
}

/** LOGOUT when the connection still works (not waited for), then closed. */
function close(client: ImapFlow): void {
  if (!client.usable) {
    client.close();
    return;
  }
  client
    .logout()
    .catch(() => undefined)
    .finally(() => client.close());
}
