/**
 * The Maildrop contract over an IMAP mailbox (imapflow). Message identity is the UID; the
 * snapshot is taken once, right after login. Commit removes exactly the UIDs it is given (UID
 * EXPUNGE), never other messages that carry \Deleted.
 *
 * Deletion marks live in the session and reach the store only at commit, as in Dovecot's own
 * POP3: a session that ends any other way, even by the process being killed, leaves no trace.
 * With `flagOnDele` they are the \Deleted flag, stored at once and taken back on every end but
 * a successful commit; never on a server that expunges flagged mail at once (Gmail).
 */
import { Readable, Transform, type TransformCallback } from 'node:stream';
import type { ImapFlow, ListResponse, SearchObject } from 'imapflow';
import type { Logger } from 'winston';
import { MaildropError } from '../maildrop/errors.js';
import type { ClientInfo, Credentials, Maildrop, MaildropProvider, MessageEntry } from '../maildrop/maildrop.js';
import { BackoffError, BackoffRegistry } from './backoff.js';
import type { BackendPool, LoginStamp } from './backend-pool.js';
import { adoptConnection, connectImap, ensureNamespace, serverFailureOf, withTimeout, type ImapSettings } from './imap-client.js';
import { connectionBusy, fastPaths, type FastPaths } from './fast-paths.js';
import { ReadAhead } from './read-ahead.js';
import type { SharedListings } from '../shared/listing-store.js';
import { learnSize, sameFlags, sameMessages, SnapshotCache, type CachedMailbox, type MailboxState } from './snapshot-cache.js';
import { parseUidSet, uidSet } from './uid-set.js';
import type { UidlFormatter } from './uidl-format.js';

const DELETED = '\\Deleted';
const SEEN = '\\Seen';
/** A special-use mailbox name (RFC 6154) such as \Trash, written with its backslash. */
const SPECIAL_USE_NAME = /^\\[A-Za-z]+$/;

/**
 * Remove for good, move to a folder (keeping a copy), or only leave them flagged \Deleted.
 * A folder written as a special-use name (RFC 6154), such as `\Trash`, is the folder the server
 * flags with it: Gmail's is `[Gmail]/Trash`, or `[Gmail]/Papierkorb` on a German account.
 */
export type DeleteMode = { readonly kind: 'expunge' } | { readonly kind: 'move'; readonly folder: string } | { readonly kind: 'flag' };

export interface ImapBackendOptions extends ImapSettings {
  readonly uidl: UidlFormatter;
  /** Bytes asked for per FETCH while streaming a message. */
  readonly chunkSize: number;
  /** Messages whose UID and size are kept between sessions, over all mailboxes. */
  readonly cacheMessages: number;
  /** Serve only the newest this many messages; undefined for all. */
  readonly maxMessages: number | undefined;
  /** Set \Seen on a message once RETR delivered it whole. */
  readonly markSeen: boolean;
  /** What QUIT does with the deleted messages. */
  readonly deleteMode: DeleteMode;
  /** Store \Deleted at DELE rather than at commit, where the server allows it safely. */
  readonly flagOnDele: boolean;
  /** Told how long each backend step took (for metrics). */
  readonly onStep?: (step: string, seconds: number) => void;
  /** Logged-in connections kept between sessions of the same login (--backend-reuse). */
  readonly pool?: BackendPool;
  /** The kept listings shared by the replicas (--redis); without it each process keeps its own. */
  readonly listings?: SharedListings;
  /** Which hooks into imapflow's internals are on; by default what fits the installed imapflow. */
  readonly fastPaths?: FastPaths;
}

/**
 * Whether `now` shows the very mailbox `kept` was listed from: no message added or removed, and
 * the same HIGHESTMODSEQ, or none from both (no CONDSTORE: then no other listing could prove more).
 */
function unchanged(kept: MailboxState, now: MailboxState): boolean {
  return sameMessages(kept, now) && kept.highestModseq === now.highestModseq;
}

