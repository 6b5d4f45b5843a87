/**
 * A WAN in a box: a TCP relay that adds a one-way delay and a bandwidth limit to every
 * connection through it, and counts the round trips each connection pays.
 *
 * Model, per connection and per direction: bytes leave in order at `mbit` Mbit/s (each chunk
 * takes its size / rate on the wire after the one before it) and arrive `delayMs` later. A new
 * connection is set up three one-way delays later (SYN, SYN-ACK, ACK): only then is the target
 * connected, so its greeting reaches the client two round trips after connect(), as over TCP.
 * While more than `bufferBytes` wait in one direction, the sending side is paused (TCP's window).
 *
 * Round trips, as counted here: the connection set-up counts one; then one more each time the
 * client sends while the link is idle, that is when nothing is travelling in either direction
 * and the last data that crossed came from the server. Such a write waits at least a full round
 * trip for what it asks; a pipelining client's refill sent while replies are still streaming
 * in, or a command queued behind another, does not count: it costs no extra waiting.
 */
import net from 'node:net';

export interface LatencyRelayOptions {
  readonly targetHost: string;
  readonly targetPort: number;
  /** One-way delay in ms (round trip = 2 x). */
  readonly delayMs: number;
  /** Bandwidth per connection and direction, Mbit/s. */
  readonly mbit: number;
  /** Bytes queued in one direction before the sender is paused. */
  readonly bufferBytes?: number;
}

export interface RelayCounts {
  readonly connections: number;
  readonly roundTrips: number;
  readonly bytesUp: number;
  readonly bytesDown: number;
}

export interface LatencyRelay {
  readonly port: number;
  /** Totals over every connection so far. */
  counts(): RelayCounts;
  close(): Promise<void>;
}

interface Chunk {
  readonly data: Buffer;
  /** When it has arrived at the far end (ms, performance.now()). */
  readonly arrival: number;
}

/** One direction of one connection: a serialising link with a delay. */
class Link {
  private readonly queue: Chunk[] = [];
  /** When the wire is free for the next chunk. */
  private wireFree = 0;
  private timer: NodeJS.Timeout | undefined;
  queuedBytes = 0;
  private paused = false;
  private ended = false;
  private endAt = 0;

  constructor(
    private readonly from: net.Socket,
    private readonly to: () => net.Socket | undefined,
    private readonly delayMs: number,
    private readonly bytesPerMs: number,
    private readonly bufferBytes: number,
    private readonly notBefore: () => number,
  ) {}

  get idle(): boolean {
    return this.queue.length === 0;
  }

  push(data: Buffer): void {
    const now = performance.now();
    const start = Math.max(now, this.wireFree, this.notBefore());
    this.wireFree = start + data.length / this.bytesPerMs;
    this.queue.push({ data, arrival: this.wireFree + this.delayMs });
    this.queuedBytes += data.length;
    if (this.queuedBytes > this.bufferBytes && !this.paused) {
      this.paused = true;
      this.from.pause();
    }
    this.schedule();
  }

  end(): void {
    this.ended = true;
    this.endAt = Math.max(performance.now(), this.wireFree, this.notBefore()) + this.delayMs;
    this.schedule();
  }

  /** Delivers what is due; called again when the target connects. */
  flush(): void {
    this.timer = undefined;
    const to = this.to();
    if (to === undefined || to.connecting) return;
    const now = performance.now();
    while (this.queue.length > 0 && this.queue[0]!.arrival <= now + 0.5) {
      const { data } = this.queue.shift()!;
      this.queuedBytes -= data.length;
      if (!to.destroyed) to.write(data);
    }
    if (this.paused && this.queuedBytes <= this.bufferBytes / 2) {
      this.paused = false;
      this.from.resume();
    }
    if (this.queue.length === 0 && this.ended && this.endAt <= now + 0.5) {
      to.end();
      return;
    }
    this.schedule();
  }

  private schedule(): void {
    if (this.timer !== undefined) return;
    const next = this.queue.length > 0 ? this.queue[0]!.arrival : this.ended ? this.endAt : undefined;
    if (next === undefined) return;
    this.timer = setTimeout(() => this.flush(), Math.max(0, next - performance.now()));
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

export async function startLatencyRelay(options: LatencyRelayOptions): Promise<LatencyRelay> {
  const bytesPerMs = (options.mbit * 1_000_000) / 8 / 1000;
  const bufferBytes = options.bufferBytes ?? 2 * 1024 * 1024;
  const open = new Set<net.Socket>();
  let connections = 0;
  let roundTrips = 0;
  let bytesUp = 0;
  let bytesDown = 0;

  const server = net.createServer((client) => {
    connections++;
    roundTrips++;
    client.setNoDelay(true);
    open.add(client);
    let upstream: net.Socket | undefined;
    let down: Link | undefined;
    const connectAt = performance.now() + 3 * options.delayMs;
    /** Who sent the data that crossed last: a client write after the server's counts. */
    let lastFrom: 'client' | 'server' = 'client';
    const up = new Link(client, () => upstream, options.delayMs, bytesPerMs, bufferBytes, () => connectAt);
    // A clean close travels as data does: the far side is ended once what was sent before it arrived.
    const drop = () => {
      up.stop();
      down?.stop();
      client.destroy();
      upstream?.destroy();
    };
    client.on('data', (data: Buffer) => {
      bytesUp += data.length;
      if (lastFrom === 'server' && up.idle && (down?.idle ?? true)) roundTrips++;
      lastFrom = 'client';
      up.push(data);
    });
    client.on('end', () => up.end());
    client.on('error', drop);
    client.on('close', () => open.delete(client));
    setTimeout(() => {
      if (client.destroyed) return;
      const socket = net.connect(options.targetPort, options.targetHost);
      socket.setNoDelay(true);
      upstream = socket;
      open.add(socket);
      const link = new Link(socket, () => client, options.delayMs, bytesPerMs, bufferBytes, () => 0);
      down = link;
      socket.on('data', (data: Buffer) => {
        bytesDown += data.length;
        lastFrom = 'server';
        link.push(data);
      });
      socket.on('end', () => link.end());
      socket.on('error', drop);
      socket.on('close', () => open.delete(socket));
      socket.on('connect', () => up.flush());
    }, Math.max(0, connectAt - performance.now()));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    counts: () => ({ connections, roundTrips, bytesUp, bytesDown }),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of open) s.destroy();
        open.clear();
        server.close(() => resolve());
      }),
  };
}
