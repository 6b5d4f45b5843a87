/**
 * A Pop3Session driven directly, with an in-memory SessionIO in place of the socket: the
 * fastest way to run the protocol, and the one that shows exactly how a session ended (a
 * farewell line and a close, or a cut). One line is handled at a time, as Pop3Connection
 * handles them; what the connection itself does (line splitting, pipelining, the timeouts)
 * is tested over loopback sockets with startMemoryProxy instead.
 */
import type { ClientInfo } from '../../src/maildrop/maildrop.js';
import { POP3_COMMANDS } from '../../src/pop3/commands/index.js';
import { ClientGoneError } from '../../src/pop3/session-errors.js';
import type { SessionIO, SessionServices } from '../../src/pop3/session-services.js';
import { Pop3Session } from '../../src/pop3/session.js';
import { unstuff } from './pop3-client.js';

const LOOPBACK: ClientInfo = { address: '127.0.0.1', port: 40000, sessionId: 'memory' };

/** How the session left the connection. */
export type Ending = 'open' | 'closed' | 'cut';

export class MemorySession implements SessionIO {
  readonly session: Pop3Session;
  /** Every write, in order. */
  readonly writes: Buffer[] = [];
  ending: Ending = 'open';
  /** STLS replies sent (the handshake is taken to succeed). */
  tlsStarted = 0;
  loggedInAt: number | undefined;
  private isSecure: boolean;
  private consumed = 0;

  constructor(services: SessionServices, options: { client?: ClientInfo; secure?: boolean } = {}) {
    this.isSecure = options.secure ?? false;
    this.session = new Pop3Session(this, options.client ?? LOOPBACK, services, POP3_COMMANDS);
    this.writes.push(this.session.greeting());
  }

  get secure(): boolean {
    return this.isSecure;
  }

  // SessionIO

  async send(data: Buffer | readonly Buffer[]): Promise<void> {
    // As Pop3Connection: after close() or a cut nothing more reaches the client.
    if (this.ending !== 'open') throw new ClientGoneError();
    this.writes.push(Buffer.isBuffer(data) ? Buffer.from(data) : Buffer.concat(data));
  }

  close(last?: Buffer): void {
    if (this.ending !== 'open') return;
    if (last) this.writes.push(Buffer.from(last));
    this.ending = 'closed';
  }

  destroy(): void {
    if (this.ending === 'open') this.ending = 'cut';
  }

  async startTls(reply: Buffer): Promise<void> {
    await this.send(reply);
    this.tlsStarted++;
    this.isSecure = true;
  }

  loggedIn(): void {
    this.loggedInAt = Date.now();
  }

  // Driving it

  /** Everything written so far, as latin1. */
  output(): string {
    return Buffer.concat(this.writes).toString('latin1');
  }

  /** What was written since the last call (the greeting, at first). */
  take(): string {
    const all = this.output();
    const fresh = all.slice(this.consumed);
    this.consumed = all.length;
    return fresh;
  }

  /**
   * Handles one line and returns what it wrote. Once the session is over, waits for its
   * teardown: QUIT's farewell is written only after the store committed and the lock is free.
   */
  async command(line: string | Buffer): Promise<string> {
    await this.session.handle(typeof line === 'string' ? Buffer.from(line, 'latin1') : line);
    if (this.session.state === 'closed') await this.session.finished();
    return this.take();
  }

  /** A command whose reply is one line: the line without CRLF; fails on anything else. */
  async line(line: string | Buffer): Promise<string> {
    const reply = await this.command(line);
    const end = reply.indexOf('\r\n');
    if (end !== reply.length - 2) throw new Error(`expected one reply line to ${JSON.stringify(String(line))}, got ${JSON.stringify(reply)}`);
    return reply.slice(0, end);
  }

  /** A command with a multi-line reply: its status line and its body, un-stuffed. */
  async multi(line: string): Promise<{ status: string; body: string; raw: string }> {
    const reply = await this.command(line);
    const end = reply.indexOf('\r\n');
    const status = reply.slice(0, end);
    const raw = reply.slice(end + 2);
    if (!status.startsWith('+OK')) return { status, body: '', raw };
    if (raw !== '.\r\n' && !raw.endsWith('\r\n.\r\n')) throw new Error(`no terminator after ${JSON.stringify(line)}: ${JSON.stringify(reply.slice(-80))}`);
    const stuffed = Buffer.from(raw.slice(0, raw.length - 3), 'latin1');
    return { status, body: unstuff(stuffed).toString('latin1'), raw };
  }

  /** USER and PASS, asserting both are accepted. */
  async login(user: string, password: string): Promise<void> {
    const reply = (await this.line(`USER ${user}`)).startsWith('+OK') ? await this.line(`PASS ${password}`) : 'USER refused';
    if (!reply.startsWith('+OK')) throw new Error(`login as ${user} refused: ${reply}`);
  }
}

/** A session over these services, its greeting already taken. */
export function memorySession(services: SessionServices, options: { client?: ClientInfo; secure?: boolean } = {}): MemorySession {
  const session = new MemorySession(services, options);
  session.take();
  return session;
}
