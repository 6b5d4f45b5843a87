/**
 * The session's listing of the mailbox (UID, size and \Deleted flag of every message), as
 * cheaply as the mailbox state allows. A listing kept from an earlier session (in this process,
 * snapshot-cache.ts, or by any replica, listing-store.ts) is reused as far as the state SELECT
 * reports proves it unchanged, and only the sizes of new messages are fetched; without one of
 * this UIDVALIDITY the whole mailbox is listed. Whatever is kept is never believed beyond what
 * that state proves.
 *
 * The listing is kept again for the next session, with the true sizes this session learned by
 * delivering messages whole (Exchange's RFC822.SIZE is only an estimate).
 */
import type { ImapFlow, MailboxObject } from 'imapflow';
import type { Logger } from 'winston';
import { MaildropError } from '../maildrop/errors.js';
import type { BackendSteps } from './backend-step.js';
import type { SharedListings } from './listing-store.js';
import {
  learnSize,
  sameFlags,
  sameMessages,
  type CachedMailbox,
  type MailboxState,
  type SnapshotCache,
} from './snapshot-cache.js';
import { searchUids } from './uid-search.js';
import { uidSet } from './uid-set.js';

const DELETED = '\\Deleted';

/**
 * The state SELECT reported, which a kept listing is checked against. A read-only mailbox, or
 * one without UIDVALIDITY (UIDLs are made of it: without it they could not be promised
 * stable), cannot be served.
 */
export function selectedState(mailbox: MailboxObject, name: string): MailboxState {
  if (mailbox.readOnly) throw new MaildropError('permanent', `mailbox ${name} is read-only`);
  // What the server left out of its SELECT answer is unknown (Courier sends no UIDNEXT).
  const reported = mailbox as Partial<MailboxObject>;
  if (reported.uidValidity === undefined) {
    throw new MaildropError('permanent', `the mail server sent no UIDVALIDITY for ${name}`);
  }
  return {
    uidValidity: BigInt(reported.uidValidity),
    uidNext: typeof reported.uidNext === 'number' && reported.uidNext > 0 ? reported.uidNext : undefined,
    exists: reported.exists ?? 0,
    highestModseq: reported.highestModseq,
  };
}

/**
 * Whether `now` shows the very mailbox `kept` was listed from: no message added or removed, and
 * the same HIGHESTMODSEQ, or none from both (no CONDSTORE: then no other listing could prove more).
 */
function unchanged(kept: MailboxState, now: MailboxState): boolean {
  return sameMessages(kept, now) && kept.highestModseq === now.highestModseq;
}

export class ListingSync {
  /** The listing this session started from, as kept for the next. */
  private kept: CachedMailbox | undefined;
  /** A true size learned in this session changed `kept`: shared once the session ends. */
  private learned = false;

  constructor(
    /** The connection the listing is asked on (read at each use: a new login may replace it). */
    private readonly connection: { readonly client: ImapFlow },
    private readonly steps: BackendSteps,
    private readonly cache: SnapshotCache,
    private readonly shared: SharedListings | undefined,
    private readonly mailboxKey: string,
    private readonly logger: Logger,
  ) {}

  /**
   * The listing of the mailbox SELECT described, kept for the next session in this process and,
   * unless it is the shared one as it was, for the replicas.
   */
  async load(state: MailboxState): Promise<CachedMailbox> {
    const { listing, unchangedShared } = await this.listing(state);
    this.cache.set(this.mailboxKey, listing);
    this.kept = listing;
    // An empty listing saves the next session nothing (an empty mailbox is never listed).
    if (!unchangedShared && listing.uids.length > 0) this.shared?.set(this.mailboxKey, listing);
    return listing;
  }

  /** A message delivered whole told its true size: the next sessions' LIST and STAT report it. */
  learnSize(uid: number, octets: number): void {
    if (this.kept === undefined) return;
    const { uidValidity } = this.kept.state;
    if (learnSize(this.kept, uidValidity, uid, octets)) this.learned = true;
    this.cache.learnSize(this.mailboxKey, uidValidity, uid, octets);
  }

