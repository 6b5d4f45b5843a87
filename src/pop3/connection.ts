/**
 * One client connection: reads command lines with a bounded buffer, runs them one at a time
 * in order (PIPELINING), applies backpressure both ways, starts TLS on STLS, and enforces the
 * idle timeout and the authentication deadline. What the commands mean is the session's
 * business.
 */
import type { Socket } from 'node:net';
import tls from 'node:tls';
import type { Logger } from 'winston';
import { inThisSession } from '../logging/session-context.js';
import type { ClientInfo } from '../maildrop/maildrop.js';
import type { TlsCredentials } from '../tls/tls-credentials.js';
import { LineReader, type LineEvent } from './line-reader.js';
import { POP3_COMMANDS } from './commands/index.js';
import { errLine } from './responses.js';
import { ClientGoneError } from './session-errors.js';
import type { SessionIO, SessionServices } from './session-services.js';
import { Pop3Session } from './session.js';

export interface ConnectionLimits {
  /** Longest command line accepted, CRLF included. */
  readonly maxLineLength: number;
  /** Overlong lines tolerated before the connection is closed. */
  readonly maxOverlongLines: number;
  /** Inactivity after which the session is ended. */
  readonly idleTimeoutMs: number;
  /** Time to log in after connecting. */
  readonly authTimeoutMs: number;
}

/** Lines read ahead of the one being answered before we stop reading from the socket. */
const QUEUE_HIGH = 64;

/**
 * The longest line held at all: SASL responses carry OAuth tokens of several kilobytes.
 * Command lines are held to the (much smaller) command limit when they are answered.
 */
const MAX_BUFFERED_LINE = 16 * 1024;

/**
 * How long a closed connection waits for the client to read the last reply and close its side.
 * A client that never reads would otherwise hold the socket (and a server shutdown) forever.
 */
const CLOSE_LINGER_MS = 2000;

export class Pop3Connection implements SessionIO {
  readonly session: Pop3Session;
  private readonly reader = new LineReader(MAX_BUFFERED_LINE);
  private readonly queue: LineEvent[] = [];
  private socket: Socket;
  private isSecure: boolean;
  private overlongLines = 0;
  private running: Promise<void> | undefined;
  private closing = false;
  private gone = false;
  private readonly logger: Logger;
  /** Ends the session after idleTimeoutMs without a complete line or a reply moving. */
  private readonly idleTimer: NodeJS.Timeout;
  private authTimer: NodeJS.Timeout | undefined;
  private readonly tls: TlsCredentials | undefined;

  constructor(
    socket: Socket,
    services: SessionServices,
    private readonly limits: ConnectionLimits,
    options: { readonly secure: boolean; readonly tls: TlsCredentials | undefined; readonly client: ClientInfo },
  ) {
    this.socket = socket;
    this.isSecure = options.secure;
    this.tls = options.tls;
    this.logger = services.logger;
    this.session = new Pop3Session(this, options.client, services, POP3_COMMANDS);
    socket.setNoDelay(true);
    this.listen(socket);
    socket.on(
      'error',
      inThisSession((err: Error) =>
        this.logger.debug(`Client connection error: ${err.message}`, this.session.logMeta()),
      ),
    );
    socket.on(
      'close',
      inThisSession(() => this.onClose()),
    );
    this.idleTimer = setTimeout(() => this.onIdle(), limits.idleTimeoutMs);
    this.authTimer = setTimeout(() => this.onAuthTimeout(), limits.authTimeoutMs);
  }

  get secure(): boolean {
    return this.isSecure;
  }

  start(): void {
    this.logger.debug('Connection opened', this.session.logMeta());
    this.send(this.session.greeting()).catch(() => undefined);
  }

  send(data: Buffer | readonly Buffer[]): Promise<void> {
    // After close() nothing more is said: a command that finishes later finds the client gone.
    if (this.gone || this.closing || this.socket.destroyed) return Promise.reject(new ClientGoneError());
    this.idleTimer.refresh();
    if (this.write(data)) return Promise.resolve();
    const socket = this.socket;
    return new Promise((resolve, reject) => {
      const onDrain = () => {
        socket.off('close', onClose);
        resolve();
      };
      const onClose = () => {
        socket.off('drain', onDrain);
        reject(new ClientGoneError());
      };
      socket.once('drain', onDrain);
      socket.once('close', onClose);
    });
  }

