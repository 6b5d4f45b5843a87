/**
 * The soak's POP3 connection: raw bytes, every read bounded, and each read says how it ended,
 * a reply, the server closing the connection, or the time bound passing, because the soak
 * tells those apart (a closed connection is an answer, a timeout is not). It knows its local
 * port, which the proxy's session log names, and reads whatever arrives (no backpressure).
 */
import net from 'node:net';

export type LineResult = { kind: 'line'; line: string } | { kind: 'closed' } | { kind: 'timeout' };
/** A multi-line body (still dot-stuffed, up to but not including the ".\r\n" line), or how it did not end. */
export type BodyResult = { kind: 'body'; raw: Buffer } | { kind: 'closed'; received: number } | { kind: 'timeout'; received: number };
export type ConnectResult = { kind: 'connected'; wire: Pop3Wire; greeting: string } | { kind: 'refused'; reason: string } | { kind: 'closed' } | { kind: 'timeout' };

const CRLF = Buffer.from('\r\n', 'latin1');
const TERMINATOR = Buffer.from('\r\n.\r\n', 'latin1');
const EMPTY_BODY = Buffer.from('.\r\n', 'latin1');

export class Pop3Wire {
  private buffer: Buffer = Buffer.alloc(0);
  private ended = false;
  private wake: (() => void) | undefined;

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.buffer = this.buffer.length === 0 ? d : Buffer.concat([this.buffer, d]);
      this.wake?.();
    });
    const end = () => {
      this.ended = true;
      this.wake?.();
    };
    socket.on('end', end);
    socket.on('close', end);
    socket.on('error', end);
  }

  /** Connects to 127.0.0.1:port and reads the greeting. */
  static connect(port: number, timeoutMs: number): Promise<ConnectResult> {
    return new Promise((resolve) => {
      const socket = net.connect({ port, host: '127.0.0.1' });
      const timer = setTimeout(() => {
        socket.destroy();
        resolve({ kind: 'timeout' });
      }, timeoutMs);
      socket.once('error', (err) => {
        clearTimeout(timer);
        resolve({ kind: 'refused', reason: (err as NodeJS.ErrnoException).code ?? err.message });
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        const wire = new Pop3Wire(socket);
        void wire.line(timeoutMs).then((r) => {
          if (r.kind === 'line') resolve({ kind: 'connected', wire, greeting: r.line });
          else {
            wire.destroy();
            resolve(r);
          }
        });
      });
    });
  }

  get localPort(): number {
    return this.socket.localPort ?? 0;
  }

  get closed(): boolean {
    return this.ended;
  }

  /** Writes the lines, each followed by CRLF, in one write (pipelining when there are several). */
  send(lines: readonly string[]): void {
    if (this.socket.destroyed) return;
    this.socket.write(Buffer.from(lines.map((l) => `${l}\r\n`).join(''), 'latin1'));
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Bytes received and not read yet. */
  get unread(): number {
    return this.buffer.length;
  }

  line(timeoutMs: number): Promise<LineResult> {
    return this.read<LineResult>(timeoutMs, () => {
      const end = this.buffer.indexOf(CRLF);
      if (end < 0) return undefined;
      const line = this.buffer.subarray(0, end).toString('latin1');
      this.buffer = this.buffer.subarray(end + 2);
      return { kind: 'line', line };
    }, () => ({ kind: 'closed' }), () => ({ kind: 'timeout' }));
  }

  body(timeoutMs: number): Promise<BodyResult> {
    let searchFrom = 0;
    return this.read<BodyResult>(timeoutMs, () => {
      if (this.buffer.length >= EMPTY_BODY.length && this.buffer.subarray(0, EMPTY_BODY.length).equals(EMPTY_BODY)) {
        this.buffer = this.buffer.subarray(EMPTY_BODY.length);
        return { kind: 'body', raw: Buffer.alloc(0) };
      }
      const end = this.buffer.indexOf(TERMINATOR, searchFrom);
      if (end < 0) {
        searchFrom = Math.max(0, this.buffer.length - (TERMINATOR.length - 1));
        return undefined;
      }
      const raw = Buffer.from(this.buffer.subarray(0, end + 2));
      this.buffer = this.buffer.subarray(end + TERMINATOR.length);
      return { kind: 'body', raw };
    }, () => ({ kind: 'closed', received: this.buffer.length }), () => ({ kind: 'timeout', received: this.buffer.length }));
  }

  /** Waits up to `ms` for about `bytes` more bytes (or the end), for a client that drops mid-body. */
  async waitBytes(bytes: number, ms: number): Promise<void> {
    const target = this.buffer.length + bytes;
    await this.read(ms, () => (this.buffer.length >= target ? true : undefined), () => true, () => true);
  }

  private read<T>(timeoutMs: number, take: () => T | undefined, onClosed: () => T, onTimeout: () => T): Promise<T> {
    return new Promise<T>((resolve) => {
      const finish = (value: T) => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve(value);
      };
      const timer = setTimeout(() => finish(onTimeout()), timeoutMs);
      const attempt = () => {
        const value = take();
        if (value !== undefined) return finish(value);
        if (this.ended) finish(onClosed());
      };
      this.wake = attempt;
      attempt();
    });
  }
}