  /** The true sizes this session learned reach the other replicas once, now (the session is over). */
  share(): void {
    if (this.learned && this.kept !== undefined) this.shared?.set(this.mailboxKey, this.kept);
    this.learned = false;
  }

  /**
   * The process's own listing serves when the state proves it entirely unchanged; otherwise the
   * one the replicas share, if it is of this UIDVALIDITY (another replica may have seen the
   * mailbox since), else the process's own. `unchangedShared`: the listing is the shared one as
   * it was, with nothing to write back.
   */
  private async listing(state: MailboxState): Promise<{ listing: CachedMailbox; unchangedShared: boolean }> {
    if (state.exists === 0) {
      const empty = { state, uids: new Uint32Array(0), sizes: new Float64Array(0), deleted: new Set<number>() };
      return { listing: empty, unchangedShared: false };
    }
    const local = this.cache.get(this.mailboxKey);
    let start = local;
    let shared = false;
    if (local === undefined || !unchanged(local.state, state)) {
      const remote = await this.shared?.get(this.mailboxKey);
      if (remote !== undefined && remote.state.uidValidity === state.uidValidity) {
        start = remote;
        shared = true;
      }
    }
    if (start === undefined || start.state.uidValidity !== state.uidValidity) {
      this.logger.debug('Listing the whole mailbox (no kept listing of this UIDVALIDITY)');
      return { listing: await this.fetchListing(state), unchangedShared: false };
    }
    const same = sameMessages(start.state, state);
    const where = shared ? 'in Redis' : 'in this process';
    this.logger.debug(`Listing from the listing kept ${where}${same ? ', no message added or removed' : ''}`);
    const uids = same
      ? start.uids
      : await searchUids(this.connection.client, this.steps, { all: true }, 'listing messages');
    // Which messages carry \Deleted matters only once this session flags some: asked then.
    const deleted = sameFlags(start.state, state) ? start.deleted : undefined;
    const sizes = await this.sizesOf(uids, start);
    const present = uids.filter((_, i) => !Number.isNaN(sizes[i]));
    const unchangedShared = shared && unchanged(start.state, state);
    if (present.length === uids.length) return { listing: { state, uids, sizes, deleted }, unchangedShared };
    // Expunged between the search and the fetch: not part of this session.
    const found = sizes.filter((size) => !Number.isNaN(size));
    return { listing: { state, uids: present, sizes: found, deleted }, unchangedShared: false };
  }

  /** Everything from the server: UID, size and flags of every message. */
  private async fetchListing(state: MailboxState): Promise<CachedMailbox> {
    const client = this.connection.client;
    const messages = await this.steps.run('listing messages', () =>
      client.fetchAll('1:*', { uid: true, size: true, flags: true }),
    );
    const known = messages.filter((m) => m.uid !== undefined && m.size !== undefined).sort((a, b) => a.uid - b.uid);
    return {
      state,
      uids: Uint32Array.from(known, (m) => m.uid),
      sizes: Float64Array.from(known, (m) => m.size!),
      deleted: new Set(known.filter((m) => m.flags?.has(DELETED)).map((m) => m.uid)),
    };
  }

  /** Sizes of these UIDs, from the kept listing where it has them; NaN for a UID that no longer exists. */
  private async sizesOf(uids: Uint32Array, cached: CachedMailbox): Promise<Float64Array> {
    const sizes = new Float64Array(uids.length).fill(Number.NaN);
    const missing: number[] = [];
    let j = 0;
    uids.forEach((uid, i) => {
      while (j < cached.uids.length && cached.uids[j] < uid) j++;
      if (cached.uids[j] === uid) sizes[i] = cached.sizes[j]!;
      else missing.push(i);
    });
    if (missing.length === 0) return sizes;
    const set = uidSet(missing.map((i) => uids[i]));
    const client = this.connection.client;
    const fetched = await this.steps.run('listing new messages', () =>
      client.fetchAll(set, { uid: true, size: true }, { uid: true }),
    );
    const byUid = new Map(fetched.map((m) => [m.uid, m.size]));
    for (const i of missing) sizes[i] = byUid.get(uids[i]) ?? Number.NaN;
    return sizes;
  }
}