  /** Whether the socket can take more at once. Pieces leave in one writev, without a copy. */
  private write(data: Buffer | readonly Buffer[]): boolean {
    if (Buffer.isBuffer(data)) return this.socket.write(data);
    if (data.length === 1) return this.socket.write(data[0]);
    this.socket.cork();
    let more = true;
    for (const piece of data) more = this.socket.write(piece);
    this.socket.uncork();
    return more;
  }

  async startTls(reply: Buffer): Promise<void> {
    if (!this.tls || this.isSecure) throw new Error('TLS is not available on this connection');
    const plain = this.socket;
    // Whatever the client sent behind STLS in plaintext is dropped, never executed (RFC 2595 3.1).
    plain.removeAllListeners('data');
    this.queue.length = 0;
    this.reader.reset();
    await this.send(reply);
    // The client starts its handshake only after reading the reply, so nothing of it has been read.
    const secure = new tls.TLSSocket(plain, { isServer: true, secureContext: this.tls.secureContext });
    secure.on(
      'error',
      inThisSession((err: Error) => this.logger.debug(`TLS error: ${err.message}`, this.session.logMeta())),
    );
    secure.once(
      'secure',
      inThisSession(() => {
        this.isSecure = true;
        this.logger.debug(`TLS started (${secure.getProtocol() ?? 'unknown'})`, this.session.logMeta());
      }),
    );
    this.socket = secure;
    this.listen(secure);
  }

  loggedIn(): void {
    clearTimeout(this.authTimer);
    this.authTimer = undefined;
  }

  close(last?: Buffer): void {
    if (this.closing) return;
    this.closing = true;
    this.queue.length = 0;
    if (last && !this.gone && !this.socket.destroyed) this.socket.write(last);
    this.socket.end();
    setTimeout(() => this.socket.destroy(), CLOSE_LINGER_MS).unref();
  }

  destroy(): void {
    this.closing = true;
    this.queue.length = 0;
    this.socket.destroy();
  }

  /**
   * Ends the session from outside (server shutdown); resolves once its cleanup is done. A QUIT
   * already committing is left to finish and answer.
   */
  shutdown(): Promise<void> {
    this.session.interrupt('shutdown', 'Server is shutting down, try again later.', 'SYS/TEMP');
    return this.session.finished();
  }

  /** An error escaped all handling while working for this session: it ends, without a last line. */
  abort(): void {
    this.session.end('internal-error', 'cut');
  }

  private listen(socket: Socket): void {
    // The socket was made outside the session: its events are bound to it (session-context.ts).
    socket.on(
      'data',
      inThisSession((chunk: Buffer) => this.onData(chunk)),
    );
    // A socket paused after its PROXY header was read does not start flowing by itself.
    socket.resume();
  }

  private onData(chunk: Buffer): void {
    if (this.closing) return;
    const events = this.reader.push(chunk);
    if (events.length === 0) return;
    // Only complete lines are activity: a line that never ends does not keep a session alive.
    this.idleTimer.refresh();
    this.queue.push(...events);
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
          this.logger.error(
            `Command failed unexpectedly: ${err instanceof Error ? err.stack : String(err)}`,
            this.session.logMeta(),
          );
          this.session.end('backend-failed', 'cut');
        }
        return;
      }
      if (this.queue.length < QUEUE_HIGH / 2 && this.socket.isPaused()) this.socket.resume();
    }
  }

  private async process(event: LineEvent): Promise<void> {
    if (event.kind === 'line' && this.session.acceptsLineOf(event.line.length, this.limits.maxLineLength)) {
      return this.session.handle(event.line);
    }
    this.overlongLines++;
    if (this.overlongLines > this.limits.maxOverlongLines) {
      return this.session.end('too-many-errors', errLine('Too many overlong lines, closing connection.'));
    }
    await this.session.protocolError(`Line too long (limit ${this.limits.maxLineLength} octets).`);
  }

  private onIdle(): void {
    this.logger.debug('Idle timeout', this.session.logMeta());
    this.session.interrupt('idle-timeout', 'Disconnected for inactivity.');
  }

  private onAuthTimeout(): void {
    this.logger.debug('Authentication deadline passed', this.session.logMeta());
    this.session.interrupt('auth-timeout', 'Too slow to log in, closing connection.');
  }

  private onClose(): void {
    this.gone = true;
    this.closing = true;
    this.queue.length = 0;
    clearTimeout(this.idleTimer);
    clearTimeout(this.authTimer);
    this.session.end('client-closed', 'cut');
  }
}
