/**
 * One SMTP submission connection to the relay (RFC 6409), driven command by command by the
 * client's own session: each MAIL and RCPT is asked of the relay when the client asks, so that
 * its answer (a refused recipient, a sender the mailbox may not use) is the client's answer;
 * DATA streams the client's message as it arrives, dot-stuffed again, and the relay's reply to
 * its end is the only thing that can make the client's message accepted. Abandoning a
 * transaction cuts the connection before the final ".", so a relay never receives as complete
 * a message the client did not finish. Every wait is bounded; every socket error is handled.
 *
 * Written here rather than taken from nodemailer's SMTP client, whose public interface sends a
 * whole envelope at once and cannot hand each RCPT's answer back as the client's.
 */
import net from 'node:net';
import tls from 'node:tls';
import { DotStuffer } from '../net/dot-stuffer.js';
import { MIN_TLS_VERSION } from '../tls/tls-credentials.js';
import type { RelayEndpoint } from '../config/relay-settings.js';
import { ReplyError, ReplyReader, replyText, type RelayReply } from './relay-reply.js';

/** How the proxy logs in to the relay: the client's own password, or a bearer token (XOAUTH2). */
export type RelayLogin =
  { readonly user: string; readonly password: string } | { readonly user: string; readonly accessToken: string };

export interface RelayOptions {
  /** Longest wait for any one reply. */
  readonly timeoutMs: number;
  /** Longest wait for the connection (and TLS) and the greeting. */
  readonly connectTimeoutMs: number;
  /** The name the proxy gives in EHLO. */
  readonly clientName: string;
}

/**
 * Why talking to the relay failed: 'unreachable' (no connection, no greeting, a cut), 'login'
 * (it refused the credentials), 'reply' (it answered a command with a refusal: see `reply`).
 */
export class RelayError extends Error {
  constructor(
    readonly kind: 'unreachable' | 'login' | 'reply',
    message: string,
    readonly reply?: RelayReply,
  ) {
    super(message);
    this.name = 'RelayError';
  }
}

export type { RelayEndpoint };

export class RelayClient {
  private socket: net.Socket;
  private reader = new ReplyReader();
  private readonly replies: RelayReply[] = [];
  private waiting: ((reply: RelayReply | Error) => void) | undefined;
  private failure: Error | undefined;
  /** The relay's EHLO extensions, by upper-case keyword, with their parameters. */
  extensions = new Map<string, string>();

  private constructor(
    socket: net.Socket,
    private readonly endpoint: RelayEndpoint,
    private readonly options: RelayOptions,
  ) {
    this.socket = socket;
    this.attach(socket);
  }

  /** Connects, says EHLO, starts TLS as the endpoint says (never falling back) and logs in. */
  static async open(endpoint: RelayEndpoint, login: RelayLogin, options: RelayOptions): Promise<RelayClient> {
    const socket = await connect(endpoint, options.connectTimeoutMs);
    const client = new RelayClient(socket, endpoint, options);
    try {
      client.expect(await client.next(options.connectTimeoutMs), 220, 'the greeting');
      await client.ehlo();
      if (endpoint.tls === 'starttls') await client.startTls();
      await client.login(login);
      return client;
    } catch (err) {
      client.abort();
      throw err;
    }
  }

  /** The relay's own message size limit (EHLO SIZE), when it says one. */
  get sizeLimit(): number | undefined {
    const size = Number(this.extensions.get('SIZE'));
    return Number.isInteger(size) && size > 0 ? size : undefined;
  }

  supports(extension: string): boolean {
    return this.extensions.has(extension);
  }

  mail(from: string, params: readonly string[]): Promise<RelayReply> {
    return this.command(`MAIL FROM:<${from}>${params.map((p) => ` ${p}`).join('')}`);
  }

  rcpt(to: string, params: readonly string[]): Promise<RelayReply> {
    return this.command(`RCPT TO:<${to}>${params.map((p) => ` ${p}`).join('')}`);
  }

