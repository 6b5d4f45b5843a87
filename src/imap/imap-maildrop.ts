/**
 * The Maildrop contract over an IMAP mailbox (imapflow). Message identity is the UID; the
 * snapshot is taken once, right after login. Commit removes exactly the UIDs it is given (UID
 * EXPUNGE), never other messages that carry \Deleted.
 *
 * Deletion marks live in the session and reach the store only at commit, as in Dovecot's own
 * POP3: a session that ends any other way, even by the process being killed, leaves no trace.
 * With `flagOnDele` they are the \Deleted flag, stored at once and taken back on every end but
 * a successful commit; never on a server that expunges flagged mail at once (Gmail).
 *
 * This module puts the parts together, each with one job: the connection's life
 * (backend-connection.ts), the listing (listing-sync.ts), reading messages (message-reader.ts),
 * what the session flagged (deletion-ledger.ts, deleted-flags.ts), the commit
 * (commit-strategies.ts) and the classification of failures (backend-step.ts).
 */
import { MaildropError } from '../maildrop/errors.js';
import type { ImapFlow } from 'imapflow';
import type { Logger } from 'winston';
import type {
  ClientInfo,
  Credentials,
  Maildrop,
  MaildropProvider,
  MessageEntry,
  MessageStream,
} from '../maildrop/maildrop.js';
import { BackendConnection, openConnection, type ConnectionOptions } from './backend-connection.js';
import { BackendSteps } from './backend-step.js';
import { BackoffError, BackoffRegistry } from './backoff.js';
import { commitDeletions, type DeleteMode } from './commit-strategies.js';
import { DeletedFlags } from './deleted-flags.js';
import { DeletionLedger } from './deletion-ledger.js';
import type { ImapSettings } from './imap-client.js';
import type { SharedListings } from './listing-store.js';
import { ListingSync, selectedState } from './listing-sync.js';
import { MessageReader } from './message-reader.js';
import { SnapshotCache } from './snapshot-cache.js';
import { searchUids } from './uid-search.js';
import { uidSet } from './uid-set.js';
import type { UidlFormatter } from './uidl-format.js';

export type { DeleteMode } from './commit-strategies.js';

const SEEN = '\\Seen';

export interface ImapBackendOptions extends ConnectionOptions {
  readonly uidl: UidlFormatter;
  /** Bytes asked for per FETCH while streaming a message. */
  readonly chunkSize: number;
  /** Messages whose UID and size are kept between sessions, over all mailboxes. */
  readonly cacheMessages: number;
  /** Serve only the newest this many messages; undefined for all. */
  readonly maxMessages: number | undefined;
  /** Which messages a session lists: all, or those without \Seen (keep-on-server pollers). */
  readonly listing?: 'all' | 'unseen';
  /** Set \Seen on a message once RETR delivered it whole. */
  readonly markSeen: boolean;
  /** What QUIT does with the deleted messages. */
  readonly deleteMode: DeleteMode;
  /** Store \Deleted at DELE rather than at commit, where the server allows it safely. */
  readonly flagOnDele: boolean;
  /** The kept listings shared by the replicas (--redis); without it each process keeps its own. */
  readonly listings?: SharedListings;
}

/** Identifies one mailbox of one user on one server: the same for every login to it. */
export function mailboxKeyOf(options: Pick<ImapSettings, 'host' | 'port' | 'mailbox'>, user: string): string {
  const normalized = user.trim().toLowerCase();
  const path = `${encodeURIComponent(normalized)}/${encodeURIComponent(options.mailbox)}`;
  return `imap://${options.host}:${options.port}/${path}`;
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
    // A folder the login names is this session's mailbox: its lock, listing and LOGIN-DELAY too.
    const folder = credentials.folder;
    const base = folder === undefined ? this.options : { ...this.options, mailbox: folder };
    const key = mailboxKeyOf(base, credentials.user);
    const wait = this.backoff.remaining(key);
    if (wait > 0) throw new BackoffError(wait);
    const login = { credentials, from, mailboxKey: key };
    const connection = await openConnection(base, login, this.logger, (ms) => this.backoff.backOff(key, ms));
    const options = { ...base, flagOnDele: this.flagOnDele(connection.client) };
    return new ImapMaildrop(connection, options, this.cache, this.logger, folder);
  }

  /**
   * Gmail (X-GM-EXT-1) expunges a message as soon as it is flagged \Deleted ("Auto-Expunge",
   * on by default): a flag stored at DELE could not be taken back by RSET or an abandoned session.
   */
  private flagOnDele(client: ImapFlow): boolean {
    if (!this.options.flagOnDele || !client.capabilities.has('X-GM-EXT-1')) return this.options.flagOnDele;
    if (!this.fallbackLogged) {
      this.fallbackLogged = true;
      this.logger.warn(
        '--flag-on-dele ignored: this server (X-GM-EXT-1, Gmail) expunges flagged messages at once; ' +
          '\\Deleted is stored at QUIT',
      );
    }
    return false;
  }
}

