/**
 * A POP3 client built for throughput, so that the client is never what a benchmark measures:
 * commands are pipelined in batches (one write per batch), replies are parsed as the bytes
 * arrive, and multi-line bodies are scanned for the terminating "\r\n.\r\n" once, without being
 * kept, copied or re-scanned. Only their sizes are counted.
 */
import net from 'node:net';

export interface Reply {
  /** The status line without its CRLF. */
  readonly status: string;
  readonly ok: boolean;
  /** Multi-line replies: the body bytes after the status line, terminator included. */
  readonly bytes: number;
}

export interface PipelineResult {
  readonly ok: number;
  readonly failed: number;
  readonly bytes: number;
  /** The first status line that was not +OK, for the report. */
  readonly firstError: string | undefined;
}

export interface ConnectOptions {
  readonly host?: string;
  /** Inactivity allowed before the connection is given up; 0: none. */
  readonly timeoutMs?: number;
  /** The size of the one buffer all reads go into. */
  readonly readBufferSize?: number;
}

interface Expectation {
  readonly multiline: boolean;
  done(reply: Reply): void;
  fail(err: Error): void;
}

const TERMINATOR = Buffer.from('\r\n.\r\n', 'latin1');
const CRLF = Buffer.from('\r\n', 'latin1');
const LF = 0x0a;
const MAX_STATUS_LINE = 64 * 1024;
const DEFAULT_READ_BUFFER = 256 * 1024;
const DEFAULT_TIMEOUT_MS = 120_000;

export class FastPop3 {
  /** Every byte received on this connection. */
  received = 0;
  greeting = '';
  /** Resolves when the connection is closed, for whatever reason. */
  readonly closed: Promise<void>;

  private readonly queue: Expectation[] = [];
  /** Pieces of a status line split across chunks. */
  private lineParts: Buffer[] = [];
  private lineLength = 0;
  /** Inside the body of a multi-line reply. */
  private inBody = false;
  private bodyStatus = '';
  private bodyBytes = 0;
  /** The last (up to 4) bytes of the current body seen so far: a terminator may span chunks. */
  private carry: Buffer = CRLF;
  private failure: Error | undefined;

  private constructor(private readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on('error', (err) => this.failAll(new Error(`connection error: ${err.message}`)));
    socket.on('timeout', () => {
      this.failAll(new Error('no data from the server for too long'));
      socket.destroy();
    });
    this.closed = new Promise((resolve) => socket.once('close', () => {
      this.failAll(new Error('the server closed the connection'));
      resolve();
    }));
  }

  /** Connects and reads the greeting (which must be +OK). */
  static async connect(port: number, options: ConnectOptions = {}): Promise<FastPop3> {
    const { host = '127.0.0.1', timeoutMs = DEFAULT_TIMEOUT_MS, readBufferSize = DEFAULT_READ_BUFFER } = options;
    // Reads go into one reused buffer, straight to the parser: no allocation and no stream
    // machinery per chunk. Whatever must outlive a read (a split status line, the carry) is copied.
    let client: FastPop3 | undefined;
    const socket = net.connect({
      port,
      host,
      onread: {
        buffer: Buffer.allocUnsafe(readBufferSize),
        callback: (n: number, buf: Uint8Array) => {
          client?.onData(Buffer.from(buf.buffer, buf.byteOffset, n));
          return true;
        },
      },
    });
    socket.setTimeout(timeoutMs);
    client = new FastPop3(socket);
    const greeting = await client.expect(false);
    if (!greeting.ok) {
      client.destroy();
      throw new Error(`POP3 greeting is not +OK: ${greeting.status}`);
    }
    client.greeting = greeting.status;
    return client;
  }

  /** Sends one command and waits for its reply (multi-line bodies are counted, not kept). */
  command(line: string, multiline = false): Promise<Reply> {
    const reply = this.expect(multiline);
    this.socket.write(`${line}\r\n`);
    return reply;
  }

  /** USER and PASS; throws unless both are accepted. */
  async login(user: string, password: string): Promise<void> {
    const u = await this.command(`USER ${user}`);
    if (!u.ok) throw new Error(`USER ${user}: ${u.status}`);
    const p = await this.command(`PASS ${password}`);
    if (!p.ok) throw new Error(`PASS for ${user}: ${p.status}`);
  }

  /** STAT, parsed. */
  async stat(): Promise<{ count: number; octets: number }> {
    const r = await this.command('STAT');
    const m = /^\+OK (\d+) (\d+)/.exec(r.status);
    if (!m) throw new Error(`STAT: ${r.status}`);
    return { count: Number(m[1]), octets: Number(m[2]) };
  }

  /** QUIT, then waits until the server has closed the connection. */
  async quit(): Promise<Reply> {
    const reply = await this.command('QUIT');
    await this.closed;
    return reply;
  }

