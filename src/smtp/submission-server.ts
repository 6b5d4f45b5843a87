/**
 * SMTP submission (RFC 6409) for the applications that read their mail through the POP3 side:
 * nodemailer's smtp-server speaks the protocol (EHLO, STARTTLS, AUTH, PIPELINING, the DATA
 * stream), fed the connections our own front door admitted (the same PROXY protocol, limits,
 * implicit TLS and session ids as POP3); each connection's SubmissionSession decides every
 * answer. The relay's enhanced status codes reach the client as the relay gave them.
 */
import type net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { SMTPServer, type SMTPServerAuthentication, type SMTPServerSession } from 'smtp-server';
import type { Logger } from 'winston';
import type { ConnectionLimiter } from '../limits/connection-limiter.js';
import { runInSession } from '../logging/session-context.js';
import type { Credentials } from '../maildrop/maildrop.js';
import { FrontDoor, type Admitted } from '../net/front-door.js';
import type { TlsCredentials } from '../tls/tls-credentials.js';
import { LEADING_ENHANCED, SmtpReply } from './smtp-reply.js';
import { SubmissionSession, type Params, type SubmissionServices } from './submission-session.js';

export interface SubmissionServerOptions {
  readonly host: string;
  readonly port: number | undefined;
  readonly tlsPort: number | undefined;
  readonly tls: TlsCredentials | undefined;
  readonly proxyProtocol: boolean;
  readonly limiter: ConnectionLimiter;
  readonly idleTimeoutMs: number;
  readonly handshakeTimeoutMs: number;
  /** The name in the greeting and EHLO. */
  readonly name: string;
  readonly connectionRefused: (limit: 'total' | 'per-ip') => void;
  readonly sessions: (delta: 1 | -1) => void;
}

/** What the front door needs of smtp-server's connection object (public in its typings). */
interface SmtpConnection {
  readonly id: string;
  send(code: number, data?: string | string[], context?: string | false): void;
  close(): void;
}

interface Open {
  readonly session: SubmissionSession;
  readonly context: { cid: string; abort: () => void };
  connection: SmtpConnection | undefined;
}

export class SubmissionServer {
  /**
   * One protocol engine per door: smtp-server takes whether a session is encrypted from its own
   * options, never from the socket it is handed, so the implicit-TLS door has one of its own.
   */
  private readonly plainSmtp: SMTPServer;
  private readonly tlsSmtp: SMTPServer;
  private readonly doors: FrontDoor[] = [];
  private readonly open = new Map<string, Open>();
  private readonly logger: Logger;

  constructor(
    private readonly options: SubmissionServerOptions,
    private readonly services: SubmissionServices,
  ) {
    this.logger = services.logger;
    const engine = (secure: boolean) =>
      new SMTPServer({
        secure,
        name: options.name,
        banner: 'mail submission',
        size: services.policy.maxSize,
        authMethods: ['PLAIN', 'LOGIN', 'XOAUTH2'],
        // The plaintext rule is the same as POP3's, decided per connection in onAuth.
        allowInsecureAuth: true,
        // Every reply carries its RFC 3463 code, the relay's own where it gave one.
        hideENHANCEDSTATUSCODES: false,
        hideDSN: true,
        hideREQUIRETLS: true,
        // Offered on the plain door when a certificate is given; in TLS it would be TLS in TLS.
        hideSTARTTLS: secure || options.tls === undefined,
        ...(options.tls === undefined ? {} : options.tls.serverOptions()),
        disableReverseLookup: true,
        logger: false,
        socketTimeout: options.idleTimeoutMs,
        onAuth: (auth, session, done) => this.hook(session, done, (s) => this.auth(s, auth, session)),
        onMailFrom: (address, session, done) =>
          this.hook(session, done, (s) => s.mailFrom(address.address, params(address.args))),
        onRcptTo: (address, session, done) =>
          this.hook(session, done, (s) => s.rcptTo(address.address, params(address.args))),
        onData: (stream, session, done) => this.hook(session, done, (s) => s.data(stream)),
        onClose: (session) => this.closed(session.id),
      });
    this.plainSmtp = engine(false);
    this.tlsSmtp = engine(true);
    for (const smtp of [this.plainSmtp, this.tlsSmtp]) {
      smtp.on('error', (err) => this.logger.debug(`SMTP connection error: ${err.message}`));
    }
    const door = (port: number, implicit: boolean) =>
      new FrontDoor(
        {
          protocol: 'SMTP',
          upgrade: 'STARTTLS',
          host: options.host,
          port: implicit ? undefined : port,
          tlsPort: implicit ? port : undefined,
          tls: options.tls,
          proxyProtocol: options.proxyProtocol,
          handshakeTimeoutMs: options.handshakeTimeoutMs,
          limiter: options.limiter,
          logger: this.logger,
          connectionRefused: options.connectionRefused,
        },
        { start: (admitted) => this.start(admitted), refusal: (reason) => Buffer.from(`421 4.7.0 ${reason}\r\n`) },
      );
    if (options.port !== undefined) this.doors.push(door(options.port, false));
    if (options.tlsPort !== undefined) this.doors.push(door(options.tlsPort, true));
  }

