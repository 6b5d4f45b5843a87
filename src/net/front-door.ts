/**
 * How a client connection comes in, whatever protocol it speaks (POP3, SMTP): a plain listener
 * and, optionally, an implicit-TLS listener (RFC 8314) whose connections are wrapped in TLS by
 * hand, so that a PROXY protocol header, when there is one, comes first. Each accepted
 * connection gets its session id at once, and everything done for it runs in its context
 * (session-context.ts), from the PROXY header and the TLS handshake on. A connection is then
 * admitted within the connection limits (one count for every protocol) and handed to the
 * protocol's own code.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from 'winston';
import type { ConnectionLimiter } from '../limits/connection-limiter.js';
import { currentSession, inThisSession, newSessionId, runInSession } from '../logging/session-context.js';
import type { ClientInfo } from '../maildrop/maildrop.js';
import type { TlsCredentials } from '../tls/tls-credentials.js';
import { readProxyHeader } from './proxy-protocol.js';

export interface FrontDoorOptions {
  /** The protocol's name, for log lines. */
  readonly protocol: string;
  /** The protocol's command that starts TLS on the plain port (STLS, STARTTLS), for the log. */
  readonly upgrade: string;
  readonly host: string;
  /** Port for the plain listener; undefined for none (a door of implicit TLS alone). */
  readonly port: number | undefined;
  /** Port for implicit TLS; undefined for none. */
  readonly tlsPort: number | undefined;
  readonly tls: TlsCredentials | undefined;
  /** Every connection starts with a PROXY protocol header naming the real client. */
  readonly proxyProtocol: boolean;
  /** Longest wait for the PROXY header and the TLS handshake. */
  readonly handshakeTimeoutMs: number;
  readonly limiter: ConnectionLimiter;
  readonly logger: Logger;
  readonly connectionRefused: (limit: 'total' | 'per-ip') => void;
}

/** A connection admitted: what the protocol's session starts from. */
export interface Admitted {
  readonly socket: net.Socket;
  /** Implicit TLS. */
  readonly secure: boolean;
  readonly client: ClientInfo;
}

/** What the protocol does with an admitted connection, and with one refused by the limits. */
export interface Protocol {
  /** Starts the session; returns how to end it after an error escaped all handling. */
  start(admitted: Admitted): { abort(): void };
  /** The protocol's line for a refused plaintext connection (a TLS client could not read one). */
  refusal(reason: string): Buffer;
}

export class FrontDoor {
  private readonly server: net.Server | undefined;
  private readonly tlsServer: net.Server | undefined;
  /** Sockets not yet handed on (PROXY header or TLS handshake pending): nothing to clean up. */
  private readonly halfOpen = new Set<net.Socket>();

  constructor(
    private readonly options: FrontDoorOptions,
    private readonly protocol: Protocol,
  ) {
    const { logger, protocol: name } = options;
    if (options.port !== undefined) {
      this.server = net.createServer((socket) => this.onSocket(socket, false));
      this.server.on('error', (err) => logger.error(`${name} listener error: ${err.message}`));
    }
    if (options.tls && options.tlsPort !== undefined) {
      this.tlsServer = net.createServer((socket) => this.onSocket(socket, true));
      this.tlsServer.on('error', (err) => logger.error(`${name} TLS listener error: ${err.message}`));
    }
  }

  /** Starts listening; resolves to the first listener's address (useful with port 0). */
  async listen(): Promise<net.AddressInfo> {
    const { host, port, tlsPort, protocol, logger } = this.options;
    let first: net.AddressInfo | undefined;
    if (this.server) {
      first = await listenOn(this.server, port!, host);
      const upgrade = this.options.tls ? ` (${this.options.upgrade})` : '';
      logger.info(`${protocol} listening on ${first.address}:${first.port}${upgrade}`);
    }
    if (this.tlsServer) {
      const secure = await listenOn(this.tlsServer, tlsPort!, host);
      logger.info(`${protocol} over TLS listening on ${secure.address}:${secure.port}`);
      first ??= secure;
    }
    if (first === undefined) throw new Error(`${protocol}: no port to listen on`);
    return first;
  }

