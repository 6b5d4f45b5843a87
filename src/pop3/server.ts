/**
 * The POP3 server: a plain listener (with STLS when TLS is configured) and, optionally, an
 * implicit-TLS listener. It admits connections within the connection limits and keeps track of
 * them, so that a shutdown can end every session through its cleanup path.
 */
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import tls from 'node:tls';
import type { Logger } from 'winston';
import type { ConnectionLimiter } from '../limits/connection-limiter.js';
import { currentSession, inThisSession, newSessionId, runInSession } from '../logging/session-context.js';
import type { ClientInfo } from '../maildrop/maildrop.js';
import type { TlsCredentials } from '../tls/tls-credentials.js';
import { Pop3Connection, type ConnectionLimits } from './connection.js';
import { readProxyHeader } from './proxy-protocol.js';
import { errLine } from './responses.js';
import type { SessionServices } from './session-services.js';

export interface Pop3ServerOptions {
  readonly host: string;
  readonly port: number;
  readonly limits: ConnectionLimits;
  readonly limiter: ConnectionLimiter;
  /** Certificate for STLS and the implicit-TLS port. */
  readonly tls: TlsCredentials | undefined;
  /** Port for implicit TLS; undefined for none. */
  readonly tlsPort: number | undefined;
  /** Every connection starts with a PROXY protocol header naming the real client. */
  readonly proxyProtocol: boolean;
}

/**
 * How long sessions ended at shutdown may take to clean up (their backend goodbyes, their
 * locks) before close() returns anyway: with the default grace, well within the 10 s Docker
 * allows between SIGTERM and SIGKILL.
 */
const SHUTDOWN_CLEANUP_MS = 3000;

export class Pop3Server {
  private readonly server: net.Server;
  private readonly tlsServer: net.Server | undefined;
  private readonly connections = new Set<Pop3Connection>();
  /** Sockets not yet greeted (PROXY header or TLS handshake pending): nothing to clean up. */
  private readonly halfOpen = new Set<net.Socket>();
  private readonly logger: Logger;

  constructor(
    private readonly options: Pop3ServerOptions,
    private readonly services: SessionServices,
  ) {
    this.logger = services.logger;
    this.server = net.createServer((socket) => this.onSocket(socket, false));
    this.server.on('error', (err) => this.logger.error(`Listener error: ${err.message}`));
    if (options.tls && options.tlsPort !== undefined) {
      // A plain listener whose connections are wrapped in TLS by hand: a PROXY header, when
      // there is one, comes before the TLS handshake.
      this.tlsServer = net.createServer((socket) => this.onSocket(socket, true));
      this.tlsServer.on('error', (err) => this.logger.error(`TLS listener error: ${err.message}`));
    }
  }

  /** Starts listening; resolves to the plain listener's address (useful with port 0). */
  async listen(): Promise<net.AddressInfo> {
    const address = await listenOn(this.server, this.options.port, this.options.host);
    this.logger.info(`POP3 listening on ${address.address}:${address.port}${this.options.tls ? ' (STLS)' : ''}`);
    if (this.tlsServer) {
      const secure = await listenOn(this.tlsServer, this.options.tlsPort!, this.options.host);
      this.logger.info(`POP3 over TLS listening on ${secure.address}:${secure.port}`);
    }
    return address;
  }

  /** The implicit-TLS listener's address, once listening. */
  get tlsAddress(): net.AddressInfo | undefined {
    return (this.tlsServer?.address() as net.AddressInfo | null) ?? undefined;
  }

  get activeSessions(): number {
    return this.connections.size;
  }

  /** Reads the certificate and key again (SIGHUP); running sessions keep theirs. */
  reloadTls(): void {
    const credentials = this.options.tls;
    if (!credentials) return;
    try {
      credentials.reload();
      this.logger.info('TLS certificate reloaded');
    } catch (err) {
      this.logger.error(`TLS certificate not reloaded, keeping the current one: ${(err as Error).message}`);
    }
  }