/** Identifies one mailbox of one user on one server: the same for every login to it. */
export function mailboxKeyOf(options: Pick<ImapSettings, 'host' | 'port' | 'mailbox'>, user: string): string {
  const normalized = user.trim().toLowerCase();
  return `imap://${options.host}:${options.port}/${encodeURIComponent(normalized)}/${encodeURIComponent(options.mailbox)}`;
}

export class ImapMaildropProvider implements MaildropProvider {
  private readonly cache: SnapshotCache;
  /** Mailboxes the server asked us to leave alone for a while (throttling). */
  readonly backoff: BackoffRegistry;
  /** Whether the fallback from flagOnDele on an auto-expunging server has been logged. */
  private fallbackLogged = false;

  constructor(
    private readonly options: ImapBackendOptions,
    private readonly logger: Logger,
    backoff: BackoffRegistry = new BackoffRegistry(),
  ) {
    this.cache = new SnapshotCache(options.cacheMessages);
    this.backoff = backoff;
  }

  /**
   * Logs in, unless the server throttled this mailbox and the suggested back-off has not passed:
   * then it fails at once with a BackoffError (kind 'temporary'), without connecting.
   */
  async authenticate(credentials: Credentials, from: ClientInfo): Promise<Maildrop> {
    const key = mailboxKeyOf(this.options, credentials.user);
    const wait = this.backoff.remaining(key);
    if (wait > 0) throw new BackoffError(wait);
    // Only a connection logged in with these very credentials is handed out (see BackendPool).
    const pool = this.options.pool?.enabled ? this.options.pool : undefined;
    const tag = pool?.tag(credentials);
    const kept = tag === undefined ? undefined : pool!.take(key, tag);
    if (kept !== undefined) {
      adoptConnection(kept.client, from.sessionId);
      this.logger.debug('Reusing a kept backend connection of this login');
      return new ImapMaildrop(kept.client, credentials, from, { ...this.options, flagOnDele: this.flagOnDele(kept.client) }, this.cache, this.logger, kept.stamp, true);
    }
    const started = performance.now();
    const hooks = { onThrottle: (ms: number) => this.backoff.backOff(key, ms), loginDiet: (this.options.fastPaths ?? fastPaths())['login-diet'] };
    const client = await connectImap(this.options, credentials, from, this.logger, hooks).finally(() =>
      this.options.onStep?.('login', (performance.now() - started) / 1000),
    );
    const stamp = tag === undefined ? undefined : { tag, at: started };
    return new ImapMaildrop(client, credentials, from, { ...this.options, flagOnDele: this.flagOnDele(client) }, this.cache, this.logger, stamp, false);
  }

  /**
   * Gmail (X-GM-EXT-1) expunges a message as soon as it is flagged \Deleted ("Auto-Expunge",
   * on by default): a flag stored at DELE could not be taken back by RSET or an abandoned session.
   */
  private flagOnDele(client: ImapFlow): boolean {
    if (!this.options.flagOnDele || !client.capabilities.has('X-GM-EXT-1')) return this.options.flagOnDele;
    if (!this.fallbackLogged) {
      this.fallbackLogged = true;
      this.logger.warn('--flag-on-dele ignored: this server (X-GM-EXT-1, Gmail) expunges flagged messages at once; \\Deleted is stored at QUIT');
    }
    return false;
  }
}

interface SnapshotEntry extends MessageEntry {
  readonly uid: number;
}

/** Passes a message through, counting its octets; tells the count once the stream ended whole. */
class OctetCounter extends Transform {
  private octets = 0;

  constructor(private readonly whole: (octets: number) => void) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.octets += chunk.length;
    done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    this.whole(this.octets);
    done();
  }
}

