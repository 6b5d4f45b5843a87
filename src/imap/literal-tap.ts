/**
 * The message bodies of a bulk FETCH, streamed as they arrive. imapflow parses the server's
 * bytes in its response streamer (a Transform the socket is piped into, after TLS); the tap
 * sits at that streamer's input, on the same connection: a ResponseSplitter takes the claimed
 * `BODY[]` literals out and every other byte goes on to imapflow's own parser, unchanged and in
 * order. imapflow keeps sending the commands, tagging them, queueing the session's other
 * commands behind the FETCH and handling every other response; it sees the FETCH complete
 * with the rows it was not given. Nothing is taken from or written to the socket beside it.
 *
 * The tap goes in only where the streamer stands between two responses, with nothing queued
 * (see clean()); if imapflow's internals are not what it expects, there is no tap and the
 * read-ahead uses imapflow's own FETCH handling, as before.
 */
import { Readable } from 'node:stream';
import type { ImapFlow } from 'imapflow';
import { ResponseSplitter, type BodyTarget } from './literal-splitter.js';

/**
 * A message body as it arrives: the socket's own chunks, in order; errors if the connection is
 * cut. With a high-water mark, a reader that falls behind stops the connection's reading (a
 * large message is never held whole); without, everything is taken as it comes (the
 * read-ahead's budget bounds it).
 */
export class BodyStream extends Readable {
  /** All of the body has come from the server (it may not all have been read yet). */
  arrived = false;
  /** Octets that have come so far. */
  received = 0;
  private drained: (() => void)[] = [];
  /** The body cannot be completed: the reader gets this error once it has read what came. */
  private failure: Error | undefined;

  constructor(
    readonly size: number,
    private readonly limit?: number,
  ) {
    super(limit === undefined ? {} : { highWaterMark: limit });
    // A body read ahead may fail before anyone reads it (the connection cut, the server
    // throttling): that failure is the stream's state, which its reader gets when it reads
    // (async iteration rejects), never an 'error' event nobody listens to, which would end
    // the process and every session on it.
    this.on('error', () => undefined);
  }

  override _read(): void {
    this.release();
  }

  override read(size?: number): Buffer | null {
    const chunk = super.read(size) as Buffer | null;
    if (chunk === null && this.failure !== undefined && this.readableLength === 0) this.destroy(this.failure);
    return chunk;
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    // A reader that gave up no longer holds the connection back: the rest is read and dropped.
    this.release();
    done(err);
  }

  private release(): void {
    const waiting = this.drained;
    this.drained = [];
    for (const ready of waiting) ready();
  }

  /** The side the tap writes to. */
  target(): BodyTarget {
    return {
      push: (chunk) => {
        if (this.destroyed || this.failure !== undefined) return true;
        this.received += chunk.length;
        const more = this.push(chunk);
        return this.limit === undefined || more;
      },
      whenDrained: (ready) => {
        if (this.destroyed || this.readableLength < (this.limit ?? Infinity)) ready();
        else this.drained.push(ready);
      },
      end: () => {
        if (this.destroyed || this.failure !== undefined || this.arrived) return;
        this.arrived = true;
        this.emit('arrived');
        this.push(null);
      },
      // What came before the failure is still read (the reader then gets the error, never an end).
      fail: (err) => {
        if (this.destroyed || this.arrived) return;
        if (this.readableLength === 0) this.destroy(err);
        else this.failure = err;
      },
    };
  }
}

/** A message as read: its bytes as they come, and how many there are. */
export interface MessageBody {
  readonly stream: BodyStream;
  readonly size: number;
}

/** What the tap needs of imapflow's response streamer (not in its typings). */
interface Streamer {
  _transform(chunk: Buffer | string, encoding: BufferEncoding | 'buffer', next: (err?: Error | null) => void): void;
  destroyed: boolean;
  state: number;
  lineBuffer: unknown[];
  inputBuffer: unknown[];
  literalBuffer: unknown[];
  literals: unknown[];
  inputQueue: unknown[];
  processingInput: boolean;
  once(event: 'close', listener: () => void): unknown;
}

type Start = (size: number) => BodyTarget;

interface Claimed {
  readonly start: Start;
  readonly sole: boolean;
}

/** imapflow's ImapStream state while it reads lines (not a literal). */
const LINE = 0x01;
const TAP = Symbol('literalTap');

/** Whether the streamer stands between two responses with nothing queued or half-parsed. */
function clean(streamer: Partial<Streamer> | undefined): streamer is Streamer {
  return (
    streamer !== undefined &&
    typeof streamer._transform === 'function' &&
    streamer.destroyed === false &&
    streamer.state === LINE &&
    Array.isArray(streamer.lineBuffer) &&
    streamer.lineBuffer.length === 0 &&
    Array.isArray(streamer.inputBuffer) &&
    streamer.inputBuffer.length === 0 &&
    Array.isArray(streamer.literalBuffer) &&
    streamer.literalBuffer.length === 0 &&
    Array.isArray(streamer.literals) &&
    streamer.literals.length === 0 &&
    Array.isArray(streamer.inputQueue) &&
    streamer.inputQueue.length === 0 &&
    streamer.processingInput === false
  );
}

