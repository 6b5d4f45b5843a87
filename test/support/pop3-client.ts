/**
 * A raw-socket POP3 client for tests that assert the bytes on the wire.
 *
 * Bytes are taken from the socket only while a read is waiting for them, so a test that does
 * not read leaves data in the kernel buffers and the server sees backpressure. Lines are
 * decoded as latin1 (one character per byte); bodies stay Buffers.
 */
import net from 'node:net';

const CRLF = Buffer.from('\r\n', 'latin1');
const TERMINATOR = Buffer.from('\r\n.\r\n', 'latin1');
const EMPTY_BODY = Buffer.from('.\r\n', 'latin1');
const DEFAULT_TIMEOUT_MS = 10_000;

/** How much of the unread data an error message shows. */
function preview(data: Buffer): string {
  const shown = data.subarray(0, 200).toString('latin1');
  return JSON.stringify(shown) + (data.length > 200 ? ` (+${data.length - 200} bytes)` : '');
}

/**
 * Undoes POP3 byte-stuffing (RFC 1939 section 3): the first octet of every line that starts
 * with "." is removed. Lines start at the beginning and after every LF.
 */
export function unstuff(body: Buffer): Buffer {
  const parts: Buffer[] = [];
  let start = 0;
  let lineStart = 0;
  while (lineStart < body.length) {
    if (body[lineStart] === 0x2e) {
      parts.push(body.subarray(start, lineStart));
      start = lineStart + 1;
    }
    const lf = body.indexOf(0x0a, lineStart);
    if (lf < 0) break;
    lineStart = lf + 1;
  }
  if (start === 0) return Buffer.from(body);
  parts.push(body.subarray(start));
  return Buffer.concat(parts);
}

interface Waiter {
  /** Tries to satisfy the read from the buffered data; returns true when done. */
  attempt(): boolean;
  fail(err: Error): void;
}

export class RawPop3 {
  /** The server's greeting line, without CRLF. */
  greeting = '';

