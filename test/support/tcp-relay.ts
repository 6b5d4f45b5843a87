/**
 * A loopback TCP relay between the proxy and the test Dovecot, so tests can break the backend
 * connection at a chosen moment (after so many bytes from the server) or refuse new ones, or
 * slow the server's side down.
 *
 * `listenRelay` is the scaffolding shared with the other relays (test/support/gmail-relay.ts):
 * accept, connect upstream, track both sockets, drop both together, close.
 */
import net from 'node:net';

/**
 * Wires up one accepted connection: `client` is the accepted socket, `upstream` its connection
 * to the target. Both are tracked, and dropped together when either errs or closes; the
 * function returned, if any, runs then (once).
 */
export type RelayConnection = (client: net.Socket, upstream: net.Socket) => (() => void) | void;

export interface RelayServer {
  readonly port: number;
  /** Connections opened so far. */
  readonly connections: number;
  /** Destroys every open socket now, both sides. */
  cutAll(): void;
  /** Destroys every open socket and stops listening. */
  close(): Promise<void>;
}

/** Listens on a free loopback port and relays each connection to `targetHost:targetPort` as `wire` sets up. */
export async function listenRelay(targetPort: number, targetHost: string, wire: RelayConnection): Promise<RelayServer> {
  const open = new Set<net.Socket>();
  let connections = 0;

  const cutAll = () => {
    for (const s of open) s.destroy();
    open.clear();
  };

  const server = net.createServer((client) => {
    connections++;
    const upstream = net.connect(targetPort, targetHost);
    open.add(client);
    open.add(upstream);
    let cleanup: (() => void) | void = undefined;
    let dropped = false;
    const drop = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
      if (dropped) return;
      dropped = true;
      cleanup?.();
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    cleanup = wire(client, upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    get connections() {
      return connections;
    },
    cutAll,
    close: () =>
      new Promise<void>((resolve) => {
        cutAll();
        server.close(() => resolve());
      }),
  };
}

export interface TcpRelay {
  readonly port: number;
  /** Cuts every open connection once `bytes` more bytes have come from the server. */
  cutAfter(bytes: number): void;
  /** Cuts every open connection now. */
  cutAll(): void;
  /**
   * Cuts every open connection when the client next sends a line matching `pattern`, before
   * the server sees that line.
   */
  cutOnCommand(pattern: RegExp): void;
  /**
   * Passes the client's next line matching `pattern` on to the server, then cuts every open
   * connection when the server starts to answer: the server ran the command, the client never
   * hears so.
   */
  cutAfterCommand(pattern: RegExp): void;
  /** Bytes relayed from the server so far, over all connections. */
  readonly serverBytes: number;
  /** Connections opened so far. */
  readonly connections: number;
  close(): Promise<void>;
}

export interface RelayOptions {
  targetHost?: string;
  /**
   * Passes at most `bytesPerTick` bytes from the server to the client per `tickMs` on each
   * connection (reading from the server stops while 4 ticks' worth are waiting). On loopback
   * a large message would otherwise be in kernel buffers long before the client has read it.
   */
  throttle?: { bytesPerTick: number; tickMs: number };
}

export async function startRelay(targetPort: number, options: RelayOptions = {}): Promise<TcpRelay> {
  const { targetHost = '127.0.0.1', throttle } = options;
  let serverBytes = 0;
  let cutAt: number | undefined;
  let cutOn: RegExp | undefined;
  let cutAfter: RegExp | undefined;
  let cutOnReply = false;

  const relay = await listenRelay(targetPort, targetHost, (client, upstream) => {
    client.on('data', (d: Buffer) => {
      if (cutOn?.test(d.toString('latin1'))) {
        cutOn = undefined;
        return relay.cutAll();
      }
      if (cutAfter?.test(d.toString('latin1'))) {
        cutAfter = undefined;
        cutOnReply = true;
      }
      upstream.write(d);
    });
    /** Passes server bytes on to the client, or part of them and then cuts. */
    const toClient = (d: Buffer) => {
      if (cutOnReply) {
        cutOnReply = false;
        return relay.cutAll();
      }
      if (cutAt !== undefined && serverBytes + d.length >= cutAt) {
        // Pass part of this chunk, then break both sides without a clean close.
        const keep = cutAt - serverBytes;
        serverBytes = cutAt;
        cutAt = undefined;
        client.write(d.subarray(0, Math.max(0, keep)), () => relay.cutAll());
        return;
      }
      serverBytes += d.length;
      client.write(d);
    };
    if (throttle === undefined) {
      upstream.on('data', toClient);
      return;
    }
    const { bytesPerTick, tickMs } = throttle;
    let queue: Buffer[] = [];
    let queued = 0;
    const timer = setInterval(() => {
      let budget = bytesPerTick;
      while (budget > 0 && queue.length > 0 && !client.destroyed) {
        const head = queue[0]!;
        const part = head.subarray(0, budget);
        toClient(part);
        budget -= part.length;
        queued -= part.length;
        if (part.length === head.length) queue.shift();
        else queue[0] = head.subarray(part.length);
      }
      if (queued < 4 * bytesPerTick) upstream.resume();
    }, tickMs);
    upstream.on('data', (d: Buffer) => {
      queue.push(d);
      queued += d.length;
      if (queued >= 4 * bytesPerTick) upstream.pause();
    });
    return () => {
      clearInterval(timer);
      queue = [];
    };
  });

  return {
    port: relay.port,
    cutAfter(bytes: number) {
      cutAt = serverBytes + bytes;
    },
    cutAll: relay.cutAll,
    cutOnCommand(pattern: RegExp) {
      cutOn = pattern;
    },
    cutAfterCommand(pattern: RegExp) {
      cutAfter = pattern;
    },
    get serverBytes() {
      return serverBytes;
    },
    get connections() {
      return relay.connections;
    },
    close: relay.close,
  };
}
