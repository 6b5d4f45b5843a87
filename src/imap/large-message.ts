/**
 * A large message, never held whole: fetched in windows of a fixed size (one FETCH
 * `BODY.PEEK[]<offset.window>` each, the next asked for as soon as the current one starts to
 * arrive, so that the server never waits), streamed as the windows arrive through the literal
 * tap without imapflow assembling them. The backend socket is read only as fast as the client
 * takes the message: beyond HELD_BYTES held, the tap stops reading until the reader catches up.
 *
 * Only where the connection has a literal tap (literal-tap.ts): without it imapflow would
 * assemble each window whole, and the caller downloads the message with imapflow instead.
 */
import type { ImapFlow } from 'imapflow';
import { BodyStream, LiteralTap, type MessageBody } from './literal-tap.js';
import type { BodyTarget } from './literal-splitter.js';

/**
 * Bytes of a large message held at most while the client falls behind: beyond, the backend
 * connection stops being read until the client catches up.
 */
const HELD_BYTES = 1024 * 1024;

interface Started {
  resolve(body: MessageBody | undefined): void;
  reject(err: unknown): void;
}

export class LargeMessages {
  /** Window FETCHes not yet finished. */
  private readonly running = new Set<Promise<void>>();
  /** The connection's tap, once it went in (at the first fetch that found the connection idle). */
  private tap: LiteralTap | undefined;

  constructor(
    private readonly client: ImapFlow,
    /** Whether the literal tap may be used (it fits the installed imapflow: fast-paths.ts). */
    private readonly tapAllowed: boolean,
  ) {}

  /**
   * The message of this UID and size in windows of `window` octets. Undefined (at once) where
   * the connection has no tap. The promise resolves once the body starts to arrive, or to
   * undefined if the server no longer has the message; a window that fails later fails the
   * stream after what came before it.
   */
  fetch(uid: number, size: number, window: number): Promise<MessageBody | undefined> | undefined {
    const tap = this.tapOf();
    if (tap === undefined) return undefined;
    const body = new BodyStream(size, HELD_BYTES);
    const sink = body.target();
    let settle!: Started;
    const started = new Promise<MessageBody | undefined>((resolve, reject) => (settle = { resolve, reject }));
    started.catch(() => undefined);
    const request = (from: number) => {
      let asked = false;
      const askNext = () => {
        // Not once the reader has given up (a TOP has its lines, the client went away).
        if (asked || body.destroyed) return;
        asked = true;
        request(from + window);
      };
      const running = this.fetchWindow(tap, uid, from, window, (octets) => {
        if (from === 0) settle.resolve({ stream: body, size });
        // A full window: there may be more, asked for now so that the server never waits.
        if (octets === window) askNext();
        return {
          push: (chunk) => sink.push(chunk),
          whenDrained: (ready) => sink.whenDrained(ready),
          end: () => {
            if (octets !== window) sink.end();
          },
          fail: (err) => sink.fail(err),
        };
      }).then(
        (answer) => {
          if (answer === 'taken') return;
          if (answer === 'none' || (answer === 'empty' && from === 0)) {
            // No such message (any more): before any data it is gone; after some, cut short.
            if (from === 0) settle.resolve(undefined);
            else if (answer === 'none') sink.fail(new Error(`message UID ${uid} disappeared while it was read`));
            else sink.end();
            return;
          }
          // imapflow parsed this window itself (no literal, or the UID named after the body).
          if (from === 0) settle.resolve({ stream: body, size });
          if (answer === 'empty') return sink.end();
          sink.push(answer);
          if (answer.length === window) askNext();
          else sink.end();
        },
        (err: unknown) => {
          if (from === 0) settle.reject(err);
          sink.fail(err instanceof Error ? err : new Error(String(err)));
        },
      );
      this.running.add(running);
      void running.finally(() => this.running.delete(running));
    };
    request(0);
    return started;
  }

  /** Resolves once no window FETCH is running (they never reject). */
  async settled(): Promise<void> {
    while (this.running.size > 0) await Promise.all([...this.running]);
  }

  /**
   * One window of a message: 'taken' when its literal went to `open`'s target, the bytes when
   * imapflow parsed them itself, 'empty' for a row without a body, 'none' for no row at all.
   */
  private async fetchWindow(
    tap: LiteralTap,
    uid: number,
    from: number,
    length: number,
    open: (size: number) => BodyTarget,
  ): Promise<'taken' | 'empty' | 'none' | Buffer> {
    let taken = false;
    const start = (size: number) => {
      taken = true;
      return open(size);
    };
    tap.claimSole(uid, start);
    try {
      let answer: 'empty' | 'none' | Buffer = 'none';
      const query = { uid: true, source: { start: from, maxLength: length } };
      for await (const message of this.client.fetch(String(uid), query, { uid: true })) {
        if (message.uid !== uid) continue;
        if (Buffer.isBuffer(message.source)) answer = message.source;
        else if (answer === 'none') answer = 'empty';
      }
      return taken ? 'taken' : answer;
    } finally {
      tap.release(uid, start);
    }
  }

  private tapOf(): LiteralTap | undefined {
    if (this.tapAllowed) this.tap ??= LiteralTap.of(this.client);
    return this.tap;
  }
}
