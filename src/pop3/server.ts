/**
 * The POP3 server: accepts connections on one listener and keeps track of them so that a
 * shutdown can end every session through its cleanup path.
 */
import net from 'node:net';
import type { Logger } from 'winston';
import { Pop3Connection, type ConnectionLimits } from './connection.js';
import type { SessionServices } from './session.js';

export interface Pop3ServerOptions {
  readonly host: string;
  readonly port: number;
  readonly limits: ConnectionLimits;
}

export class Pop3Server {
  private readonly server: net.Server;
  private readonly connections = new Set<Pop3Connection>();
  private readonly logger: Logger;

  constructor(
    private readonly options: Pop3ServerOptions,
    private readonly services: SessionServices,
  ) {
    this.logger = services.logger;
    this.server = net.createServer((socket) => this.accept(socket));
    this.server.on('error', (err) => this.logger.error(`Listener error: ${err.message}`));
  }

  /** Starts listening; resolves to the bound address (useful with port 0). */
  listen(): Promise<net.AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port, this.options.host, () => {
        this.server.off('error', reject);
        const address = this.server.address() as net.AddressInfo;
        this.logger.info(`POP3 listening on ${address.address}:${address.port}`);
        resolve(address);
      });
    });
  }

  get activeSessions(): number {
    return this.connections.size;
  }

  /** Stops accepting and ends every session (nothing expunged, marks taken back, locks released). */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    await Promise.all([...this.connections].map((c) => c.shutdown()));
    await closed;
  }

  private accept(socket: net.Socket): void {
    const connection = new Pop3Connection(socket, this.services, this.options.limits);
    this.connections.add(connection);
    socket.once('close', () => this.connections.delete(connection));
    connection.start();
  }
}
