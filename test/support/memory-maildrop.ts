/**
 * A mail store in memory, for the fast tests: an implementation of the Maildrop contract
 * (src/maildrop/maildrop.ts) with no server behind it. Users have passwords (and optionally
 * bearer tokens); mailboxes hold messages as Buffers. A session's marks live in its maildrop
 * only: the store itself changes at commit() and nowhere else, so a test can tell exactly
 * what QUIT removed.
 *
 * The maildrop is strict where the contract is: a read before open(), an index outside the
 * snapshot or a call after commit() throws a plain Error, which the session treats as a
 * backend failure, so a misuse by the POP3 code shows up in the tests that exercise it.
 *
 * Hooks (MemoryHooks) inject the failures a real store has: a read that fails part way, a
 * commit that fails, a slow authenticate.
 */
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { MaildropError } from '../../src/maildrop/errors.js';
import type { ClientInfo, Credentials, Maildrop, MaildropProvider, MessageEntry, MessageStream } from '../../src/maildrop/maildrop.js';

/** How one read() goes wrong (or is held up). */
export interface ReadFault {
  /** read() itself rejects with this error. */
  readonly reject?: Error;
  /** The stream delivers this many octets, then fails with `error`. */
  readonly failAfter?: number;
  readonly error?: Error;
  /** The stream delivers this many octets, then waits for `resume` before the rest. */
  readonly pauseAfter?: number;
  readonly resume?: Promise<void>;
}

/** Failures to inject, read at the moment of each call (tests may change them mid-session). */
export interface MemoryHooks {
  /** authenticate() waits this long before answering. */
  authenticateDelayMs?: number;
  /** authenticate() rejects with this (after the delay), whatever the credentials. */
  authenticateError?: Error;
  openError?: Error;
  readFault?: (index: number, uidl: string) => ReadFault | undefined;
  markDeletedError?: Error;
  unmarkDeletedError?: Error;
  /** commit() rejects with this and removes nothing. */
  commitError?: Error;
  /** abandon() rejects with this (the session logs it; nothing changes in the store). */
  abandonError?: Error;
}

export interface MemoryStoreOptions {
  /** Octets per chunk of a read() stream; the default sends a message in one chunk. */
  readonly chunkSize?: number;
  /** Chunks arrive one per event-loop turn rather than all at once (a store still sending). */
  readonly trickle?: boolean;
}

interface StoredMessage {
  readonly uidl: string;
  readonly bytes: Buffer;
}

interface Account {
  readonly password: string;
  readonly tokens: ReadonlySet<string>;
  readonly messages: StoredMessage[];
}

/** What happened at the store, in order, for tests to assert on. */
export type StoreEvent =
  | { readonly kind: 'authenticate'; readonly user: string; readonly ok: boolean }
  | { readonly kind: 'open' | 'abandon'; readonly user: string }
  | { readonly kind: 'retrieved' | 'markDeleted'; readonly user: string; readonly index: number }
  | { readonly kind: 'unmarkDeleted' | 'commit'; readonly user: string; readonly indexes: readonly number[] };

/** A message's bytes: strings get CRLF line ends; Buffers are kept exactly as given. */
function messageBytes(message: string | Buffer): Buffer {
  return typeof message === 'string' ? Buffer.from(message.replace(/\r?\n/g, '\r\n'), 'latin1') : Buffer.from(message);
}

export class MemoryStore implements MaildropProvider {
  readonly hooks: MemoryHooks = {};
  readonly events: StoreEvent[] = [];
  /** Maildrops handed out and neither committed nor abandoned: a session still holds them. */
  readonly live = new Set<MemoryMaildrop>();
  private readonly accounts = new Map<string, Account>();
  private nextUid = 1;

  constructor(readonly options: MemoryStoreOptions = {}) {}

  addUser(name: string, password: string, tokens: readonly string[] = []): this {
    this.accounts.set(name, { password, tokens: new Set(tokens), messages: [] });
    return this;
  }