interface SnapshotEntry extends MessageEntry {
  readonly uid: number;
}

export class ImapMaildrop implements Maildrop {
  readonly mailboxKey: string;
  private snapshot: SnapshotEntry[] = [];
  private reader: MessageReader | undefined;
  /** Indexes the client deleted in this session: no longer worth reading ahead. */
  private readonly deletedIndexes = new Set<number>();
  private readonly ledger = new DeletionLedger();
  private readonly steps: BackendSteps;
  private readonly flags: DeletedFlags;
  private readonly listing: ListingSync;
  private ended = false;

  constructor(
    private readonly connection: BackendConnection,
    private readonly options: ImapBackendOptions,
    cache: SnapshotCache,
    private readonly logger: Logger,
    /** The folder the client's login named, if it named one. */
    private readonly requestedFolder?: string,
  ) {
    this.mailboxKey = connection.mailboxKey;
    this.steps = new BackendSteps(options, connection);
    this.flags = new DeletedFlags(connection, this.steps, this.ledger, options.timeoutMs, logger);
    this.listing = new ListingSync(connection, this.steps, cache, options.listings, this.mailboxKey, logger);
  }

  /**
   * Opens the mailbox. On a kept connection that SELECT is also the check that it still works;
   * if the server closed it meanwhile, the session logs in afresh instead.
   */
  open(): Promise<readonly MessageEntry[]> {
    return this.connection.open(() => this.openMailbox());
  }

  private async openMailbox(): Promise<readonly MessageEntry[]> {
    const client = this.connection.client;
    const name = this.options.mailbox;
    const mailbox = await this.steps
      .run('opening the mailbox', () => client.mailboxOpen(name, { readOnly: false }))
      .catch((err: unknown) => this.folderFailure(err));
    const state = selectedState(mailbox, name);
    const listing = await this.listing.load(state);
    const unseen = this.options.listing === 'unseen' && listing.uids.length > 0 ? await this.unseenUids() : undefined;
    const uidValidity = Number(state.uidValidity);
    const entries: SnapshotEntry[] = [];
    for (let i = 0; i < listing.uids.length; i++) {
      const uid = listing.uids[i];
      if (unseen !== undefined && !unseen.has(uid)) continue;
      entries.push({ uid, size: listing.sizes[i], uidl: this.options.uidl(uid, uidValidity) });
    }
    // The newest messages have the highest UIDs.
    entries.splice(0, Math.max(0, entries.length - (this.options.maxMessages ?? entries.length)));
    this.ledger.listed(
      entries.map((entry) => entry.uid),
      listing.deleted,
    );
    this.snapshot = entries;
    const skip = (index: number) => this.deletedIndexes.has(index);
    const { timeoutMs, chunkSize } = this.options;
    const reading = { timeoutMs, chunkSize, tapAllowed: this.connection.paths['literal-tap'] };
    this.reader = new MessageReader(client, entries, skip, this.connection, this.steps, reading);
    return entries;
  }

  /** --listing unseen: the messages without \Seen now (one UID SEARCH; the listing keeps the rest). */
  private async unseenUids(): Promise<Set<number>> {
    return new Set(await searchUids(this.connection.client, this.steps, { seen: false }, 'listing unseen messages'));
  }

  /** A folder the client named and the server does not have: the client may hear its name. */
  private folderFailure(err: unknown): never {
    const folder = this.requestedFolder;
    if (folder === undefined || !(err instanceof MaildropError) || err.kind !== 'permanent') throw err;
    throw new MaildropError('permanent', err.message, {
      cause: err,
      clientText: `No folder ${folder} in this mailbox.`,
    });
  }

  async read(index: number): Promise<MessageStream> {
    const uid = this.uidOf(index);
    return this.reader!.read(index, uid);
  }