  /**
   * Sends `count` commands (line(0) .. line(count - 1)) with at most `window` of them unanswered.
   * The window is refilled in batches once half of it has been answered, so that commands go
   * out in few writes, as a pipelining client would send them.
   */
  pipeline(count: number, line: (i: number) => string, multiline: boolean, window: number): Promise<PipelineResult> {
    return new Promise((resolve, reject) => {
      let sent = 0;
      let answered = 0;
      let ok = 0;
      let bytes = 0;
      let firstError: string | undefined;
      const refillBelow = Math.max(1, Math.floor(window / 2));
      const finish = () => resolve({ ok, failed: answered - ok, bytes, firstError });
      const onReply = (reply: Reply) => {
        answered += 1;
        bytes += reply.bytes;
        if (reply.ok) ok += 1;
        else firstError ??= reply.status;
        if (answered === count) finish();
        else if (sent - answered < refillBelow) refill();
      };
      const refill = () => {
        let batch = '';
        while (sent < count && sent - answered < window) {
          this.queue.push({ multiline, done: onReply, fail: reject });
          batch += `${line(sent)}\r\n`;
          sent += 1;
        }
        if (batch) this.socket.write(batch);
      };
      if (this.failure) reject(this.failure);
      else if (count === 0) finish();
      else refill();
    });
  }

  destroy(): void {
    this.socket.destroy();
  }

  private expect(multiline: boolean): Promise<Reply> {
    return new Promise((done, fail) => {
      if (this.failure) fail(this.failure);
      else this.queue.push({ multiline, done, fail });
    });
  }

  private failAll(err: Error): void {
    this.failure ??= err;
    for (const e of this.queue.splice(0)) e.fail(this.failure);
  }

  private onData(chunk: Buffer): void {
    this.received += chunk.length;
    let pos = 0;
    while (pos < chunk.length) {
      const next = this.queue[0];
      if (next === undefined) {
        this.failAll(new Error(`unexpected data from the server: ${JSON.stringify(chunk.subarray(pos, pos + 80).toString('latin1'))}`));
        this.socket.destroy();
        return;
      }
      pos = this.inBody ? this.readBody(chunk, pos, next) : this.readStatus(chunk, pos, next);
    }
  }

  /** Consumes a status line (or the part of it in this chunk); returns the new position. */
  private readStatus(chunk: Buffer, pos: number, next: Expectation): number {
    const lf = chunk.indexOf(LF, pos);
    if (lf < 0) {
      this.lineParts.push(Buffer.from(chunk.subarray(pos)));
      this.lineLength += chunk.length - pos;
      if (this.lineLength > MAX_STATUS_LINE) {
        this.failAll(new Error('status line too long'));
        this.socket.destroy();
      }
      return chunk.length;
    }
    const piece = chunk.subarray(pos, lf + 1);
    const raw = this.lineParts.length === 0 ? piece : Buffer.concat([...this.lineParts, piece]);
    this.lineParts = [];
    this.lineLength = 0;
    const status = raw.toString('latin1').replace(/\r?\n$/, '');
    const ok = status.startsWith('+OK');
    if (next.multiline && ok) {
      this.inBody = true;
      this.bodyStatus = status;
      this.bodyBytes = 0;
      // The status line's CRLF counts as the line end before a terminator at the body's start.
      this.carry = CRLF;
    } else {
      this.queue.shift();
      next.done({ status, ok, bytes: 0 });
    }
    return lf + 1;
  }

  /** Consumes body bytes up to and including the terminator, if it is in this chunk. */
  private readBody(chunk: Buffer, pos: number, next: Expectation): number {
    const end = this.terminatorEnd(chunk, pos);
    if (end < 0) {
      this.bodyBytes += chunk.length - pos;
      this.keepCarry(chunk, pos);
      return chunk.length;
    }
    this.bodyBytes += end - pos;
    this.inBody = false;
    this.queue.shift();
    next.done({ status: this.bodyStatus, ok: true, bytes: this.bodyBytes });
    return end;
  }

  /** The position just after the first terminator ending in chunk[pos..], or -1. */
  private terminatorEnd(chunk: Buffer, pos: number): number {
    // A terminator that began in earlier data: only the carry plus a few bytes need looking at.
    const joint = Buffer.concat([this.carry, chunk.subarray(pos, pos + TERMINATOR.length - 1)]);
    const j = joint.indexOf(TERMINATOR);
    if (j >= 0 && j < this.carry.length) return pos + j + TERMINATOR.length - this.carry.length;
    const i = chunk.indexOf(TERMINATOR, pos);
    return i < 0 ? -1 : i + TERMINATOR.length;
  }

  private keepCarry(chunk: Buffer, pos: number): void {
    const keep = TERMINATOR.length - 1;
    const tail = chunk.subarray(Math.max(pos, chunk.length - keep));
    // Copied so that the carry does not pin the whole chunk in memory.
    this.carry = tail.length >= keep
      ? Buffer.from(tail)
      : Buffer.concat([this.carry, tail]).subarray(-keep);
  }
}

/**
 * Whether the server's CAPA lists PIPELINING (RFC 2449). Asked once per server over a plain
 * socket, outside any measurement: FastPop3 counts bodies instead of keeping them.
 */
export function supportsPipelining(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host });
    let text = '';
    let sent = false;
    socket.setTimeout(10_000, () => {
      socket.destroy();
      reject(new Error('CAPA timed out'));
    });
    socket.on('error', reject);
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (!sent && text.includes('\r\n')) {
        sent = true;
        text = '';
        socket.write('CAPA\r\n');
      } else if (sent && (text.startsWith('-ERR') || text.includes('\r\n.\r\n'))) {
        socket.end('QUIT\r\n');
        resolve(/^PIPELINING\r?$/im.test(text));
      }
    });
  });
}