  /**
   * Stops accepting and drops connections not yet greeted, lets running sessions finish for
   * up to `graceMs`, then ends the rest through their teardown (nothing expunged that QUIT did
   * not commit, locks released), waiting at most SHUTDOWN_CLEANUP_MS for it.
   */
  async close(graceMs = 0): Promise<void> {
    // No new connections. Those still open are not waited for once their sessions are over: a
    // client that does not close its side after our last line would hold the exit up.
    for (const listener of [this.server, this.tlsServer]) if (listener?.listening) listener.close();
    for (const socket of this.halfOpen) socket.destroy();
    const deadline = Date.now() + graceMs;
    while (this.connections.size > 0 && Date.now() < deadline) await sleep(Math.min(100, deadline - Date.now()));
    const ended = Promise.all([...this.connections].map((c) => c.shutdown()));
    const cleanup = new AbortController();
    const outOfTime = sleep(SHUTDOWN_CLEANUP_MS, 'timeout' as const, { signal: cleanup.signal }).catch(() => undefined);
    const outcome = await Promise.race([ended.then(() => 'done' as const), outOfTime]);
    cleanup.abort();
    if (outcome === 'timeout') this.logger.warn(`Shutdown: ${this.connections.size} session(s) still cleaning up after ${SHUTDOWN_CLEANUP_MS / 1000} s; exiting anyway`);
  }

  /**
   * Each accepted connection gets its session id at once, and everything done for it runs in
   * its context (see session-context.ts), from the PROXY header and the TLS handshake on.
   */
  private onSocket(socket: net.Socket, implicitTls: boolean): void {
    let connection: Pop3Connection | undefined;
    const context = {
      cid: newSessionId(),
      // An error that escaped all handling: only this connection ends.
      abort: () => (connection === undefined ? socket.destroy() : connection.abort()),
    };
    runInSession(context, () =>
      this.accept(socket, implicitTls, (started) => {
        connection = started;
      }),
    );
  }

  private accept(socket: net.Socket, implicitTls: boolean, started: (connection: Pop3Connection) => void): void {
    socket.on('error', inThisSession((err: Error) => this.logger.debug(`Connection error from ${socket.remoteAddress}: ${err.message}`)));
    this.halfOpen.add(socket);
    socket.once('close', () => this.halfOpen.delete(socket));
    if (!this.options.proxyProtocol) return this.admit(socket, implicitTls, undefined, started);
    readProxyHeader(socket, this.options.limits.authTimeoutMs).then(
      (client) => this.admit(socket, implicitTls, client, started),
      (err: Error) => {
        this.logger.info(`Connection from ${socket.remoteAddress} dropped: ${err.message}`);
        socket.destroy();
      },
    );
  }

  /** Admits the connection within the limits, then starts TLS if the port wants it, then the session. */
  private admit(socket: net.Socket, implicitTls: boolean, announced: ClientInfo | undefined, started: (connection: Pop3Connection) => void): void {
    const peer = announced ?? { address: socket.remoteAddress ?? 'unknown', port: socket.remotePort ?? 0 };
    const client: ClientInfo = { ...peer, sessionId: currentSession()?.cid };
    const admission = this.options.limiter.admit(client.address);
    if (!admission.admitted) {
      this.logger.info(`Connection from ${client.address} refused: ${admission.reason}`);
      this.services.events.connectionRefused(admission.limit);
      // A TLS client could not read a plaintext reply.
      if (implicitTls) return void socket.destroy();
      socket.end(errLine(admission.reason, 'SYS/TEMP'));
      setTimeout(() => socket.destroy(), 2000).unref();
      return;
    }
    socket.once('close', admission.release);
    if (!implicitTls) return started(this.start(socket, false, client));
    const secure = new tls.TLSSocket(socket, { isServer: true, secureContext: this.options.tls!.secureContext });
    // A handshake that does not finish in time holds a socket, not a session.
    const deadline = setTimeout(() => secure.destroy(), this.options.limits.authTimeoutMs);
    secure.on(
      'error',
      inThisSession((err: Error) => {
        this.logger.debug(`TLS connection from ${client.address} failed: ${err.message}`);
        secure.destroy();
      }),
    );
    secure.once('close', () => clearTimeout(deadline));
    secure.once(
      'secure',
      inThisSession(() => {
        clearTimeout(deadline);
        this.halfOpen.delete(socket);
        started(this.start(secure, true, client));
      }),
    );
  }

  private start(socket: net.Socket, secure: boolean, client: ClientInfo): Pop3Connection {
    this.halfOpen.delete(socket);
    const connection = new Pop3Connection(socket, this.services, this.options.limits, { secure, tls: this.options.tls, client });
    this.connections.add(connection);
    socket.once('close', () => this.connections.delete(connection));
    connection.start();
    return connection;
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