  /**
   * DATA: the message, dot-stuffed, as `body` gives it, read only as fast as the relay takes
   * it. Resolves to the relay's reply to the final "." (or to DATA itself when it refused to
   * start). If `body` fails or `abandoned` says so before the end, the connection is cut
   * without the final "." and this rejects.
   */
  async data(body: AsyncIterable<Buffer>, abandoned: () => boolean): Promise<RelayReply> {
    const start = await this.command('DATA');
    if (start.code !== 354) return start;
    const stuffer = new DotStuffer();
    try {
      for await (const chunk of body) {
        if (abandoned()) break;
        await this.write(stuffer.push(chunk));
      }
    } catch (err) {
      // The client's message failed (it went away): the relay must not get its end.
      this.abort();
      throw err;
    }
    if (abandoned() || this.failure !== undefined) {
      this.abort();
      throw new RelayError('unreachable', 'the message was abandoned before its end; the relay got no final "."');
    }
    await this.write(stuffer.finish());
    return this.next(this.options.timeoutMs);
  }

  /** Ends a transaction the relay accepted part of (RSET), for the client's next one. */
  reset(): Promise<RelayReply> {
    return this.command('RSET');
  }

  /** Says goodbye without waiting long for the answer. */
  async quit(): Promise<void> {
    if (this.failure === undefined && !this.socket.destroyed) {
      await this.command('QUIT').catch(() => undefined);
    }
    this.socket.destroy();
  }

  /** Cuts the connection at once: a transaction in progress is not completed. */
  abort(): void {
    this.fail(new RelayError('unreachable', 'the relay connection was closed by the proxy'));
    this.socket.destroy();
  }

  private async ehlo(): Promise<void> {
    const reply = await this.command(`EHLO ${this.options.clientName}`);
    this.expect(reply, 250, 'EHLO');
    this.extensions = new Map(
      reply.lines.slice(1).map((line) => {
        const [keyword = '', ...rest] = line.split(' ');
        return [keyword.toUpperCase(), rest.join(' ')] as const;
      }),
    );
  }

  private async startTls(): Promise<void> {
    if (!this.supports('STARTTLS'))
      throw new RelayError(
        'unreachable',
        'the relay does not offer STARTTLS (--smtp-relay-tls starttls never falls back to plaintext)',
      );
    this.expect(await this.command('STARTTLS'), 220, 'STARTTLS');
    const plain = this.socket;
    plain.removeAllListeners('data');
    const secure = tls.connect({ socket: plain, ...tlsOptions(this.endpoint) });
    this.socket = secure;
    this.reader = new ReplyReader();
    this.attach(secure);
    await onceSecure(secure, this.options.connectTimeoutMs);
    await this.ehlo();
  }

  private async login(login: RelayLogin): Promise<void> {
    const mechanisms = (this.extensions.get('AUTH') ?? '').toUpperCase().split(' ');
    if ('accessToken' in login) {
      const sasl = Buffer.from(`user=${login.user}\x01auth=Bearer ${login.accessToken}\x01\x01`).toString('base64');
      let reply = await this.command(`AUTH XOAUTH2 ${sasl}`);
      // A refused token is answered with a JSON challenge that wants an empty line (Google, Microsoft).
      if (reply.code === 334) reply = await this.command('');
      return this.loggedIn(reply);
    }
    if (!mechanisms.includes('PLAIN') && mechanisms.includes('LOGIN')) {
      this.expect(await this.command('AUTH LOGIN'), 334, 'AUTH LOGIN');
      this.expect(await this.command(Buffer.from(login.user).toString('base64')), 334, 'AUTH LOGIN');
      return this.loggedIn(await this.command(Buffer.from(login.password).toString('base64')));
    }
    const plain = Buffer.from(`\0${login.user}\0${login.password}`).toString('base64');
    return this.loggedIn(await this.command(`AUTH PLAIN ${plain}`));
  }

  private loggedIn(reply: RelayReply): void {
    if (reply.code === 235) return;
    // 535 and 5.7.8: the credentials; anything else (454, 4xx) is the relay's trouble.
    const kind = reply.code === 535 || reply.enhanced === '5.7.8' ? 'login' : 'reply';
    throw new RelayError(kind, `the relay refused the login: ${replyText(reply)}`, reply);
  }

