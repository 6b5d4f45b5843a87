/**
 * A small SMTP submission client on a raw socket, for W7's load: one Node process can run
 * many sessions at once and push 50 MB without the cost of a client library (Python's smtplib
 * started per message would cost more than the submission it times). It speaks what a good
 * submission client speaks: EHLO, STARTTLS (verified against a given CA), AUTH PLAIN, and
 * MAIL/RCPT/DATA sent in one write when the server lists PIPELINING (RFC 2920), the message
 * dot-stuffed and ended with CRLF.CRLF.
 */
import net from 'node:net';
import tls from 'node:tls';

export interface SmtpTarget {
  readonly host: string;
  readonly port: number;
  /** STARTTLS before AUTH, verifying the server against `ca` under `servername`. */
  readonly starttls?: { readonly ca: Buffer; readonly servername: string };
}

export interface SmtpLogin {
  readonly user: string;
  readonly password: string;
}

export interface Envelope {
  readonly from: string;
  readonly to: readonly string[];
}

export interface Reply {
  readonly code: number;
  /** All lines, CRLF-free, joined with "\n". */
  readonly text: string;
}

/** Longest wait for any one reply: a 50 MB DATA on a busy machine is answered within this. */
const REPLY_TIMEOUT_MS = 180_000;
const CLIENT_NAME = 'bench-client.test';

/** LF line ends become CRLF (the SMTP wire form; a bare LF is refused as smuggling). */
export function toCrlf(message: Buffer): Buffer {
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = message.indexOf(0x0a); i >= 0; i = message.indexOf(0x0a, i + 1)) {
    if (i > 0 && message[i - 1] === 0x0d) continue;
    parts.push(message.subarray(start, i), Buffer.from('\r\n'));
    start = i + 1;
  }
  parts.push(message.subarray(start));
  return Buffer.concat(parts);
}

/**
 * The DATA payload of a CRLF message: a '.' opening a line doubled (RFC 5321 4.5.2), a final
 * CRLF added if the message lacks one, then the ".\r\n" that ends it. Built once, before timing.
 */
export function dataPayload(message: Buffer): Buffer {
  const parts: Buffer[] = [];
  let start = 0;
  if (message[0] === 0x2e) {
    parts.push(Buffer.from('.'));
  }
  for (let i = message.indexOf('\r\n.'); i >= 0; i = message.indexOf('\r\n.', i + 1)) {
    parts.push(message.subarray(start, i + 2), Buffer.from('.'));
    start = i + 2;
  }
  parts.push(message.subarray(start));
  const endsWithCrlf = message.length >= 2 && message[message.length - 2] === 0x0d && message[message.length - 1] === 0x0a;
  parts.push(Buffer.from(endsWithCrlf ? '.\r\n' : '\r\n.\r\n'));
  return Buffer.concat(parts);
}

export class SmtpError extends Error {}

