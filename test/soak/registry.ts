/**
 * Every message the soak delivered: who has it, its Message-ID, its predicted UID and the
 * hashes of what RETR must deliver. Deliveries go one at a time (one queue for all users), so
 * each user's files reach Maildir/new in delivery order and Dovecot numbers them 1, 2, 3, ...
 * in that order (the file names sort by delivery, see test/support/private-server.ts): the
 * index is the UID. The oracle checks that prediction against the store for every message it
 * reads back.
 */
import type { Dovecot } from '../support/dovecot.js';
import { expectedRetr, generate, messageIdOf, sha256, storeForm, type Style } from './messages.js';

export interface Delivered {
  readonly user: string;
  /** 1-based per user; also the UID Dovecot gives it. */
  readonly index: number;
  readonly messageId: string;
  readonly style: Style;
  readonly storeSize: number;
  readonly storeHash: string;
  readonly retrHash: string;
  readonly deliveredAt: number;
  /** What the oracle found when it read the message back over IMAP. */
  learned?: 'match' | 'mismatch' | 'gone';
}

export class MailRegistry {
  private readonly byMessageId = new Map<string, Delivered>();
  private readonly perUser = new Map<string, Delivered[]>();
  /** Removals that a QUIT +OK confirmed, per user: for the top-up estimate only. */
  private readonly committed = new Map<string, number>();
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly seed: number,
    private readonly dovecot: Dovecot,
  ) {}

  /** Delivers the next message of `user` (after every delivery queued before it). */
  deliver(user: string): Promise<Delivered> {
    const next = this.queue.then(() => this.deliverNow(user));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async deliverNow(user: string): Promise<Delivered> {
    const list = this.perUser.get(user) ?? [];
    this.perUser.set(user, list);
    const index = list.length + 1;
    const messageId = messageIdOf(this.seed, user, index);
    const { raw, style } = generate(this.seed, { user, index, messageId });
    const store = storeForm(raw, style);
    await this.dovecot.deliver(user, raw);
    const entry: Delivered = {
      user,
      index,
      messageId,
      style,
      storeSize: store.length,
      storeHash: sha256(store),
      retrHash: sha256(expectedRetr(store)),
      deliveredAt: Date.now(),
    };
    list.push(entry);
    this.byMessageId.set(messageId, entry);
    return entry;
  }

  byId(messageId: string): Delivered | undefined {
    return this.byMessageId.get(messageId);
  }

  byUid(user: string, uid: number): Delivered | undefined {
    return this.perUser.get(user)?.[uid - 1];
  }

  /** The store form of a delivered message, made again from its seed. */
  storeOf(entry: Delivered): Buffer {
    const { raw, style } = generate(this.seed, { user: entry.user, index: entry.index, messageId: entry.messageId });
    return storeForm(raw, style);
  }

  all(): Delivered[] {
    return [...this.byMessageId.values()];
  }

  of(user: string): readonly Delivered[] {
    return this.perUser.get(user) ?? [];
  }

  /** Messages of `user` not yet read back by the oracle. */
  unlearned(user: string): Delivered[] {
    return this.of(user).filter((d) => d.learned === undefined);
  }

  noteCommitted(user: string, count: number): void {
    this.committed.set(user, (this.committed.get(user) ?? 0) + count);
  }

  /** About how many messages the mailbox holds (deliveries minus confirmed removals). */
  estimate(user: string): number {
    return this.of(user).length - (this.committed.get(user) ?? 0);
  }
}