export class LiteralTap {
  /** Bodies taken out of the response stream so far. */
  taken = 0;
  /**
   * Claims by UID, each in the order of its FETCH: the server answers commands in order, so
   * a UID claimed twice (a window asked for while the one before it still arrives, a message
   * read again) gets its rows in the order the claims were made.
   */
  private readonly claims = new Map<number, Claimed[]>();
  private outstanding = 0;
  private readonly splitter = new ResponseSplitter((named, size) => {
    const uid = named ?? this.soleUid();
    if (uid === undefined) return undefined;
    const queue = this.claims.get(uid);
    const first = queue?.shift();
    if (first === undefined) return undefined;
    if (queue!.length === 0) this.claims.delete(uid);
    this.outstanding--;
    this.taken++;
    return first.start(size);
  });

  /**
   * Whether the installed imapflow has what the tap relies on (see fast-paths.ts): a response
   * streamer of the shape clean() reads, and a way to ask whether the connection is busy.
   */
  static fits(client: object): boolean {
    const holder = client as { streamer?: Partial<Streamer>; connectionBusy?: unknown };
    const streamer = holder.streamer;
    if (typeof holder.connectionBusy !== 'function' || streamer === undefined || streamer === null) return false;
    const { lineBuffer, inputBuffer, literalBuffer, literals, inputQueue } = streamer;
    const lists = [lineBuffer, inputBuffer, literalBuffer, literals, inputQueue];
    return (
      typeof streamer._transform === 'function' &&
      typeof streamer.once === 'function' &&
      typeof streamer.state === 'number' &&
      typeof streamer.processingInput === 'boolean' &&
      lists.every(Array.isArray)
    );
  }

  /**
   * The tap of this connection, put in now if the connection is idle and clean; undefined if
   * it cannot be (then imapflow handles the bodies itself).
   */
  static of(client: ImapFlow): LiteralTap | undefined {
    const holder = client as unknown as Record<symbol, LiteralTap | undefined> & {
      streamer?: Partial<Streamer>;
      connectionBusy?: () => boolean;
    };
    const existing = holder[TAP];
    if (existing !== undefined) return existing;
    if (typeof holder.connectionBusy !== 'function' || holder.connectionBusy() || !client.usable) return undefined;
    const streamer = holder.streamer;
    if (!clean(streamer)) return undefined;
    const tap = new LiteralTap(streamer);
    client.once('close', () => tap.closed());
    holder[TAP] = tap;
    return tap;
  }

  private constructor(streamer: Streamer) {
    const parse = streamer._transform.bind(streamer);
    streamer._transform = (chunk, encoding, next) => {
      const bytes =
        typeof chunk === 'string' ? Buffer.from(chunk, encoding === 'buffer' ? undefined : encoding) : chunk;
      const slices = this.splitter.push(bytes);
      // A body whose reader fell behind holds the next chunk back (and so the socket).
      const full = this.splitter.takeFull();
      if (full === undefined) {
        if (slices.length === 0) return next();
        if (slices.length === 1) return parse(slices[0], 'buffer', next);
      }
      // imapflow's streamer queues its input and releases each piece once parsed.
      let left = slices.length + (full === undefined ? 0 : 1);
      const done = () => {
        if (--left === 0) next();
      };
      for (const slice of slices) parse(slice, 'buffer', done);
      full?.whenDrained(done);
    };
    streamer.once('close', () => this.closed());
  }

  private closed(): void {
    this.claims.clear();
    this.outstanding = 0;
    this.splitter.close(new Error('the IMAP connection closed in the middle of a message'));
  }

  /**
   * The body of this UID, when its FETCH row comes, goes to what `start` returns (called with
   * the body's size) rather than to imapflow. Claims are one-shot.
   */
  claim(uid: number, start: Start): void {
    this.add(uid, { start, sole: false });
  }

  /**
   * Like claim(), for a FETCH of this one message: servers send no body unasked, so while no
   * other claim is outstanding a body row that names its UID only after the body is this one's
   * too (a large message must never be left to imapflow to assemble whole).
   */
  claimSole(uid: number, start: Start): void {
    this.add(uid, { start, sole: true });
  }

  /** Takes back a claim that was not used (its FETCH ended without that row), if still there. */
  release(uid: number, start: Start): void {
    const queue = this.claims.get(uid);
    const at = queue?.findIndex((claimed) => claimed.start === start) ?? -1;
    if (at === -1) return;
    queue!.splice(at, 1);
    if (queue!.length === 0) this.claims.delete(uid);
    this.outstanding--;
  }

  private add(uid: number, claimed: Claimed): void {
    const queue = this.claims.get(uid);
    if (queue === undefined) this.claims.set(uid, [claimed]);
    else queue.push(claimed);
    this.outstanding++;
  }

  /** The UID of the one outstanding claim, if it is a sole claim. */
  private soleUid(): number | undefined {
    if (this.outstanding !== 1) return undefined;
    for (const [uid, queue] of this.claims) if (queue[0]?.sole) return uid;
    return undefined;
  }
}
