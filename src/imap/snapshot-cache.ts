/**
 * What each mailbox held when a session last opened it: the UID and size of every message and
 * which ones carried \Deleted, with the mailbox state that proves it still holds. A message's
 * size never changes while UIDVALIDITY stays the same, so the next session only has to ask the
 * server for what is new; with a large mailbox that is most of the cost of a login.
 *
 * Entries are only ever read after the user has logged in to that very mailbox. The cache is
 * bounded by the number of messages it holds, least recently used mailboxes going first.
 */

export interface MailboxState {
  readonly uidValidity: bigint;
  readonly uidNext: number;
  readonly exists: number;
  /** From CONDSTORE; undefined when the server does not offer it. */
  readonly highestModseq: bigint | undefined;
}

export interface CachedMailbox {
  readonly state: MailboxState;
  /** Ascending. */
  readonly uids: Uint32Array;
  /** Sizes in octets, in the order of `uids`. */
  readonly sizes: Float64Array;
  /** UIDs that carried \Deleted. */
  readonly deleted: ReadonlySet<number>;
}

export class SnapshotCache {
  private readonly entries = new Map<string, CachedMailbox>();
  private messages = 0;

  constructor(private readonly maxMessages: number) {}

  get(key: string): CachedMailbox | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    // Re-inserting moves it to the young end of the Map's order.
    this.entries.delete(key);
    this.entries.set(key, entry);
    return entry;
  }

  set(key: string, entry: CachedMailbox): void {
    this.delete(key);
    if (entry.uids.length > this.maxMessages) return;
    this.entries.set(key, entry);
    this.messages += entry.uids.length;
    for (const oldest of this.entries.keys()) {
      if (this.messages <= this.maxMessages) break;
      this.delete(oldest);
    }
  }

  private delete(key: string): void {
    const entry = this.entries.get(key);
    if (entry === undefined) return;
    this.entries.delete(key);
    this.messages -= entry.uids.length;
  }
}

/** Whether nothing was added or removed since `cached`: appends raise UIDNEXT, expunges lower EXISTS. */
export function sameMessages(cached: MailboxState, now: MailboxState): boolean {
  return cached.uidValidity === now.uidValidity && cached.uidNext === now.uidNext && cached.exists === now.exists;
}

/** Whether no flag changed either: every flag change raises HIGHESTMODSEQ (RFC 7162). */
export function sameFlags(cached: MailboxState, now: MailboxState): boolean {
  return sameMessages(cached, now) && cached.highestModseq !== undefined && cached.highestModseq === now.highestModseq;
}