  private readonly socket: net.Socket;
  /** Received and not yet consumed by a read. */
  private pending: Buffer = Buffer.alloc(0);
  /** Everything received. */
  private readonly chunks: Buffer[] = [];
  private ended = false;
  private socketClosed = false;
  private socketError: Error | undefined;
  private waiter: Waiter | undefined;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('readable', () => {
      // With nothing buffered, 'readable' means end of stream: reading then consumes no data
      // but lets 'end' fire, so `closed` is right even when no read is waiting.
      if (this.waiter === undefined && socket.readableLength === 0) socket.read();
      this.pump();
    });
    socket.on('end', () => {
      this.ended = true;
      this.pump();
    });
    socket.on('close', () => {
      this.socketClosed = true;
      this.ended = true;
      this.pump();
    });
    socket.on('error', (err) => {
      this.socketError = err;
      this.pump();
    });
  }

  /** Connects and reads the greeting. */
  static connect(port: number, host = '127.0.0.1', timeoutMs = DEFAULT_TIMEOUT_MS): Promise<RawPop3> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`POP3 connect to ${host}:${port} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      const onError = (err: Error) => {
        clearTimeout(timer);
        reject(new Error(`POP3 connect to ${host}:${port} failed: ${err.message}`));
      };
      socket.once('error', onError);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.off('error', onError);
        const client = new RawPop3(socket);
        client.readLine(timeoutMs).then(
          (line) => {
            client.greeting = line;
            resolve(client);
          },
          (err: Error) => {
            socket.destroy();
            reject(new Error(`no POP3 greeting from ${host}:${port}: ${err.message}`));
          },
        );
      });
    });
  }

  /** Connects and logs in with USER and PASS; fails unless both are accepted. */
  static async login(port: number, user: string, password: string, host = '127.0.0.1'): Promise<RawPop3> {
    const c = await RawPop3.connect(port, host);
    const userReply = await c.command(`USER ${user}`);
    const passReply = userReply.startsWith('+OK') ? await c.command(`PASS ${password}`, 30_000) : userReply;
    if (!passReply.startsWith('+OK')) {
      c.destroy();
      throw new Error(`login as ${user} refused: ${passReply}`);
    }
    return c;
  }

  /** Whether the server has closed the connection (as far as this client has read). */
  get closed(): boolean {
    return this.ended || this.socketClosed;
  }

  /** Writes the line followed by CRLF (strings as UTF-8). */
  send(line: string | Buffer): void {
    const bytes = typeof line === 'string' ? Buffer.from(line, 'utf8') : line;
    this.socket.write(Buffer.concat([bytes, CRLF]));
  }

  /** Writes raw bytes (strings as UTF-8). */
  write(bytes: string | Buffer): void {
    this.socket.write(bytes);
  }

  /** The next line, without its CRLF, decoded as latin1. */
  readLine(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<string> {
    return this.read('a reply line', timeoutMs, () => {
      const end = this.pending.indexOf(CRLF);
      if (end < 0) return undefined;
      const line = this.pending.subarray(0, end).toString('latin1');
      this.pending = this.pending.subarray(end + 2);
      return line;
    });
  }

  /**
   * The body of a multi-line reply whose status line has been read: the raw bytes up to, not
   * including, the terminating ".\r\n" line — still dot-stuffed, ending with the CRLF of its
   * last line (or empty).
   */
  readMultiline(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Buffer> {
    let searchFrom = 0;
    return this.read('the end of a multi-line reply', timeoutMs, () => {
      if (this.pending.length >= EMPTY_BODY.length && this.pending.subarray(0, EMPTY_BODY.length).equals(EMPTY_BODY)) {
        this.pending = this.pending.subarray(EMPTY_BODY.length);
        return Buffer.alloc(0);
      }
      const end = this.pending.indexOf(TERMINATOR, searchFrom);
      if (end < 0) {
        searchFrom = Math.max(0, this.pending.length - (TERMINATOR.length - 1));
        return undefined;
      }
      const body = Buffer.from(this.pending.subarray(0, end + 2));
      this.pending = this.pending.subarray(end + TERMINATOR.length);
      return body;
    });
  }

  /** Sends a command and reads its status line. */
  async command(line: string, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<string> {
    this.send(line);
    return this.readLine(timeoutMs);
  }

  /** Sends a command; after +OK reads the multi-line body and returns it un-stuffed. */
  async multiline(line: string, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<{ status: string; body: Buffer }> {
    const status = await this.command(line, timeoutMs);
    if (!status.startsWith('+OK')) return { status, body: Buffer.alloc(0) };
    return { status, body: unstuff(await this.readMultiline(timeoutMs)) };
  }

  /**
   * Resolves when the server has closed the connection (or reset it), reading whatever comes
   * before; that data stays available to received().
   */
  waitClose(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
    return this.read('the server to close the connection', timeoutMs, () => (this.closed || this.socketError !== undefined ? true : undefined)).then(() => undefined);
  }

  /** Everything received so far, including data already consumed by reads. */
  received(): Buffer {
    this.drain();
    return Buffer.concat(this.chunks);
  }

  /** Data received and not yet consumed by a read. */
  unread(): Buffer {
    this.drain();
    return Buffer.from(this.pending);
  }

  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Moves whatever the socket has buffered into `pending`. */
  private drain(): void {
    for (;;) {
      const chunk = this.socket.read() as Buffer | null;
      if (chunk === null) return;
      this.chunks.push(chunk);
      this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    }
  }

  private pump(): void {
    const waiter = this.waiter;
    if (waiter === undefined) return;
    this.drain();
    if (waiter.attempt()) return;
    if (this.socketError !== undefined) {
      waiter.fail(new Error(`connection error: ${this.socketError.message}`));
    } else if (this.closed) {
      waiter.fail(new Error('the server closed the connection'));
    }
  }

  private read<T>(what: string, timeoutMs: number, take: () => T | undefined): Promise<T> {
    if (this.waiter !== undefined) return Promise.reject(new Error('RawPop3: a read is already waiting'));
    return new Promise<T>((resolve, reject) => {
      const finish = () => {
        clearTimeout(timer);
        this.waiter = undefined;
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; unread: ${preview(this.pending)}`));
      }, timeoutMs);
      this.waiter = {
        attempt: () => {
          const value = take();
          if (value === undefined) return false;
          finish();
          resolve(value);
          return true;
        },
        fail: (err) => {
          finish();
          reject(new Error(`${err.message} while waiting for ${what}; unread: ${preview(this.pending)}`));
        },
      };
      this.pump();
    });
  }
}