  /** Adds a message to the user's mailbox; returns its UIDL. */
  deliver(user: string, message: string | Buffer): string {
    const uidl = `uid-${String(this.nextUid++).padStart(6, '0')}`;
    this.account(user).messages.push({ uidl, bytes: messageBytes(message) });
    return uidl;
  }

  /** The mailbox as the store holds it now. */
  messages(user: string): Buffer[] {
    return this.account(user).messages.map((m) => m.bytes);
  }

  uidls(user: string): string[] {
    return this.account(user).messages.map((m) => m.uidl);
  }

  /** Removes a message behind the session's back (another client expunged it). */
  remove(user: string, uidl: string): void {
    const messages = this.account(user).messages;
    const at = messages.findIndex((m) => m.uidl === uidl);
    if (at >= 0) messages.splice(at, 1);
  }

  /** The events of one kind, in order. */
  eventsOf<K extends StoreEvent['kind']>(kind: K): (StoreEvent & { kind: K })[] {
    return this.events.filter((e): e is StoreEvent & { kind: K } => e.kind === kind);
  }

  async authenticate(credentials: Credentials, _client: ClientInfo): Promise<Maildrop> {
    if (this.hooks.authenticateDelayMs) await sleep(this.hooks.authenticateDelayMs);
    if (this.hooks.authenticateError) throw this.hooks.authenticateError;
    const account = this.accounts.get(credentials.user);
    const ok = account !== undefined && ('password' in credentials ? credentials.password === account.password : account.tokens.has(credentials.accessToken));
    this.events.push({ kind: 'authenticate', user: credentials.user, ok });
    // One answer for a wrong user and a wrong password, as a real store gives.
    if (!ok) throw new MaildropError('credentials', 'Authentication failed');
    const maildrop = new MemoryMaildrop(this, credentials.user, account.messages);
    this.live.add(maildrop);
    return maildrop;
  }

  /** For MemoryMaildrop: removes exactly these stored messages. */
  expunge(user: string, doomed: ReadonlySet<StoredMessage>): void {
    const messages = this.account(user).messages;
    const kept = messages.filter((m) => !doomed.has(m));
    messages.splice(0, messages.length, ...kept);
  }

  /** For MemoryMaildrop: whether the store still has this message. */
  holds(user: string, message: StoredMessage): boolean {
    return this.account(user).messages.includes(message);
  }

  private account(user: string): Account {
    const account = this.accounts.get(user);
    if (account === undefined) throw new Error(`no user ${user} in the memory store`);
    return account;
  }
}

type Phase = 'authenticated' | 'open' | 'committed' | 'abandoned';

export class MemoryMaildrop implements Maildrop {
  readonly mailboxKey: string;
  private phase: Phase = 'authenticated';
  private snapshot: readonly StoredMessage[] = [];
  /** Marks set by this session, by snapshot index: the store is not touched until commit(). */
  readonly marks = new Set<number>();

  constructor(
    private readonly store: MemoryStore,
    readonly user: string,
    private readonly mailbox: readonly StoredMessage[],
  ) {
    this.mailboxKey = `memory:${user}`;
  }

  async open(): Promise<readonly MessageEntry[]> {
    this.expect('authenticated', 'open');
    if (this.store.hooks.openError) throw this.store.hooks.openError;
    this.phase = 'open';
    // A copy: messages delivered or removed later are not this session's business.
    this.snapshot = [...this.mailbox];
    this.store.events.push({ kind: 'open', user: this.user });
    return this.snapshot.map((m) => ({ size: m.bytes.length, uidl: m.uidl }));
  }

  async read(index: number): Promise<MessageStream> {
    const message = this.at(index, 'read');
    const fault = this.store.hooks.readFault?.(index, message.uidl);
    if (fault?.reject) throw fault.reject;
    if (!this.store.holds(this.user, message)) throw new MaildropError('gone', `message ${index + 1} is no longer in the store`);
    return new MemoryMessageStream(message.bytes, this.store.options, fault);
  }

  async retrieved(index: number): Promise<void> {
    this.at(index, 'retrieved');
    this.store.events.push({ kind: 'retrieved', user: this.user, index });
  }