  get address(): net.AddressInfo | undefined {
    return (this.server?.address() as net.AddressInfo | null) ?? undefined;
  }

  get tlsAddress(): net.AddressInfo | undefined {
    return (this.tlsServer?.address() as net.AddressInfo | null) ?? undefined;
  }

  /** No new connections; those not yet handed on are dropped at once. */
  close(): void {
    for (const listener of [this.server, this.tlsServer]) if (listener?.listening) listener.close();
    for (const socket of this.halfOpen) socket.destroy();
  }

  private onSocket(socket: net.Socket, implicitTls: boolean): void {
    let started: { abort(): void } | undefined;
    const context = {
      cid: newSessionId(),
      // An error that escaped all handling: only this connection ends.
      abort: () => (started === undefined ? socket.destroy() : started.abort()),
    };
    runInSession(context, () => this.accept(socket, implicitTls, (s) => (started = s)));
  }

  private accept(socket: net.Socket, implicitTls: boolean, started: (s: { abort(): void }) => void): void {
    const logger = this.options.logger;
    socket.on(
      'error',
      inThisSession((err: Error) => logger.debug(`Connection error from ${socket.remoteAddress}: ${err.message}`)),
    );
    this.halfOpen.add(socket);
    socket.once('close', () => this.halfOpen.delete(socket));
    if (!this.options.proxyProtocol) return this.admit(socket, implicitTls, undefined, started);
    readProxyHeader(socket, this.options.handshakeTimeoutMs).then(
      (client) => this.admit(socket, implicitTls, client, started),
      (err: Error) => {
        logger.info(`Connection from ${socket.remoteAddress} dropped: ${err.message}`);
        socket.destroy();
      },
    );
  }

  /** Admits the connection within the limits, then starts TLS if the port wants it, then the session. */
  private admit(
    socket: net.Socket,
    implicitTls: boolean,
    announced: ClientInfo | undefined,
    started: (s: { abort(): void }) => void,
  ): void {
    const peer = announced ?? { address: socket.remoteAddress ?? 'unknown', port: socket.remotePort ?? 0 };
    const client: ClientInfo = { ...peer, sessionId: currentSession()?.cid };
    const admission = this.options.limiter.admit(client.address);
    if (!admission.admitted) {
      this.options.logger.info(`Connection from ${client.address} refused: ${admission.reason}`);
      this.options.connectionRefused(admission.limit);
      if (implicitTls) return void socket.destroy();
      socket.end(this.protocol.refusal(admission.reason));
      setTimeout(() => socket.destroy(), 2000).unref();
      return;
    }
    socket.once('close', admission.release);
    const handOn = (s: net.Socket, secure: boolean) => {
      this.halfOpen.delete(socket);
      started(this.protocol.start({ socket: s, secure, client }));
    };
    if (!implicitTls) return handOn(socket, false);
    const secure = new tls.TLSSocket(socket, { isServer: true, secureContext: this.options.tls!.secureContext });
    // A handshake that does not finish in time holds a socket, not a session.
    const deadline = setTimeout(() => secure.destroy(), this.options.handshakeTimeoutMs);
    secure.on(
      'error',
      inThisSession((err: Error) => {
        this.options.logger.debug(`TLS connection from ${client.address} failed: ${err.message}`);
        secure.destroy();
      }),
    );
    secure.once('close', () => clearTimeout(deadline));
    secure.once(
      'secure',
      inThisSession(() => {
        clearTimeout(deadline);
        handOn(secure, true);
      }),
    );
  }
}

function listenOn(server: net.Server, port: number, host: string): Promise<net.AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server.address() as net.AddressInfo);
    });
  });
}