export class ImapMaildrop implements Maildrop {
  readonly mailboxKey: string;
  private snapshot: SnapshotEntry[] = [];
  private readAhead: ReadAhead | undefined;
  /** Indexes the client deleted in this session: no longer worth reading ahead. */
  private readonly deletedIndexes = new Set<number>();
  /** UIDs this session flagged \Deleted that did not carry the flag before: ours to undo. */
  private readonly flaggedByUs = new Set<number>();
  /**
   * UIDs that already carried \Deleted before this session flagged anything: from the listing
   * when it told, else asked for just before the first flag is stored (flaggedBeforeKnown).
   */
  private readonly flaggedBefore = new Set<number>();
  private flaggedBeforeKnown = false;
  /** UIDs whose earlier \Deleted flag was asked for (when the listing did not tell). */
  private readonly checkedFlags = new Set<number>();
  /** Octets of the messages read whole in this session, by index: their true sizes. */
  private readonly readWhole = new Map<number, number>();
  /** The listing this session started from, as kept for the next. */
  private kept: CachedMailbox | undefined;
  /** A true size learned in this session changed `kept`: shared once the session ends. */
  private learned = false;
  /** UIDVALIDITY of the open mailbox. */
  private uidValidity: bigint | undefined;
  private ended = false;
  /**
   * A backend command failed or a message stream was cut short: the connection may be in the
   * middle of something, and is never kept for another session.
   */
  private interrupted = false;

  constructor(
    private client: ImapFlow,
    private readonly credentials: Credentials,
    private readonly from: ClientInfo,
    private readonly options: ImapBackendOptions,
    private readonly cache: SnapshotCache,
    private readonly logger: Logger,
    /** When and with what the connection logged in: set when it may be kept after the session. */
    private stamp: LoginStamp | undefined = undefined,
    /** The connection served an earlier session (it came from the pool). */
    private reused = false,
  ) {
    this.mailboxKey = mailboxKeyOf(options, credentials.user);
  }

  /**
   * Opens the mailbox. On a kept connection that SELECT is also the check that it still works;
   * if the server closed it meanwhile, the session logs in afresh instead.
   */
  async open(): Promise<readonly MessageEntry[]> {
    try {
      return await this.openMailbox();
    } catch (err) {
      if (!this.reused || this.client.usable) throw err;
      this.logger.debug(`The kept backend connection is gone (${(err as Error).message}); logging in again`);
      this.client.close();
      this.reused = false;
      this.interrupted = false;
      const started = performance.now();
      this.client = await connectImap(this.options, this.credentials, this.from, this.logger, { loginDiet: this.paths['login-diet'] });
      if (this.stamp !== undefined) this.stamp = { tag: this.stamp.tag, at: started };
      return this.openMailbox();
    }
  }

  private async openMailbox(): Promise<readonly MessageEntry[]> {
    const mailbox = await this.step('opening the mailbox', () => this.client.mailboxOpen(this.options.mailbox, { readOnly: false }));
    if (mailbox.readOnly) throw new MaildropError('permanent', `mailbox ${this.options.mailbox} is read-only`);
    // What the server left out of its SELECT answer is unknown (Courier sends no UIDNEXT).
    const reported = mailbox as Partial<typeof mailbox>;
    // UIDLs are made of UID and UIDVALIDITY: without it they could not be promised stable.
    if (reported.uidValidity === undefined) throw new MaildropError('permanent', `the mail server sent no UIDVALIDITY for ${this.options.mailbox}`);
    this.uidValidity = BigInt(reported.uidValidity);
    const state: MailboxState = {
      uidValidity: this.uidValidity,
      uidNext: typeof reported.uidNext === 'number' && reported.uidNext > 0 ? reported.uidNext : undefined,
      exists: reported.exists ?? 0,
      highestModseq: reported.highestModseq,
    };
    const { listing, unchangedShared } = await this.listing(state);
    this.cache.set(this.mailboxKey, listing);
    this.kept = listing;
    // An empty listing saves the next session nothing (an empty mailbox is never listed).
    if (!unchangedShared && listing.uids.length > 0) this.options.listings?.set(this.mailboxKey, listing);
    const uidValidity = Number(reported.uidValidity);
    const entries: SnapshotEntry[] = [];
    // The newest messages have the highest UIDs.
    const first = Math.max(0, listing.uids.length - (this.options.maxMessages ?? listing.uids.length));
    for (let i = first; i < listing.uids.length; i++) {
      const uid = listing.uids[i]!;
      if (listing.deleted?.has(uid)) this.flaggedBefore.add(uid);
      entries.push({ uid, size: listing.sizes[i]!, uidl: this.options.uidl(uid, uidValidity) });
    }
    this.flaggedBeforeKnown = listing.deleted !== undefined;
    this.snapshot = entries;
    this.readAhead = new ReadAhead(this.client, entries, (index) => this.deletedIndexes.has(index), this.paths['literal-tap']);
    return entries;
  }

