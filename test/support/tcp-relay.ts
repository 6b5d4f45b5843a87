/**
 * A loopback TCP relay between the proxy and the test Dovecot, so tests can break the backend
 * connection at a chosen moment (after so many bytes from the server) or refuse new ones.
 */
import net from 'node:net';

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
  /** Bytes relayed from the server so far, over all connections. */
  readonly serverBytes: number;
  /** Connections opened so far. */
  readonly connections: number;
  close(): Promise<void>;
}

export async function startRelay(targetPort: number, targetHost = '127.0.0.1'): Promise<TcpRelay> {
  const open = new Set<net.Socket>();
  let serverBytes = 0;
  let connections = 0;
  let cutAt: number | undefined;
  let cutOn: RegExp | undefined;

  const cutAll = () => {
    for (const s of open) s.destroy();
    open.clear();
  };

  const server = net.createServer((client) => {
    connections++;
    const upstream = net.connect(targetPort, targetHost);
    open.add(client);
    open.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.on('data', (d: Buffer) => {
      if (cutOn?.test(d.toString('latin1'))) {
        cutOn = undefined;
        return cutAll();
      }
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      if (cutAt !== undefined && serverBytes + d.length >= cutAt) {
        // Pass part of this chunk, then break both sides without a clean close.
        const keep = cutAt - serverBytes;
        serverBytes = cutAt;
        cutAt = undefined;
        client.write(d.subarray(0, Math.max(0, keep)), () => cutAll());
        return;
      }
      serverBytes += d.length;
      client.write(d);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    cutAfter(bytes: number) {
      cutAt = serverBytes + bytes;
    },
    cutAll,
    cutOnCommand(pattern: RegExp) {
      cutOn = pattern;
    },
    get serverBytes() {
      return serverBytes;
    },
    get connections() {
      return connections;
    },
    close: () =>
      new Promise<void>((resolve) => {
        cutAll();
        server.close(() => resolve());
      }),
  };
}
