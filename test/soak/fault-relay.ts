/**
 * The relay between the proxies and the backend chain (exchange relay, Dovecot): it paces the
 * server's bytes (so that a read-ahead FETCH or a large message is still streaming when a fault
 * hits, as over a real network, instead of sitting whole in a loopback buffer), and on demand
 * stalls every connection: nothing is forwarded either way, on open or new connections, until
 * the stall ends. Stalled connections stay open, so a stall looks to the proxy like a backend
 * that stopped answering, not like one that went away.
 *
 * Built on listenRelay (test/support/tcp-relay.ts): it connects each accepted socket upstream
 * and drops both together; this file only decides when bytes move.
 */
import type net from 'node:net';
import { listenRelay, type RelayServer } from '../support/tcp-relay.js';

export interface FaultRelayOptions {
  /** Server-to-proxy bytes per second and connection. */
  bytesPerSecond: number;
  /** The pacing step, ms. */
  tickMs?: number;
}

export interface FaultRelay {
  readonly port: number;
  readonly connections: number;
  /** Server bytes relayed so far, over all connections. */
  readonly serverBytes: number;
  /** Connections open now. */
  readonly open: number;
  readonly stalled: boolean;
  /** The IMAP users of connections whose server bytes are flowing right now (a FETCH streaming). */
  streamingUsers(): string[];
  /** Stops forwarding for `ms` (both directions, every connection); resolves when it ends. */
  stall(ms: number): Promise<void>;
  close(): Promise<void>;
}

/** Bytes one direction of one connection keeps waiting before it stops reading its source. */
const HIGH_WATER = 1024 * 1024;

/** One direction: bytes from `from` queued and written to `to`, paced when `perTick` is set. */
class Pipe {
  private queue: Buffer[] = [];
  private queued = 0;
  private timer: NodeJS.Timeout | undefined;
  /** When bytes last went through. */
  lastWriteAt = 0;

  constructor(
    private readonly from: net.Socket,
    private readonly to: net.Socket,
    private readonly relay: { stalled: boolean; counted(n: number): void },
    private readonly perTick: number | undefined,
    private readonly tickMs: number,
  ) {
    from.on('data', (d: Buffer) => this.push(d));
  }

  push(d: Buffer): void {
    this.queue.push(d);
    this.queued += d.length;
    if (this.queued >= HIGH_WATER) this.from.pause();
    this.pump();
  }

  /** Writes what the pace allows now, and comes back for the rest. */
  pump(): void {
    if (this.timer !== undefined || this.relay.stalled || this.to.destroyed) return;
    let budget = this.perTick ?? Number.POSITIVE_INFINITY;
    while (budget > 0 && this.queue.length > 0) {
      const head = this.queue[0]!;
      const part = head.length <= budget ? head : head.subarray(0, budget);
      this.to.write(part);
      this.lastWriteAt = Date.now();
      this.relay.counted(part.length);
      budget -= part.length;
      this.queued -= part.length;
      if (part.length === head.length) this.queue.shift();
      else this.queue[0] = head.subarray(part.length);
    }
    if (this.queued < HIGH_WATER && !this.from.destroyed) this.from.resume();
    if (this.queue.length > 0) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.pump();
      }, this.tickMs);
    }
  }

  /** Whether bytes are waiting or went through in the last `ms`. */
  flowing(ms: number): boolean {
    return this.queued > 0 || Date.now() - this.lastWriteAt < ms;
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.queue = [];
    this.queued = 0;
  }
}

export async function startFaultRelay(targetPort: number, options: FaultRelayOptions): Promise<FaultRelay> {
  const tickMs = options.tickMs ?? 20;
  const perTick = Math.max(1, Math.round((options.bytesPerSecond * tickMs) / 1000));
  const pipes = new Set<Pipe>();
  /** Server-to-proxy pipes, with the user that logged in on each (read from its LOGIN). */
  const downs = new Map<Pipe, { user?: string }>();
  let open = 0;
  let serverBytes = 0;
  let stallUntil = 0;
  const state = {
    stalled: false,
    counted: () => undefined,
  };
  const downstate = {
    get stalled() {
      return state.stalled;
    },
    counted(n: number) {
      serverBytes += n;
    },
  };

  const relay: RelayServer = await listenRelay(targetPort, '127.0.0.1', (client, upstream) => {
    open++;
    const up = new Pipe(client, upstream, state, undefined, tickMs);
    const down = new Pipe(upstream, client, downstate, perTick, tickMs);
    pipes.add(up).add(down);
    const who: { user?: string } = {};
    downs.set(down, who);
    // imapflow logs in with LOGIN (the server does not say LOGINDISABLED): the user is its first argument.
    const sniff = (d: Buffer) => {
      const m = /^\S+ LOGIN "?([^"\s]+)"?/m.exec(d.toString('latin1'));
      if (m) {
        who.user = m[1];
        client.off('data', sniff);
      }
    };
    client.on('data', sniff);
    return () => {
      open--;
      downs.delete(down);
      for (const p of [up, down]) {
        p.stop();
        pipes.delete(p);
      }
    };
  });

  const resumeAll = () => {
    for (const p of pipes) p.pump();
  };

  return {
    port: relay.port,
    get connections() {
      return relay.connections;
    },
    get serverBytes() {
      return serverBytes;
    },
    get open() {
      return open;
    },
    get stalled() {
      return state.stalled;
    },
    streamingUsers() {
      return [...downs].filter(([p, w]) => w.user !== undefined && p.flowing(100)).map(([, w]) => w.user!);
    },
    stall(ms: number) {
      stallUntil = Math.max(stallUntil, Date.now() + ms);
      state.stalled = true;
      return new Promise<void>((resolve) => {
        const check = () => {
          const left = stallUntil - Date.now();
          if (left > 0) return void setTimeout(check, left);
          state.stalled = false;
          resumeAll();
          resolve();
        };
        setTimeout(check, ms);
      });
    },
    close: relay.close,
  };
}
