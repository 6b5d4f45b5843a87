/**
 * Reading the session's messages, each the cheapest way it can be read whole: a small one
 * through the read-ahead (many fetched in one FETCH, ahead of the client), a large one in
 * windows (large-message.ts), and where the connection has no literal tap, with imapflow's
 * download. Every stream says when its body has fully arrived (MessageStream), and its octets
 * are counted on the way: once a message has gone through whole, that is its true size.
 *
 * A stream given up part way, or one that stalls past the backend timeout, leaves the rest of
 * its FETCH on the connection: the connection is then marked interrupted and never kept.
 */
import { Transform, type TransformCallback } from 'node:stream';
import type { ImapFlow } from 'imapflow';
import { MaildropError } from '../maildrop/errors.js';
import type { MessageStream } from '../maildrop/maildrop.js';
import type { BackendSteps } from './backend-step.js';
import { LargeMessages } from './large-message.js';
import { ReadAhead, type ReadAheadMessage } from './read-ahead.js';

export interface ReaderOptions {
  /** Longest wait for a message's body to arrive whole once it has started. */
  readonly timeoutMs: number;
  /** Bytes asked for per FETCH while streaming a large message. */
  readonly chunkSize: number;
  /** Whether the literal tap may be used (it fits the installed imapflow: fast-paths.ts). */
  readonly tapAllowed: boolean;
}

/** Passes a message through, counting its octets; tells the count once the stream ended whole. */
class OctetCounter extends Transform implements MessageStream {
  /** All of the message has come through from the download (some may still be buffered here). */
  arrived = false;
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
    this.arrived = true;
    done();
  }
}

export class MessageReader {
  private readonly readAhead: ReadAhead;
  private readonly large: LargeMessages;
  /** Octets of the messages read whole in this session, by index: their true sizes. */
  private readonly readWhole = new Map<number, number>();

  constructor(
    private readonly client: ImapFlow,
    private readonly messages: readonly ReadAheadMessage[],
    /** Messages the client can no longer read (deleted in this session). */
    skip: (index: number) => boolean,
    /** Told when a stream is cut short or stalls: the connection is not to be kept. */
    private readonly connection: { interrupt(): void },
    private readonly steps: BackendSteps,
    private readonly options: ReaderOptions,
  ) {
    this.readAhead = new ReadAhead(client, messages, skip, options.tapAllowed);
    this.large = new LargeMessages(client, options.tapAllowed);
  }

  /** The message at `index` (of UID `uid`), as its bytes come; fails with 'gone' if the server no longer has it. */
  async read(index: number, uid: number): Promise<MessageStream> {
    const readAhead = this.readAhead;
    if (!readAhead.handles(index)) {
      readAhead.passed(index);
      return this.stream(index, uid);
    }
    const body = await this.steps.run(`fetching message UID ${uid}`, () => readAhead.take(index));
    if (body === undefined) throw new MaildropError('gone', `message UID ${uid} no longer exists`);
    // Its size is the literal's: only a stream that ended whole leads to retrieved().
    this.readWhole.set(index, body.size);
    const { stream } = body;
    if (stream.arrived) return stream;
    // The body is still arriving: it gets the backend timeout, as a whole message did before.
    const timer = setTimeout(() => {
      this.connection.interrupt();
      const late = `fetching message UID ${uid} timed out after ${this.options.timeoutMs / 1000} s`;
      stream.destroy(new MaildropError('temporary', late, { fatal: true }));
    }, this.options.timeoutMs);
    stream.once('arrived', () => clearTimeout(timer));
    stream.once('close', () => clearTimeout(timer));
    return stream;
  }

  /** The client deleted this message: what was fetched ahead for it is dropped. */
  forget(index: number): void {
    this.readAhead.forget(index);
  }

  /** The octets of this message if it was read whole (its true size), told once; else undefined. */
  takeOctets(index: number): number | undefined {
    const octets = this.readWhole.get(index);
    this.readWhole.delete(index);
    return octets;
  }

  /** Resolves once no FETCH of a message is running on the connection. */
  async settled(): Promise<void> {
    await this.readAhead.settled();
    await this.large.settled();
  }

  /**
   * A large message, fetched in windows and never held whole: streamed as the windows arrive,
   * the backend socket read only as fast as the client takes it (see LargeMessages); where the
   * connection has no literal tap, with imapflow's download.
   */
  private async stream(index: number, uid: number): Promise<MessageStream> {
    const windows = this.large.fetch(uid, this.messages[index].size, this.options.chunkSize);
    if (windows === undefined) return this.download(index, uid);
    const body = await this.steps.run(`fetching message UID ${uid}`, () => windows);
    if (body === undefined) throw new MaildropError('gone', `message UID ${uid} no longer exists`);
    const { stream } = body;
    stream.once('end', () => this.readWhole.set(index, stream.received));
    // Given up part way: the rest is still read from the connection, which is not kept.
    stream.once('close', () => {
      if (!stream.readableEnded) this.connection.interrupt();
    });
    return stream;
  }

  /** imapflow's download, in FETCHes of chunkSize octets; its octets counted as they pass. */
  private async download(index: number, uid: number): Promise<MessageStream> {
    const download = await this.steps.run(`fetching message UID ${uid}`, () =>
      this.client.download(String(uid), undefined, { uid: true, chunkSize: this.options.chunkSize }),
    );
    if (!download.content) throw new MaildropError('gone', `message UID ${uid} no longer exists`);
    const content = download.content;
    const counter = new OctetCounter((octets) => this.readWhole.set(index, octets));
    // A download given up part way may leave a FETCH running: that connection is not kept.
    counter.once('close', () => {
      if (!counter.readableEnded) this.connection.interrupt();
    });
    // An error of the download reaches the reader; a reader that gives up stops the download.
    content.on('error', (err) => counter.destroy(err));
    counter.once('close', () => {
      if (!content.destroyed) content.destroy();
    });
    return content.pipe(counter);
  }
}