  async listen(): Promise<void> {
    for (const door of this.doors) await door.listen();
  }

  /** The plain submission port's address, and the implicit-TLS one's, once listening. */
  get addresses(): { plain: net.AddressInfo | undefined; tls: net.AddressInfo | undefined } {
    const plain = this.options.port === undefined ? undefined : this.doors[0]?.address;
    const tls = this.options.tlsPort === undefined ? undefined : this.doors.at(-1)?.tlsAddress;
    return { plain, tls };
  }

  get activeSessions(): number {
    return this.open.size;
  }

  /** A renewed certificate for the STARTTLS handshakes to come. */
  reloadTls(): void {
    const tls = this.options.tls;
    if (tls !== undefined)
      for (const smtp of [this.plainSmtp, this.tlsSmtp]) smtp.updateSecureContext(tls.serverOptions());
  }

  /**
   * No new connections; sessions may finish for up to `graceMs` (a message arriving may be
   * completed and answered); then a message still arriving is abandoned toward the relay, and
   * every client still connected gets `421 4.3.2` and is closed.
   */
  async close(graceMs: number): Promise<void> {
    for (const door of this.doors) door.close();
    const deadline = Date.now() + graceMs;
    while ([...this.open.values()].some((o) => o.session.inData) && Date.now() < deadline) await sleep(50);
    for (const [id, open] of [...this.open]) {
      open.session.abandon();
      open.connection?.send(421, '4.3.2 Service shutting down, try again later', false);
      open.connection?.close();
      // Ended here, not in onClose (which may come after the process is gone): logged and uncounted.
      this.closed(id);
    }
  }

  private start({ socket, secure, client }: Admitted): { abort(): void } {
    const cid = client.sessionId ?? 'unknown';
    const session = new SubmissionSession(this.services, client);
    const entry: Open = { session, connection: undefined, context: { cid, abort: () => entry.connection?.close() } };
    this.open.set(cid, entry);
    this.options.sessions(1);
    const smtp = secure ? this.tlsSmtp : this.plainSmtp;
    smtp.connect(socket, { id: cid, remoteAddress: client.address, remotePort: client.port });
    const connections = [...(smtp.connections as Set<unknown>)] as SmtpConnection[];
    entry.connection = connections.find((c) => c.id === cid);
    if (entry.connection !== undefined) keepEnhancedCodes(entry.connection);
    this.logger.debug('SMTP connection opened', { cid, client: `${client.address}:${client.port}` });
    return { abort: () => entry.connection?.close() };
  }

  /** Runs a hook in its session's context and answers through smtp-server's callback. */
  private hook<T>(
    session: SMTPServerSession,
    done: (err?: Error | null, value?: T) => void,
    run: (s: SubmissionSession) => Promise<T>,
  ): void {
    const open = this.open.get(session.id);
    if (open === undefined) return done(new SmtpReply(421, '4.3.2', 'Service not available, closing connection'));
    runInSession(open.context, () => {
      run(open.session).then(
        (value) => done(null, value),
        (err: unknown) => {
          const reply = err instanceof SmtpReply ? err : unexpected(this.logger, err);
          done(reply);
          if (reply.last) setImmediate(() => open.connection?.close());
        },
      );
    });
  }

  private async auth(
    s: SubmissionSession,
    auth: SMTPServerAuthentication,
    session: SMTPServerSession,
  ): Promise<{ user: string }> {
    const credentials: Credentials =
      auth.method === 'XOAUTH2'
        ? { user: auth.username ?? '', accessToken: auth.accessToken ?? '' }
        : { user: auth.username ?? '', password: auth.password ?? '' };
    await s.auth(credentials, session.secure);
    return { user: credentials.user };
  }

  private closed(id: string): void {
    const open = this.open.get(id);
    if (open === undefined) return;
    this.open.delete(id);
    this.options.sessions(-1);
    runInSession(open.context, () => {
      open.session.close();
      this.logger.info('SMTP session ended', {
        cid: id,
        client: `${open.session.client.address}:${open.session.client.port}`,
      });
    });
  }
}

/**
 * smtp-server puts an enhanced code of its own in front of every reply text; a text that
 * starts with one already (the relay's, or ours) keeps it alone.
 */
function keepEnhancedCodes(connection: SmtpConnection): void {
  const send = connection.send.bind(connection);
  connection.send = (code, data, context) =>
    send(code, data, typeof data === 'string' && LEADING_ENHANCED.test(data) ? false : context);
}

function params(args: unknown): Params {
  if (args === false || args === null || typeof args !== 'object') return {};
  return args as Params;
}

function unexpected(logger: Logger, err: unknown): SmtpReply {
  logger.error(`SMTP session failed unexpectedly: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  return new SmtpReply(451, '4.3.0', 'Local error, try again later');
}