  async markDeleted(index: number): Promise<void> {
    this.at(index, 'markDeleted');
    if (this.store.hooks.markDeletedError) throw this.store.hooks.markDeletedError;
    this.marks.add(index);
    this.store.events.push({ kind: 'markDeleted', user: this.user, index });
  }

  async unmarkDeleted(indexes: readonly number[]): Promise<void> {
    for (const index of indexes) this.at(index, 'unmarkDeleted');
    if (this.store.hooks.unmarkDeletedError) throw this.store.hooks.unmarkDeletedError;
    for (const index of indexes) this.marks.delete(index);
    this.store.events.push({ kind: 'unmarkDeleted', user: this.user, indexes: [...indexes] });
  }

  async commit(indexes: readonly number[]): Promise<void> {
    for (const index of indexes) this.at(index, 'commit');
    this.store.events.push({ kind: 'commit', user: this.user, indexes: [...indexes] });
    if (this.store.hooks.commitError) throw this.store.hooks.commitError;
    this.phase = 'committed';
    this.store.live.delete(this);
    this.marks.clear();
    this.store.expunge(this.user, new Set(indexes.map((i) => this.snapshot[i]!)));
  }

  async abandon(): Promise<void> {
    // Safe at any point and again: after commit() there is nothing left to take back.
    if (this.phase === 'committed' || this.phase === 'abandoned') return;
    this.store.events.push({ kind: 'abandon', user: this.user });
    if (this.store.hooks.abandonError) throw this.store.hooks.abandonError;
    this.phase = 'abandoned';
    this.store.live.delete(this);
    this.marks.clear();
  }

  private expect(phase: Phase, what: string): void {
    if (this.phase !== phase) throw new Error(`${what}() on a maildrop that is ${this.phase}`);
  }

  private at(index: number, what: string): StoredMessage {
    this.expect('open', what);
    const message = this.snapshot[index];
    if (!Number.isInteger(index) || message === undefined) throw new Error(`${what}(${index}) outside the snapshot of ${this.snapshot.length}`);
    return message;
  }
}

/**
 * A message as the store sends it, in chunks. `arrived` turns true once the last chunk has
 * been handed over (pushed), as the contract has it, before the reader has taken it.
 */
export class MemoryMessageStream extends Readable implements MessageStream {
  arrived = false;
  private offset = 0;
  private waiting = false;

  constructor(
    private readonly bytes: Buffer,
    private readonly options: MemoryStoreOptions,
    private fault: ReadFault | undefined,
  ) {
    super();
  }

  override _read(): void {
    if (this.waiting) return;
    if (this.options.trickle) {
      this.waiting = true;
      setImmediate(() => this.next());
    } else {
      this.next();
    }
  }

  /** Pushes the next chunk, stopping at a fault's offset. */
  private next(): void {
    this.waiting = false;
    if (this.destroyed) return;
    const fault = this.fault;
    const stopAt = fault?.failAfter ?? fault?.pauseAfter;
    const end = Math.min(this.bytes.length, this.offset + (this.options.chunkSize ?? this.bytes.length), stopAt ?? Infinity);
    if (end > this.offset) {
      const chunk = this.bytes.subarray(this.offset, end);
      this.offset = end;
      if (this.offset === this.bytes.length && stopAt === undefined) this.finish(chunk);
      else this.push(chunk);
      return;
    }
    if (fault?.failAfter !== undefined) return void this.destroy(fault.error ?? new MaildropError('temporary', 'the store stopped sending', { fatal: true }));
    if (fault?.pauseAfter !== undefined && fault.resume) return this.resumeLater(fault.resume);
    this.finish(undefined);
  }

  private finish(last: Buffer | undefined): void {
    this.arrived = true;
    if (last !== undefined) this.push(last);
    this.push(null);
  }

  /** After a pause the stream goes on as one without a fault. */
  private resumeLater(resume: Promise<void>): void {
    this.waiting = true;
    void resume.then(() => {
      this.fault = undefined;
      this.next();
    });
  }
}
