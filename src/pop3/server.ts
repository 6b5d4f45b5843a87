/**
 * The POP3 server: its front door (a plain listener with STLS when TLS is configured and,
 * optionally, an implicit-TLS listener; see net/front-door.ts) and the connections it admitted,
 * kept so that a shutdown can end every session through its cleanup path.
 */
import type net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ConnectionLimiter } from '../limits/connection-limiter.js';
import { FrontDoor, type Admitted } from '../net/front-door.js';
import type { TlsCredentials } from '../tls/tls-credentials.js';
import { Pop3Connection, type ConnectionLimits } from './connection.js';
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
  private readonly door: FrontDoor;
  private readonly connections = new Set<Pop3Connection>();

  constructor(
    private readonly options: Pop3ServerOptions,
    private readonly services: SessionServices,
  ) {
    this.door = new FrontDoor(
      {
        protocol: 'POP3',
        upgrade: 'STLS',
        host: options.host,
        port: options.port,
        tlsPort: options.tls ? options.tlsPort : undefined,
        tls: options.tls,
        proxyProtocol: options.proxyProtocol,
        handshakeTimeoutMs: options.limits.authTimeoutMs,
        limiter: options.limiter,
        logger: services.logger,
        connectionRefused: (limit) => services.events.connectionRefused(limit),
      },
      { start: (admitted) => this.start(admitted), refusal: (reason) => errLine(reason, 'SYS/TEMP') },
    );
  }

  /** Starts listening; resolves to the plain listener's address (useful with port 0). */
  listen(): Promise<net.AddressInfo> {
    return this.door.listen();
  }

  /** The implicit-TLS listener's address, once listening. */
  get tlsAddress(): net.AddressInfo | undefined {
    return this.door.tlsAddress;
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
      this.services.logger.info('TLS certificate reloaded');
    } catch (err) {
      this.services.logger.error(`TLS certificate not reloaded, keeping the current one: ${(err as Error).message}`);
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
    this.door.close();
    const deadline = Date.now() + graceMs;
    while (this.connections.size > 0 && Date.now() < deadline) await sleep(Math.min(100, deadline - Date.now()));
    const ended = Promise.all([...this.connections].map((c) => c.shutdown()));
    const cleanup = new AbortController();
    const outOfTime = sleep(SHUTDOWN_CLEANUP_MS, 'timeout' as const, { signal: cleanup.signal }).catch(() => undefined);
    const outcome = await Promise.race([ended.then(() => 'done' as const), outOfTime]);
    cleanup.abort();
    if (outcome === 'timeout') {
      this.services.logger.warn(
        `Shutdown: ${this.connections.size} session(s) still cleaning up after ${SHUTDOWN_CLEANUP_MS / 1000} s; ` +
          'exiting anyway',
      );
    }
  }

  private start({ socket, secure, client }: Admitted): Pop3Connection {
    const connection = new Pop3Connection(socket, this.services, this.options.limits, {
      secure,
      tls: this.options.tls,
      client,
    });
    this.connections.add(connection);
    socket.once('close', () => this.connections.delete(connection));
    connection.start();
    return connection;
  }
}