  async markDeleted(index: number): Promise<void> {
    const uid = this.uidOf(index);
    this.reader?.forget(index);
    this.deletedIndexes.add(index);
    if (!this.options.flagOnDele) return;
    const done = await this.steps.run(`flagging UID ${uid}`, () => this.flags.flag([uid]));
    if (!done) throw this.steps.failed(`flagging UID ${uid} \\Deleted`);
  }

  async unmarkDeleted(indexes: readonly number[]): Promise<void> {
    for (const index of indexes) this.deletedIndexes.delete(index);
    await this.flags.takeBack(indexes.map((i) => this.uidOf(i)));
  }

  /**
   * RETR delivered the message whole: the octets it counted are the message's true size, which
   * the later sessions' LIST and STAT report (Exchange's RFC822.SIZE is only an estimate). This
   * session's sizes stay as they were (RFC 1939).
   */
  async retrieved(index: number): Promise<void> {
    const uid = this.uidOf(index);
    const octets = this.reader?.takeOctets(index);
    if (octets !== undefined) {
      const reported = this.snapshot[index].size;
      if (octets !== reported) {
        this.logger.debug(`UID ${uid}: ${octets} octets delivered, the server reported ${reported}`);
      }
      this.listing.learnSize(uid, octets);
    }
    if (!this.options.markSeen) return;
    const client = this.connection.client;
    const done = await this.steps.run(`flagging UID ${uid} \\Seen`, () =>
      client.messageFlagsAdd(String(uid), [SEEN], { uid: true }),
    );
    if (!done) throw this.steps.failed(`flagging UID ${uid} \\Seen`);
  }

  async commit(indexes: readonly number[]): Promise<void> {
    const uids = indexes.map((i) => this.uidOf(i));
    if (uids.length > 0) {
      const { steps, flags, ledger, logger } = this;
      const session = { client: this.connection.client, steps, flags, ledger, logger };
      await commitDeletions(this.options.deleteMode, uids, session).catch((err: unknown) =>
        this.afterFailedCommit(uids, err),
      );
    }
    this.ledger.clear();
    this.ended = true;
    // The removal is confirmed: the client need not wait for the goodbye with the server too.
    void this.letGo();
  }

  /**
   * A removal that failed may still have happened: the connection can die after the server ran
   * the UID EXPUNGE or MOVE and before its answer came. The store is asked over a fresh
   * connection, so that QUIT never says "nothing was deleted" of mail that is gone: all gone is
   * a commit (resolves); all there is the failure it was; some of each is said as it is.
   */
  private async afterFailedCommit(uids: number[], err: unknown): Promise<void> {
    const mode = this.options.deleteMode.kind;
    if (mode !== 'expunge' && mode !== 'move') throw err;
    let left: number[];
    try {
      left = await this.connection.withFresh(async (fresh) => [
        ...((await fresh.search({ uid: uidSet(uids) }, { uid: true })) || []),
      ]);
    } catch {
      throw err;
    }
    if (left.length === uids.length) throw err;
    const gone = uids.length - left.length;
    this.logger.warn(
      `The removal failed (${(err as Error).message}), yet ${gone} of the ${uids.length} messages are gone`,
    );
    if (left.length === 0) return;
    // The flags of the removed ones went with them; those left keep theirs for abandon to take back.
    this.ledger.forget(uids.filter((uid) => !left.includes(uid)));
    throw new MaildropError('temporary', `only ${gone} of the ${uids.length} deleted messages were removed`, {
      cause: err,
      clientText: `Only ${gone} of the ${uids.length} deleted messages were removed; try again later.`,
    });
  }

  async abandon(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    const uids = this.ledger.takeAll();
    try {
      if (uids.length > 0) await this.flags.restore(uids);
    } catch (err) {
      this.connection.interrupt();
      throw err;
    } finally {
      // Not waited for: a read-ahead FETCH may still be finishing on this connection.
      void this.letGo();
    }
  }

  /**
   * The session is over: the true sizes it learned are shared, and its connection is kept for
   * the next session of this login if the session left no flag of its own behind (see
   * BackendConnection.letGo), else logged out.
   */
  private async letGo(): Promise<void> {
    this.listing.share();
    await this.connection.letGo(this.ledger.size === 0, async () => this.reader?.settled());
  }

  private uidOf(index: number): number {
    const entry = this.snapshot[index];
    if (!entry) throw new RangeError(`message index ${index} is outside the snapshot`);
    return entry.uid;
  }
}
