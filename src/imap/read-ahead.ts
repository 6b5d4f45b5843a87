/**
 * Reading small messages ahead of the client. POP3 clients walk the maildrop in order, and one
 * FETCH per message costs a round trip and imapflow's per-command work each time; a FETCH of
 * many messages at once costs that once. So when reads come in order, the next small messages
 * are fetched together, ahead of time, within a byte budget that bounds the memory a session
 * can hold. Large messages are never read ahead: large-message.ts streams one in windows.
 *
 * Where the connection allows it (see LiteralTap), the bodies are taken out of the response
 * stream as they arrive and handed on in the socket's own chunks, without imapflow assembling
 * them; a message can be read as soon as its body starts to arrive.
 */
import type { ImapFlow } from 'imapflow';
import { BodyStream, LiteralTap, type MessageBody } from './literal-tap.js';
import type { BodyTarget } from './literal-splitter.js';
import { uidSet } from './uid-set.js';

/** Messages up to this size may be held whole in memory while waiting to be read. */
export const SMALL_MESSAGE = 256 * 1024;
/** Bytes fetched ahead of the client per session. */
const AHEAD_BYTES = 4 * 1024 * 1024;
/**
 * Bytes asked for per FETCH once the walk is under way: refills are queued as the client takes
 * messages, so the IMAP connection never waits for us.
 */
const BATCH_BYTES = AHEAD_BYTES / 4;
/** Messages per FETCH, so that a mailbox of tiny messages does not build huge commands. */
const AHEAD_MESSAGES = 500;

/** `last` before the first read. */
const NO_READ = -2;

export interface ReadAheadMessage {
  readonly uid: number;
  readonly size: number;
}

interface Pending {
  readonly body: Promise<MessageBody | undefined>;
  readonly size: number;
}

interface Waiting {
  resolve(body: MessageBody | undefined): void;
  reject(err: unknown): void;
}

export class ReadAhead {
  private readonly pending = new Map<number, Pending>();
  /** Bytes requested and not yet taken. */
  private aheadBytes = 0;
  /** The first index not yet requested. */
  private next = 0;
  /** FETCHes not yet finished. */
  private readonly running = new Set<Promise<void>>();
  /** The index read last, to tell a walk in order from a jump. */
  private last = NO_READ;
  /**
   * Takes the bodies out of the response stream; undefined where imapflow handles them. It goes
   * in at the first FETCH that finds the connection idle (see LiteralTap.of).
   */
  private tap: LiteralTap | undefined;

  constructor(
    private readonly client: ImapFlow,
    private readonly messages: readonly ReadAheadMessage[],
    /** Messages the client can no longer read (deleted in this session). */
    private readonly skip: (index: number) => boolean,
    /** Whether the literal tap may be used (it fits the installed imapflow: fast-paths.ts). */
    private readonly tapAllowed: boolean,
  ) {}

  /** Whether `index` is small enough to be read through here. */
  handles(index: number): boolean {
    return this.messages[index].size <= SMALL_MESSAGE;
  }

  /**
   * The message, once its body starts to arrive (its stream errors if the connection is cut
   * before the end), or undefined if the server no longer has it.
   */
  take(index: number): Promise<MessageBody | undefined> {
    // The session's first read starts a walk too: most clients read on from there (a client
    // that reads only one message lets up to the budget be fetched for nothing).
    const inOrder = index === this.last + 1 || this.last === NO_READ;
    this.last = index;
    if (!this.pending.has(index)) {
      this.forgetAll();
      // A walk in order starts with the whole budget in one FETCH: each command costs a round
      // trip, which over a WAN is worth more than the batches' overlap on a LAN.
      this.request(index, inOrder ? AHEAD_BYTES : 0);
    }
    const taken = this.pending.get(index)!;
    this.pending.delete(index);
    this.aheadBytes -= taken.size;
    // Keep the budget full in batches, so that neither the client nor the server waits.
    while (inOrder && this.aheadBytes + BATCH_BYTES <= AHEAD_BYTES && this.request(this.next, BATCH_BYTES));
    return taken.body;
  }

  /** Notes a read that did not go through here (a large message) as the walk's position. */
  passed(index: number): void {
    if (index !== this.last + 1) this.forgetAll();
    this.last = index;
    this.next = Math.max(this.next, index + 1);
  }

  /** Drops what was fetched for a message the client can no longer read. */
  forget(index: number): void {
    const dropped = this.pending.get(index);
    if (dropped === undefined) return;
    this.pending.delete(index);
    this.aheadBytes -= dropped.size;
  }

  private forgetAll(): void {
    this.pending.clear();
    this.aheadBytes = 0;
  }

  /**
   * Starts one FETCH for the small messages from `from` on, up to `budget` bytes (at least one).
   * Returns false when there was nothing (small) left to ask for.
   */
  private request(from: number, budget: number): boolean {
    const batch = new Map<number, Waiting>();
    let bytes = 0;
    let index = from;
    for (; index < this.messages.length && batch.size < AHEAD_MESSAGES; index++) {
      if (this.skip(index)) continue;
      const { uid, size } = this.messages[index];
      if (size > SMALL_MESSAGE || (batch.size > 0 && bytes + size > budget)) break;
      let settle!: Waiting;
      const body = new Promise<MessageBody | undefined>((resolve, reject) => (settle = { resolve, reject }));
      // A message fetched ahead may never be taken: its failure must not go unhandled.
      body.catch(() => undefined);
      this.pending.set(index, { body, size });
      batch.set(uid, settle);
      bytes += size;
    }
    if (batch.size === 0) return false;
    this.next = index;
    this.aheadBytes += bytes;
    const running = this.fetch(batch);
    this.running.add(running);
    void running.finally(() => this.running.delete(running));
    return true;
  }

  private tapOf(): LiteralTap | undefined {
    if (this.tapAllowed) this.tap ??= LiteralTap.of(this.client);
    return this.tap;
  }

  /** Resolves once no FETCH of this read-ahead is running (they never reject). */
  async settled(): Promise<void> {
    while (this.running.size > 0) await Promise.all([...this.running]);
  }

  /** One FETCH of these UIDs' bodies. */
  private async fetch(batch: Map<number, Waiting>): Promise<void> {
    const uids = [...batch.keys()];
    const tap = this.tapOf();
    const claims = new Map<number, (size: number) => BodyTarget>();
    if (tap !== undefined) {
      for (const [uid, waiting] of batch) {
        const start = (size: number) => {
          const stream = new BodyStream(size);
          batch.delete(uid);
          waiting.resolve({ stream, size });
          return stream.target();
        };
        claims.set(uid, start);
        tap.claim(uid, start);
      }
    }
    try {
      // Nothing else is awaited inside the loop: imapflow runs no other command until it ends.
      for await (const message of this.client.fetch(uidSet(uids), { uid: true, source: true }, { uid: true })) {
        // The rows the tap took never come here. A message expunged under this session may
        // come back without a body (BODY[] NIL), and a row may carry only flags.
        const source = message.source;
        if (!Buffer.isBuffer(source)) continue;
        const waiting = batch.get(message.uid);
        if (waiting === undefined) continue;
        const stream = new BodyStream(source.length);
        const target = stream.target();
        target.push(source);
        target.end();
        waiting.resolve({ stream, size: source.length });
        batch.delete(message.uid);
      }
      for (const waiting of batch.values()) waiting.resolve(undefined);
    } catch (err) {
      for (const waiting of batch.values()) waiting.reject(err);
    } finally {
      for (const [uid, start] of claims) tap?.release(uid, start);
    }
  }
}