  /**
   * UIDs, sizes and \Deleted flags of the mailbox. A listing kept from an earlier session is
   * reused as far as the mailbox state proves it unchanged; only the sizes of new messages are
   * fetched. The process's own listing serves when the state proves it entirely unchanged;
   * otherwise the one the replicas share in Redis, if it is of this UIDVALIDITY (another replica
   * may have seen the mailbox since), else the process's own. `unchangedShared`: the listing is
   * the shared one as it was, with nothing to write back.
   */
  private async listing(state: MailboxState): Promise<{ listing: CachedMailbox; unchangedShared: boolean }> {
    if (state.exists === 0) return { listing: { state, uids: new Uint32Array(0), sizes: new Float64Array(0), deleted: new Set() }, unchangedShared: false };
    const local = this.cache.get(this.mailboxKey);
    let start = local;
    let shared = false;
    if (local === undefined || !unchanged(local.state, state)) {
      const remote = await this.options.listings?.get(this.mailboxKey);
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
    this.logger.debug(`Listing from the listing kept ${shared ? 'in Redis' : 'in this process'}${same ? ', no message added or removed' : ''}`);
    const uids = same ? start.uids : await this.searchUids({ all: true }, 'listing messages');
    // Which messages carry \Deleted matters only once this session flags some: asked then.
    const deleted = sameFlags(start.state, state) ? start.deleted : undefined;
    const sizes = await this.sizesOf(uids, start);
    const present = uids.filter((_, i) => !Number.isNaN(sizes[i]));
    const unchangedShared = shared && unchanged(start.state, state);
    if (present.length === uids.length) return { listing: { state, uids, sizes, deleted }, unchangedShared };
    // Expunged between the search and the fetch: not part of this session.
    return { listing: { state, uids: present, sizes: sizes.filter((size) => !Number.isNaN(size)), deleted }, unchangedShared: false };
  }

  /** Everything from the server: UID, size and flags of every message. */
  private async fetchListing(state: MailboxState): Promise<CachedMailbox> {
    const messages = await this.step('listing messages', () => this.client.fetchAll('1:*', { uid: true, size: true, flags: true }));
    const known = messages.filter((m) => m.uid !== undefined && m.size !== undefined).sort((a, b) => a.uid - b.uid);
    return {
      state,
      uids: Uint32Array.from(known, (m) => m.uid),
      sizes: Float64Array.from(known, (m) => m.size!),
      deleted: new Set(known.filter((m) => m.flags?.has(DELETED)).map((m) => m.uid)),
    };
  }

  /** Sizes of these UIDs, from the cache where it has them; NaN for a UID that no longer exists. */
  private async sizesOf(uids: Uint32Array, cached: CachedMailbox): Promise<Float64Array> {
    const sizes = new Float64Array(uids.length).fill(Number.NaN);
    const missing: number[] = [];
    let j = 0;
    uids.forEach((uid, i) => {
      while (j < cached.uids.length && cached.uids[j]! < uid) j++;
      if (cached.uids[j] === uid) sizes[i] = cached.sizes[j]!;
      else missing.push(i);
    });
    if (missing.length === 0) return sizes;
    const set = uidSet(missing.map((i) => uids[i]!));
    const fetched = await this.step('listing new messages', () => this.client.fetchAll(set, { uid: true, size: true }, { uid: true }));
    const byUid = new Map(fetched.map((m) => [m.uid, m.size]));
    for (const i of missing) sizes[i] = byUid.get(uids[i]!) ?? Number.NaN;
    return sizes;
  }

  /** UIDs matching a search, ascending; compact ESEARCH answers where the server offers them. */
  private async searchUids(query: SearchObject, what: string): Promise<Uint32Array> {
    if (this.client.capabilities.has('ESEARCH')) {
      const result = await this.step(what, () => this.client.search(query, { uid: true, returnOptions: ['ALL'] }));
      if (result === false || result === undefined) throw this.commandFailed(what);
      return Array.isArray(result) ? Uint32Array.from(result).sort() : parseUidSet(result.all ?? '');
    }
    const result = await this.step(what, () => this.client.search(query, { uid: true }));
    if (result === false || result === undefined) throw this.commandFailed(what);
    return Uint32Array.from(result).sort();
  }

  async read(index: number): Promise<Readable> {
    const uid = this.uidOf(index);
    const readAhead = this.readAhead!;
    if (!readAhead.handles(index)) {
      readAhead.passed(index);
      return this.stream(index, uid);
    }
    const body = await this.step(`fetching message UID ${uid}`, () => readAhead.take(index));
    if (body === undefined) throw new MaildropError('gone', `message UID ${uid} no longer exists`);
    // Its size is the literal's: only a stream that ended whole leads to retrieved().
    this.readWhole.set(index, body.size);
    const { stream } = body;
    if (stream.arrived) return stream;
    // The body is still arriving: it gets the backend timeout, as a whole message did before.
    const timer = setTimeout(() => {
      this.interrupted = true;
      stream.destroy(new MaildropError('temporary', `fetching message UID ${uid} timed out after ${this.options.timeoutMs / 1000} s`, { fatal: true }));
    }, this.options.timeoutMs);
    stream.once('arrived', () => clearTimeout(timer));
    stream.once('close', () => clearTimeout(timer));
    return stream;
  }

  /**
   * A large message, fetched in windows and never held whole: streamed as the windows arrive,
   * the backend socket read only as fast as the client takes it (see ReadAhead.whole); where
   * the connection has no literal tap, with imapflow's download. Its octets are counted on the
   * way: once it has all gone through, that is its true size.
   */
  private async stream(index: number, uid: number): Promise<Readable> {
    const whole = this.readAhead?.whole(index, this.options.chunkSize);
    if (whole !== undefined) {
      const body = await this.step(`fetching message UID ${uid}`, () => whole);
      if (body === undefined) throw new MaildropError('gone', `message UID ${uid} no longer exists`);
      const { stream } = body;
      stream.once('end', () => this.readWhole.set(index, stream.received));
      // Given up part way: the rest is still read from the connection, which is not kept.
      stream.once('close', () => {
        if (!stream.readableEnded) this.interrupted = true;
      });
      return stream;
    }
    const download = await this.step(`fetching message UID ${uid}`, () =>
      this.client.download(String(uid), undefined, { uid: true, chunkSize: this.options.chunkSize }),
    );
    if (!download.content) throw new MaildropError('gone', `message UID ${uid} no longer exists`);
    const content = download.content;
    const counter = new OctetCounter((octets) => this.readWhole.set(index, octets));
    // A download given up part way may leave a FETCH running: that connection is not kept.
    counter.once('close', () => {
      if (!counter.readableEnded) this.interrupted = true;
    });
    // An error of the download reaches the reader; a reader that gives up stops the download.
    content.on('error', (err) => counter.destroy(err));
    counter.once('close', () => {
      if (!content.destroyed) content.destroy();
    });
    return content.pipe(counter);
  }

  async markDeleted(index: number): Promise<void> {
    const uid = this.uidOf(index);
    this.readAhead?.forget(index);
    this.deletedIndexes.add(index);
    if (!this.options.flagOnDele) return;
    const done = await this.step(`flagging UID ${uid}`, () => this.flag([uid]));
    if (!done) throw this.commandFailed(`flagging UID ${uid} \\Deleted`);
  }

  async unmarkDeleted(indexes: readonly number[]): Promise<void> {
    for (const index of indexes) this.deletedIndexes.delete(index);
    const uids = indexes.map((i) => this.uidOf(i)).filter((uid) => this.flaggedByUs.has(uid));
    if (uids.length === 0) return;
    await this.removeFlags(this.client, uids);
    for (const uid of uids) this.flaggedByUs.delete(uid);
  }

  /**
   * RETR delivered the message whole: the octets it counted are the message's true size, which
   * the later sessions' LIST and STAT report (Exchange's RFC822.SIZE is only an estimate). This
   * session's sizes stay as they were (RFC 1939).
   */
  async retrieved(index: number): Promise<void> {
    const uid = this.uidOf(index);
    const octets = this.readWhole.get(index);
    this.readWhole.delete(index);
    if (octets !== undefined && this.uidValidity !== undefined) {
      if (octets !== this.snapshot[index]!.size) this.logger.debug(`UID ${uid}: ${octets} octets delivered, the server reported ${this.snapshot[index]!.size}`);
      if (this.kept !== undefined && learnSize(this.kept, this.uidValidity, uid, octets)) this.learned = true;
      this.cache.learnSize(this.mailboxKey, this.uidValidity, uid, octets);
    }
    if (!this.options.markSeen) return;
    const done = await this.step(`flagging UID ${uid} \\Seen`, () => this.client.messageFlagsAdd(String(uid), [SEEN], { uid: true }));
    if (!done) throw this.commandFailed(`flagging UID ${uid} \\Seen`);
  }

  async commit(indexes: readonly number[]): Promise<void> {
    const uids = indexes.map((i) => this.uidOf(i));
    if (uids.length > 0) await this.remove(uids);
    this.flaggedByUs.clear();
    this.ended = true;
    // The removal is confirmed: the client need not wait for the goodbye with the server too.
    void this.letGo();
  }

  async abandon(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    const uids = [...this.flaggedByUs];
    this.flaggedByUs.clear();
    try {
      if (uids.length > 0) await this.restoreFlags(uids);
    } catch (err) {
      this.interrupted = true;
      throw err;
    } finally {
      // Not waited for: a read-ahead FETCH may still be finishing on this connection.
      void this.letGo();
    }
  }

  /**
   * The session is over: its connection is kept for the next session of this login if the
   * session left it clean (no command cut short, no flag of ours left, nothing running once the
   * read-ahead has finished), else logged out.
   */
  private async letGo(): Promise<void> {
    // The true sizes this session learned reach the other replicas once, now.
    if (this.learned && this.kept !== undefined) this.options.listings?.set(this.mailboxKey, this.kept);
    this.learned = false;
    const client = this.client;
    const pool = this.options.pool;
    if (pool?.enabled && this.stamp !== undefined && !this.interrupted && this.flaggedByUs.size === 0 && client.usable) {
      await this.readAhead?.settled();
      const busy = connectionBusy(client, this.paths);
      if (!this.interrupted && !busy && pool.release(this.mailboxKey, this.stamp, client)) return;
    }
    await this.logout(client);
  }

  /**
   * What QUIT does with the messages deleted in the session, as the delete mode says. A failure
   * part way leaves the flags it stored in flaggedByUs, for abandon() to take back.
   */
  private async remove(uids: number[]): Promise<void> {
    const mode = this.options.deleteMode;
    if (mode.kind === 'expunge') return this.expunge(uids);
    if (mode.kind === 'flag') {
      const done = await this.step('flagging the deleted messages', () => this.flag(uids));
      if (!done) throw this.commandFailed('flagging the deleted messages \\Deleted');
      return;
    }
    // imapflow names folders with the personal namespace's prefix: ask it now if login did not.
    await this.step('reading the namespace', () => ensureNamespace(this.client));
    // Resolved before anything is touched: if there is no such folder, nothing is removed.
    const folder = await this.moveTarget(mode.folder);
    // The copy in the folder must not carry a \Deleted flag the session set at DELE.
    await this.removeFlags(this.client, uids.filter((uid) => this.flaggedByUs.has(uid)));
    const moved = await this.step(`moving to ${folder}`, () => this.client.messageMove(uidSet(uids), folder, { uid: true }));
    if (!moved) throw this.commandFailed(`moving the deleted messages to ${folder}`);
  }

  /**
   * The folder to move to: the name as given, or for a special-use name (`\Trash`, RFC 6154)
   * the folder the server flags with it, looked up now (once, at QUIT, only when something is
   * to be moved). Only the server's own flag counts, never a guess from a folder's name.
   */
  private async moveTarget(folder: string): Promise<string> {
    if (!SPECIAL_USE_NAME.test(folder)) return folder;
    const wanted = folder.toLowerCase();
    const folders = await this.step(`looking up the ${folder} folder`, () => this.client.list());
    const flagged = (entry: ListResponse) => [...(entry.flags ?? [])].some((flag) => flag.toLowerCase() === wanted);
    const found = folders.find((entry) => flagged(entry) && !entry.flags.has('\\NonExistent') && !entry.flags.has('\\Noselect'));
    if (found === undefined) {
      throw new MaildropError('permanent', `no folder on the mail server carries the special-use flag ${folder} (--delete-mode move:${folder}); nothing was removed`);
    }
    this.logger.debug(`--delete-mode move:${folder}: the folder flagged ${folder} is ${found.path}`);
    return found.path;
  }

  /**
   * UID EXPUNGE of exactly these UIDs (imapflow stores \Deleted on them first). A server
   * without UIDPLUS only has plain EXPUNGE, which removes every \Deleted message in the
   * mailbox: it is used only when the flagged messages are all ours; otherwise nothing is
   * expunged and commit fails.
   */
  private async expunge(uids: number[]): Promise<void> {
    if (!this.client.capabilities.has('UIDPLUS')) await this.checkPlainExpungeIsSafe(uids);
    await this.noteFlaggedByUs(uids);
    const done = await this.step('expunging', () => this.client.messageDelete(uidSet(uids), { uid: true }));
    if (!done) throw this.commandFailed('expunging the deleted messages');
  }

  /** Stores \Deleted on these UIDs, noting first which are ours to take back. */
  private async flag(uids: number[]): Promise<boolean> {
    // Noted before the STORE is sent, so that an abandon racing with it still takes it back.
    await this.noteFlaggedByUs(uids);
    return this.client.messageFlagsAdd(uidSet(uids), [DELETED], { uid: true });
  }

  /**
   * Notes which of these UIDs this session is about to flag \Deleted for the first time. If
   * the listing did not tell which messages were flagged already, it is asked now, for these
   * UIDs only: a flag another client set is never taken back.
   */
  private async noteFlaggedByUs(uids: readonly number[]): Promise<void> {
    const unknown = this.flaggedBeforeKnown ? [] : uids.filter((uid) => !this.flaggedBefore.has(uid) && !this.flaggedByUs.has(uid) && !this.checkedFlags.has(uid));
    if (unknown.length > 0) {
      const flagged = await this.searchUids({ uid: uidSet(unknown), deleted: true }, 'listing \\Deleted messages');
      for (const uid of flagged) this.flaggedBefore.add(uid);
      for (const uid of unknown) this.checkedFlags.add(uid);
    }
    for (const uid of uids) if (!this.flaggedBefore.has(uid)) this.flaggedByUs.add(uid);
  }

  private async checkPlainExpungeIsSafe(uids: number[]): Promise<void> {
    const flagged = await this.step('searching \\Deleted messages', () => this.client.search({ deleted: true }, { uid: true }));
    const ours = new Set(uids);
    const foreign = (flagged || []).filter((uid) => !ours.has(uid));
    if (foreign.length > 0) {
      throw new MaildropError(
        'permanent',
        `the mail server lacks UIDPLUS and ${foreign.length} other message(s) are flagged \\Deleted by another client; expunging would remove them too`,
      );
    }
  }

  /** Takes the flags back over this connection, or over a new one if this one is broken. */
  private async restoreFlags(uids: number[]): Promise<void> {
    if (this.client.usable) {
      try {
        await this.removeFlags(this.client, uids);
        return;
      } catch (err) {
        this.interrupted = true;
        this.logger.warn(`Restoring flags on the session connection failed, retrying on a new one: ${(err as Error).message}`);
      }
    }
    const fresh = await connectImap(this.options, this.credentials, this.from, this.logger, { loginDiet: this.paths['login-diet'] });
    try {
      await withTimeout(fresh.mailboxOpen(this.options.mailbox, { readOnly: false }), this.options.timeoutMs, 'opening the mailbox');
      await this.removeFlags(fresh, uids);
    } finally {
      await this.logout(fresh);
    }
  }

  private async removeFlags(client: ImapFlow, uids: number[]): Promise<void> {
    if (uids.length === 0) return;
    const done = await withTimeout(
      client.messageFlagsRemove(uidSet(uids), [DELETED], { uid: true }),
      this.options.timeoutMs,
      'removing \\Deleted flags',
    );
    if (!done) throw this.commandFailed('removing \\Deleted flags', client);
  }

  private async logout(client: ImapFlow): Promise<void> {
    try {
      if (client.usable) await withTimeout(client.logout(), this.options.timeoutMs, 'logout');
    } catch {
      // The session is over either way.
    } finally {
      client.close();
    }
  }

  /**
   * Runs one backend step with the backend timeout, classifying its failure: by the server's
   * RFC 5530 code or known text where it gave one (failure-texts.ts), so that Exchange's
   * "User is authenticated but not connected." right after login counts as a credentials
   * problem and a missing folder as a permanent one; otherwise as temporary.
   */
  private async step<T>(what: string, run: () => Promise<T>): Promise<T> {
    const started = performance.now();
    try {
      return await withTimeout(run(), this.options.timeoutMs, what);
    } catch (err) {
      this.interrupted = true;
      if (err instanceof MaildropError) throw err;
      const message = err instanceof Error ? err.message : String(err);
      const code = (err as { code?: string }).code;
      if (code === 'DownloadIncomplete') throw new MaildropError('gone', `${what}: ${message}`, { cause: err });
      const fatal = !this.client.usable;
      const failure = serverFailureOf(err);
      if (failure !== undefined) {
        const text = (err as { responseText?: unknown }).responseText;
        const said = typeof text === 'string' && text !== '' ? `: ${text}` : '';
        throw new MaildropError(failure.kind, `${what}: the server refused (${failure.reason})${said}`, { cause: err, fatal });
      }
      throw new MaildropError('temporary', `${what}: ${message}`, { cause: err, fatal });
    } finally {
      // UIDs are left out of the step's name: one series per kind of step.
      this.options.onStep?.(what.replace(/ UID \d+/, ''), (performance.now() - started) / 1000);
    }
  }

  private commandFailed(what: string, client: ImapFlow = this.client): MaildropError {
    return new MaildropError('temporary', `${what} failed`, { fatal: !client.usable });
  }

  private get paths(): FastPaths {
    return this.options.fastPaths ?? fastPaths();
  }

  private uidOf(index: number): number {
    const entry = this.snapshot[index];
    if (!entry) throw new RangeError(`message index ${index} is outside the snapshot`);
    return entry.uid;
  }
}
