/**
 * What each mailbox held when a session last opened it: the UID and size of every message and
 * which ones carried \Deleted, with the mailbox state that proves it still holds. A message's
 * size never changes while UIDVALIDITY stays the same, so the next session only has to ask the
 * server for what is new; with a large mailbox that is most of the cost of a login.
 *
 * Entries are only ever read after the user has logged in to that very mailbox. The cache is
 * bounded by the number of messages it holds, least recently used mailboxes going first. With
 * replicas, the listings are shared in Redis too (src/shared/listing-store.ts), under the same
 * rules: a listing proves only what the mailbox state proves.
 */

/**
 * What SELECT told about the mailbox. Anything the server does not report is undefined and
 * proves nothing: Courier-IMAP sends no UIDNEXT, Exchange Online and Courier have no CONDSTORE.
 */
export interface MailboxState {
  readonly uidValidity: bigint;
  /** Undefined when the server sent no (usable) UIDNEXT. */
  readonly uidNext: number | undefined;
  readonly exists: number;
  /** From CONDSTORE; undefined when the server does not offer it. */
  readonly highestModseq: bigint | undefined;
}

export interface CachedMailbox {
  readonly state: MailboxState;
  /** Ascending. */
  readonly uids: Uint32Array;
  /**
   * Sizes in octets, in the order of `uids`: what the server reported (RFC822.SIZE), or the
   * octets a session counted when it delivered the message whole, where they differ (Exchange
   * reports an estimate).
   */
  readonly sizes: Float64Array;
  /**
   * UIDs that carried \Deleted; undefined when not known (the session asks for the flags of
   * the messages it is about to flag, and only then).
   */
  readonly deleted: ReadonlySet<number> | undefined;
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

  /**
   * Notes the true size of one message, counted as it was delivered whole, for the sessions
   * to come. Ignored when the cache no longer holds that message under that UIDVALIDITY.
   */
  learnSize(key: string, uidValidity: bigint, uid: number, size: number): void {
    const entry = this.entries.get(key);
    if (entry !== undefined) learnSize(entry, uidValidity, uid, size);
  }

  private delete(key: string): void {
    const entry = this.entries.get(key);
    if (entry === undefined) return;
    this.entries.delete(key);
    this.messages -= entry.uids.length;
  }
}

/**
 * Notes the true size of one message in a listing; says whether that changed it. Ignored (false)
 * when the listing is of another UIDVALIDITY or does not hold that UID.
 */
export function learnSize(entry: CachedMailbox, uidValidity: bigint, uid: number, size: number): boolean {
  if (entry.state.uidValidity !== uidValidity || !Number.isSafeInteger(size) || size < 0) return false;
  const i = indexOfUid(entry.uids, uid);
  if (i < 0 || entry.sizes[i] === size) return false;
  entry.sizes[i] = size;
  return true;
}

/** Position of `uid` in the ascending `uids`, or -1. */
function indexOfUid(uids: Uint32Array, uid: number): number {
  let lo = 0;
  let hi = uids.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const at = uids[mid];
    if (at === uid) return mid;
    if (at < uid) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

/**
 * Whether nothing was added or removed since `cached`: appends raise UIDNEXT, expunges lower
 * EXISTS, and an expunge plus an append change UIDNEXT. Without UIDNEXT from both sessions
 * that cannot be told, and the answer is no.
 */
export function sameMessages(cached: MailboxState, now: MailboxState): boolean {
  return (
    known(cached.uidNext) &&
    known(now.uidNext) &&
    cached.uidValidity === now.uidValidity &&
    cached.uidNext === now.uidNext &&
    cached.exists === now.exists
  );
}

/** Whether no flag changed either: every flag change raises HIGHESTMODSEQ (RFC 7162). */
export function sameFlags(cached: MailboxState, now: MailboxState): boolean {
  const modseq = cached.highestModseq;
  return sameMessages(cached, now) && modseq !== undefined && modseq > 0n && modseq === now.highestModseq;
}

/** A UIDNEXT worth comparing: UIDs start at 1, so 0 (or a missing value) says nothing. */
function known(uidNext: number | undefined): uidNext is number {
  return typeof uidNext === 'number' && Number.isInteger(uidNext) && uidNext > 0;
}
