/**
 * One client connection: reads command lines with a bounded buffer, runs them one at a time
 * in order (PIPELINING), applies backpressure both ways, and enforces the idle timeout. What
 * the commands mean is the session's business.
 */
import type { Socket } from 'node:net';
import type { Logger } from 'winston';
import { LineReader, type LineEvent } from './line-reader.js';
import { errLine } from './responses.js';
import { ClientGoneError, Pop3Session, type EndReason, type SessionIO, type SessionServices } from './session.js';

export interface ConnectionLimits {
  /** Longest command line accepted, CRLF included. */
  readonly maxLineLength: number;
  /** Overlong lines tolerated before the connection is closed. */
  readonly maxOverlongLines: number;
  /** Inactivity after which the session is ended. */
  readonly idleTimeoutMs: number;
}

/** Lines read ahead of the one being answered before we stop reading from the socket. */
const QUEUE_HIGH = 64;

/**
 * How long a closed connection waits for the client to read the last reply and close its side.
 * A client that never reads would otherwise hold the socket (and a server shutdown) forever.
 */
const CLOSE_LINGER_MS = 2000;

export class Pop3Connection implements SessionIO {
  readonly session: Pop3Session;
  private readonly reader: LineReader;
  private readonly queue: LineEvent[] = [];
  private overlongLines = 0;
  private running: Promise<void> | undefined;
  private closing = false;
  private gone = false;
  private readonly logger: Logger;

  constructor(
    private readonly socket: Socket,
    services: SessionServices,
    private readonly limits: ConnectionLimits,
  ) {
    this.logger = services.logger;
    this.reader = new LineReader(limits.maxLineLength);
    const client = { address: socket.remoteAddress ?? 'unknown', port: socket.remotePort ?? 0 };
    this.session = new Pop3Session(this, client, services);
    socket.setNoDelay(true);
    socket.setTimeout(limits.idleTimeoutMs);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('timeout', () => this.onIdle());
    socket.on('error', (err) => this.logger.debug(`Client connection error: ${err.message}`, this.session.logMeta()));
    socket.on('close', () => this.onClose());
  }

  start(): void {
    this.logger.debug('Connection opened', this.session.logMeta());
    this.send(this.session.greeting()).catch(() => undefined);
  }

  send(data: Buffer | readonly Buffer[]): Promise<void> {
    if (this.gone || this.socket.destroyed) return Promise.reject(new ClientGoneError());
    if (this.write(data)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onDrain = () => {
        this.socket.off('close', onClose);
        resolve();
      };
      const onClose = () => {
        this.socket.off('drain', onDrain);
        reject(new ClientGoneError());
      };
      this.socket.once('drain', onDrain);
      this.socket.once('close', onClose);
    });
  }

  /** Whether the socket can take more at once. Pieces leave in one writev, without a copy. */
  private write(data: Buffer | readonly Buffer[]): boolean {
    if (Buffer.isBuffer(data)) return this.socket.write(data);
    if (data.length === 1) return this.socket.write(data[0]!);
    this.socket.cork();
    let more = true;
    for (const piece of data) more = this.socket.write(piece);
    this.socket.uncork();
    return more;
  }

  close(): void {
    this.closing = true;
    this.queue.length = 0;
    this.socket.end();
    setTimeout(() => this.socket.destroy(), CLOSE_LINGER_MS).unref();
  }

  destroy(): void {
    this.closing = true;
    this.queue.length = 0;
    this.socket.destroy();
  }

  /** Ends the session from outside (server shutdown): a reply in progress is cut off. */
  async shutdown(): Promise<void> {
    if (!this.running && !this.closing) {
      this.socket.write(errLine('Server is shutting down, try again later.', 'SYS/TEMP'));
      this.close();
    } else {
      this.destroy();
    }
    await this.endSession('shutdown');
  }

  private onData(chunk: Buffer): void {
    if (this.closing) return;
    this.queue.push(...this.reader.push(chunk));
    if (this.queue.length >= QUEUE_HIGH) this.socket.pause();
    this.pump();
  }

  /** Answers queued lines strictly one after another. */
  private pump(): void {
    if (this.running) return;
    this.running = this.drainQueue().finally(() => {
      this.running = undefined;
    });
  }

  private async drainQueue(): Promise<void> {
    for (let event = this.queue.shift(); event && !this.closing; event = this.queue.shift()) {
      try {
        await this.process(event);
      } catch (err) {
        if (!(err instanceof ClientGoneError)) {
          this.logger.error(`Command failed unexpectedly: ${err instanceof Error ? err.stack : String(err)}`, this.session.logMeta());
          this.destroy();
          await this.session.end('backend-failed');
        }
        return;
      }
      if (this.queue.length < QUEUE_HIGH / 2 && this.socket.isPaused()) this.socket.resume();
    }
  }

  private async process(event: LineEvent): Promise<void> {
    if (event.kind === 'line') return this.session.handle(event.line);
    this.overlongLines++;
    if (this.overlongLines > this.limits.maxOverlongLines) {
      await this.send(errLine('Too many overlong lines, closing connection.'));
      this.close();
      return this.session.end('too-many-errors');
    }
    await this.send(errLine(`Line too long (limit ${this.limits.maxLineLength} octets).`));
  }

  private onIdle(): void {
    this.logger.debug('Idle timeout', this.session.logMeta());
    if (this.running) {
      // A client that stopped reading in the middle of a reply: nothing more can be said.
      this.destroy();
    } else {
      this.socket.write(errLine('Disconnected for inactivity.'));
      this.close();
    }
    this.endSession('idle-timeout').catch(() => undefined);
  }

  private onClose(): void {
    this.gone = true;
    this.closing = true;
    this.queue.length = 0;
    this.endSession('client-closed').catch(() => undefined);
  }

  /** Lets the command in progress settle first, so that nothing it does escapes the cleanup. */
  private async endSession(reason: EndReason): Promise<void> {
    await this.running;
    await this.session.end(reason);
  }
}