export class SmtpSession {
  private socket: net.Socket;
  private buffer = '';
  private lines: string[] = [];
  private readonly replies: Reply[] = [];
  private waiter: ((r: Reply | Error) => void) | undefined;
  private failure: Error | undefined;
  private extensions = new Set<string>();

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.attach(socket);
  }

  /** Connects, reads the greeting, EHLO, STARTTLS if asked (then EHLO again), AUTH PLAIN. */
  static async open(target: SmtpTarget, login: SmtpLogin): Promise<SmtpSession> {
    const socket = net.connect({ host: target.host, port: target.port });
    socket.setNoDelay(true);
    const session = new SmtpSession(socket);
    try {
      await session.expect(220, 'the greeting');
      await session.ehlo();
      if (target.starttls) {
        session.write('STARTTLS\r\n');
        await session.expect(220, 'STARTTLS');
        await session.upgrade(target.host, target.starttls);
        await session.ehlo();
      }
      const plain = Buffer.from(`\0${login.user}\0${login.password}`).toString('base64');
      session.write(`AUTH PLAIN ${plain}\r\n`);
      await session.expect(235, 'AUTH PLAIN');
      return session;
    } catch (err) {
      session.destroy();
      throw err;
    }
  }

  /** One transaction; resolves with the reply to the final "." (250 or a refusal, thrown). */
  async send(envelope: Envelope, payload: Buffer, size: number): Promise<Reply> {
    const commands = [`MAIL FROM:<${envelope.from}> SIZE=${size}`, ...envelope.to.map((to) => `RCPT TO:<${to}>`), 'DATA'];
    if (this.extensions.has('PIPELINING')) {
      this.write(commands.map((c) => `${c}\r\n`).join(''));
      // Every reply is read before judging, so that none is left behind for the next command.
      const replies: Reply[] = [];
      for (let i = 0; i < commands.length; i++) replies.push(await this.next());
      replies.forEach((r, i) => check(r, i === commands.length - 1 ? 354 : 250, commands[i] as string));
    } else {
      for (const [i, c] of commands.entries()) {
        this.write(`${c}\r\n`);
        await this.expect(i === commands.length - 1 ? 354 : 250, c);
      }
    }
    this.socket.write(payload);
    return this.expect(250, 'the end of DATA');
  }

  /** QUIT, then the connection is closed whatever the answer. */
  async quit(): Promise<void> {
    try {
      this.write('QUIT\r\n');
      await this.expect(221, 'QUIT');
    } finally {
      this.destroy();
    }
  }

  destroy(): void {
    this.socket.destroy();
  }

  private async ehlo(): Promise<void> {
    this.write(`EHLO ${CLIENT_NAME}\r\n`);
    const reply = await this.expect(250, 'EHLO');
    this.extensions = new Set(reply.text.split('\n').slice(1).map((l) => (l.split(' ')[0] ?? '').toUpperCase()));
  }

  private async upgrade(host: string, options: { ca: Buffer; servername: string }): Promise<void> {
    this.socket.removeAllListeners('data');
    const secure = tls.connect({ socket: this.socket, ca: options.ca, servername: options.servername, minVersion: 'TLSv1.2' });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', (err) => reject(new SmtpError(`TLS with ${host}: ${err.message}`)));
    });
    this.socket = secure;
    this.buffer = '';
    this.attach(secure);
  }

  private attach(socket: net.Socket): void {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.fail(new SmtpError(`socket error: ${err.message}`)));
    socket.on('close', () => this.fail(new SmtpError('the server closed the connection')));
  }

  private write(text: string): void {
    this.socket.write(text, 'latin1');
  }

  private onData(chunk: Buffer): void {
    this.buffer += chunk.toString('latin1');
    for (let end = this.buffer.indexOf('\r\n'); end >= 0; end = this.buffer.indexOf('\r\n')) {
      const line = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      this.lines.push(line);
      // "250-..." continues a reply; "250 ..." (or a bare code) ends it.
      if (line.length <= 3 || line[3] !== '-') {
        const reply = { code: Number(line.slice(0, 3)), text: this.lines.map((l) => l.slice(4)).join('\n') };
        this.lines = [];
        this.deliver(reply);
      }
    }
  }

  private deliver(reply: Reply | Error): void {
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = undefined;
      waiter(reply);
    } else if (!(reply instanceof Error)) {
      this.replies.push(reply);
    }
  }

  private fail(err: Error): void {
    this.failure ??= err;
    this.deliver(err);
  }

  private next(): Promise<Reply> {
    const queued = this.replies.shift();
    if (queued) return Promise.resolve(queued);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new SmtpError(`no reply within ${REPLY_TIMEOUT_MS / 1000} s`));
      }, REPLY_TIMEOUT_MS);
      this.waiter = (r) => {
        clearTimeout(timer);
        if (r instanceof Error) reject(r);
        else resolve(r);
      };
    });
  }

  private async expect(code: number, what: string): Promise<Reply> {
    return check(await this.next(), code, what);
  }
}

function check(reply: Reply, code: number, what: string): Reply {
  if (reply.code !== code) throw new SmtpError(`${what}: expected ${code}, got ${reply.code} ${reply.text.split('\n')[0]}`);
  return reply;
}

/** Resolves once `port` answers with a 220 greeting (the proxy's SMTP side is up), within timeoutMs. */
export async function waitForSmtp(host: string, port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect({ host, port });
      let data = '';
      const done = (result: boolean) => {
        socket.destroy();
        resolve(result);
      };
      socket.setTimeout(2000, () => done(false));
      socket.on('error', () => done(false));
      socket.on('data', (chunk: Buffer) => {
        data += chunk.toString('latin1');
        if (data.includes('\r\n')) done(data.startsWith('220'));
      });
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`no SMTP greeting on ${host}:${port} within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