  private expect(reply: RelayReply, code: number, what: string): void {
    if (reply.code !== code)
      throw new RelayError('reply', `the relay answered ${what} with ${replyText(reply)}`, reply);
  }

  private async command(line: string): Promise<RelayReply> {
    await this.write([Buffer.from(`${line}\r\n`, 'latin1')]);
    return this.next(this.options.timeoutMs);
  }

  /** Writes, resolving once the relay's socket can take more. */
  private write(pieces: readonly Buffer[]): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    const socket = this.socket;
    let more = true;
    socket.cork();
    for (const piece of pieces) more = socket.write(piece);
    socket.uncork();
    if (more) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = (err?: Error) => {
        socket.off('drain', onDrain);
        socket.off('close', onClose);
        if (err) reject(err);
        else resolve();
      };
      const onDrain = () => done();
      const onClose = () => done(this.failure ?? new RelayError('unreachable', 'the relay closed the connection'));
      socket.once('drain', onDrain);
      socket.once('close', onClose);
    });
  }

  /** The next reply, within `ms`. */
  private next(ms: number): Promise<RelayReply> {
    const queued = this.replies.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.failure !== undefined) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = undefined;
        const err = new RelayError('unreachable', `the relay did not answer within ${ms / 1000} s`);
        this.fail(err);
        this.socket.destroy();
        reject(err);
      }, ms);
      this.waiting = (reply) => {
        clearTimeout(timer);
        this.waiting = undefined;
        if (reply instanceof Error) reject(reply);
        else resolve(reply);
      };
    });
  }

  private attach(socket: net.Socket): void {
    // Commands and the final "." go out at once, not after the relay's delayed ACK.
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      let replies: RelayReply[];
      try {
        replies = this.reader.push(chunk);
      } catch (err) {
        this.fail(new RelayError('unreachable', (err as ReplyError).message));
        socket.destroy();
        return;
      }
      for (const reply of replies) {
        if (this.waiting !== undefined) this.waiting(reply);
        else this.replies.push(reply);
      }
    });
    socket.on('error', (err) => this.fail(new RelayError('unreachable', `relay connection error: ${err.message}`)));
    socket.on('close', () => this.fail(new RelayError('unreachable', 'the relay closed the connection')));
  }

  private fail(err: Error): void {
    this.failure ??= err;
    this.waiting?.(this.failure);
  }
}

function tlsOptions(endpoint: RelayEndpoint): tls.ConnectionOptions {
  const servername = endpoint.servername ?? (net.isIP(endpoint.host) ? undefined : endpoint.host);
  return {
    ...(servername === undefined ? {} : { servername }),
    rejectUnauthorized: endpoint.verifyTls,
    minVersion: MIN_TLS_VERSION,
    ...(endpoint.ca === undefined ? {} : { ca: endpoint.ca }),
  };
}

/** A connected socket (TLS handshake done for implicit TLS), or a RelayError within `ms`. */
function connect(endpoint: RelayEndpoint, ms: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const implicit = endpoint.tls === 'implicit';
    const socket = implicit
      ? tls.connect({ host: endpoint.host, port: endpoint.port, ...tlsOptions(endpoint) })
      : net.connect({ host: endpoint.host, port: endpoint.port });
    const timer = setTimeout(() => done(new Error(`no connection within ${ms / 1000} s`)), ms);
    const done = (err?: Error) => {
      clearTimeout(timer);
      socket.off('error', done);
      if (err === undefined) return resolve(socket);
      socket.destroy();
      reject(new RelayError('unreachable', `cannot reach the relay ${endpoint.host}:${endpoint.port}: ${err.message}`));
    };
    socket.once('error', done);
    socket.once(implicit ? 'secureConnect' : 'connect', () => done());
  });
}

function onceSecure(socket: tls.TLSSocket, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`no TLS within ${ms / 1000} s`)), ms);
    const done = (err?: Error) => {
      clearTimeout(timer);
      socket.off('error', done);
      if (err === undefined) return resolve();
      socket.destroy();
      reject(new RelayError('unreachable', `TLS with the relay failed: ${err.message}`));
    };
    socket.once('error', done);
    socket.once('secureConnect', () => done());
  });
}
