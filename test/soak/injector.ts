/**
 * The fault injector: one fault at a time, with a pause drawn between two, until the end of
 * the fault window. The kinds come from a shuffled bag (all seven, imap-kill twice, then the
 * same again, ...), so each is injected early and about as often as the others; imap-kill, the
 * cheapest and the one that cuts a read-ahead FETCH in the middle, twice as often. A fault is counted only when it
 * really happened (a process killed, a throttle answer sent, mail delivered while that user was
 * logged in); what it could not do is recorded as `skipped` with the reason. Every fault
 * restores what it broke before the next one starts.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { ExchangeRelay } from '../support/exchange-relay.js';
import { startRedis, type TestRedis } from '../support/redis.js';
import type { LiveLogins } from './clients.js';
import type { FaultRelay } from './fault-relay.js';
import type { ProxyFleet } from './fleet.js';
import type { MailRegistry } from './registry.js';
import type { Rng } from './rng.js';
import { errorText, sleep, until } from './util.js';

export const FAULT_KINDS = ['proxy-sigkill', 'proxy-sigterm', 'imap-kill', 'backend-stall', 'exchange-throttle', 'redis-restart', 'mail-mid-session'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export interface FaultEvent {
  kind: FaultKind;
  at: number;
  endAt: number;
  outcome: 'done' | 'skipped' | 'failed';
  detail: string;
}

/** Redis for the replicas, stopped and started again on the same port. */
export class RedisControl {
  private constructor(private current: TestRedis | undefined, readonly port: number, readonly url: string) {}

  static async start(): Promise<RedisControl> {
    const r = await startRedis();
    return new RedisControl(r, r.port, r.url);
  }

  get up(): boolean {
    return this.current !== undefined;
  }

  async stop(): Promise<void> {
    const r = this.current;
    this.current = undefined;
    await r?.stop();
  }

  async start(): Promise<void> {
    if (this.current === undefined) this.current = await startRedis(this.port);
  }
}

export interface InjectorContext {
  rng: Rng;
  fleet: ProxyFleet;
  relay: FaultRelay;
  exchange: ExchangeRelay;
  redis: RedisControl;
  /** The private Dovecot's folder (its master's pid is in run/master.pid). */
  dovecotDir: string;
  registry: MailRegistry;
  live: LiveLogins;
  note(text: string): void;
}

/** A command the read-ahead or a large message's window sends: where Exchange's throttle hurts. */
const BODY_FETCH = /^\S+ UID FETCH [^\r\n]*BODY\.PEEK\[/i;
/** A large message's first window (`BODY.PEEK[]<0.length>`): it fails before its stream has a reader. */
const WINDOW_FETCH = /^\S+ UID FETCH [^\r\n]*BODY\.PEEK\[\]<0\.\d+>/i;
const NEVER = /(?!)/;

type Result = Pick<FaultEvent, 'outcome' | 'detail'>;
const done = (detail: string): Result => ({ outcome: 'done', detail });
const skipped = (detail: string): Result => ({ outcome: 'skipped', detail });

/** Dovecot's imap processes (children of its master) and their titles (verbose_proctitle). */
export function imapProcesses(dovecotDir: string): Array<{ pid: number; title: string }> {
  try {
    const master = Number(readFileSync(path.join(dovecotDir, 'run', 'master.pid'), 'utf8').trim());
    const children = readFileSync(`/proc/${master}/task/${master}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    const out: Array<{ pid: number; title: string }> = [];
    for (const pid of children) {
      try {
        if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== 'imap') continue;
        out.push({ pid, title: readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim() });
      } catch {
        // gone meanwhile
      }
    }
    return out;
  } catch {
    return [];
  }
}

export class Injector {
  readonly events: FaultEvent[] = [];
  /** Findings of the faults themselves (a SIGTERM that did not end the process cleanly, ...). */
  readonly problems: string[] = [];
  private bag: FaultKind[] = [];

  constructor(private readonly ctx: InjectorContext) {}

  counts(): Record<FaultKind, number> {
    const counts = Object.fromEntries(FAULT_KINDS.map((k) => [k, 0])) as Record<FaultKind, number>;
    for (const e of this.events) if (e.outcome === 'done') counts[e.kind]++;
    return counts;
  }

  /** Injects faults until `end()` (ms since the epoch), pausing [gap] seconds between them. */
  async run(end: () => number, gap: readonly [number, number]): Promise<void> {
    while (Date.now() < end()) {
      if (this.bag.length === 0) this.bag = this.ctx.rng.shuffle([...FAULT_KINDS, 'imap-kill']);
      const kind = this.bag.shift()!;
      const at = Date.now();
      let result: Result;
      try {
        result = await this.inject(kind);
      } catch (err) {
        result = { outcome: 'failed', detail: errorText(err) };
      }
      const event: FaultEvent = { kind, at, endAt: Date.now(), ...result };
      this.events.push(event);
      // What could not be done now is tried again later, so every kind gets its turn.
      if (event.outcome === 'skipped' && !this.bag.includes(kind)) this.bag.push(kind);
      this.ctx.note(`fault ${kind}: ${event.outcome}: ${event.detail}`);
      const pause = this.ctx.rng.int(gap[0] * 1000, gap[1] * 1000);
      // Woken early when the run is cut short (end() moves).
      await until(() => Date.now() >= end(), pause, 100);
    }
  }

  private inject(kind: FaultKind): Promise<Result> {
    switch (kind) {
      case 'proxy-sigkill':
        return this.killProxy('SIGKILL');
      case 'proxy-sigterm':
        return this.killProxy('SIGTERM');
      case 'imap-kill':
        return this.killImap();
      case 'backend-stall':
        return this.stall();
      case 'exchange-throttle':
        return this.throttle();
      case 'redis-restart':
        return this.restartRedis();
      case 'mail-mid-session':
        return this.mailMidSession();
    }
  }

  private async killProxy(sig: 'SIGKILL' | 'SIGTERM'): Promise<Result> {
    const { fleet, rng } = this.ctx;
    const p = rng.pick(fleet.all);
    if (!p.running) return skipped(`${p.name} was not running`);
    const exit = await p.signal(sig, sig, sig === 'SIGTERM' ? 20_000 : 10_000).catch((err: unknown) => {
      this.problems.push(`${p.name}: ${errorText(err)}`);
      return undefined;
    });
    if (exit === undefined) {
      await p.signal('SIGKILL', sig).catch(() => undefined);
    } else if (sig === 'SIGTERM' && (exit.code !== 0 || (exit.shutdownMs ?? 0) > 2000 + 3000 + 5000)) {
      // --shutdown-grace 2 plus at most 3 s of cleanup (README), plus a busy machine's margin.
      this.problems.push(`${p.name} generation ${exit.gen}: SIGTERM ended it with code ${exit.code} signal ${exit.signal} after ${exit.shutdownMs} ms (expected 0 within 10 s); log ${exit.logFile}`);
    } else if (sig === 'SIGKILL' && exit.signal !== 'SIGKILL') {
      this.problems.push(`${p.name} generation ${exit.gen}: exited with code ${exit.code} signal ${exit.signal} before SIGKILL landed`);
    }
    const restarted = await fleet.restart(p, rng.int(200, 1500));
    return restarted ? done(`${p.name} generation ${exit?.gen ?? '?'} (${exit?.shutdownMs !== undefined ? `${exit.shutdownMs} ms to exit` : `${sig}`}), restarted`) : { outcome: 'failed', detail: `${p.name} did not restart` };
  }

  /**
   * Kills the imap processes of a user whose backend connection is streaming a body through
   * the fault relay right now (a read-ahead FETCH or a large message's window), when one shows
   * up within 5 s; else those of a user logged in, else any. Dovecot's process titles
   * (verbose_proctitle) name the user. The oracle's own process may be among them: it retries.
   */
  private async killImap(): Promise<Result> {
    let user: string | undefined;
    await until(() => {
      const users = this.ctx.relay.streamingUsers();
      user = users.length > 0 ? this.ctx.rng.pick(users) : undefined;
      return user !== undefined;
    }, 5000, 20);
    const all = imapProcesses(this.ctx.dovecotDir);
    // Its process may be gone by now (the session ended): then someone logged in.
    if (user !== undefined && !all.some((p) => p.title.includes(`[${user} `))) user = undefined;
    const streaming = user !== undefined;
    if (user === undefined) {
      const live = this.ctx.live.users().filter((u) => all.some((p) => p.title.includes(`[${u} `)));
      user = live.length > 0 ? this.ctx.rng.pick(live) : undefined;
    }
    const victims = user === undefined ? all.slice(0, 1) : all.filter((p) => p.title.includes(`[${user} `));
    if (victims.length === 0) return skipped(`no imap process${user ? ` of ${user}` : ''}`);
    for (const v of victims) {
      try {
        process.kill(v.pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    return done(`${victims.length} of ${user ?? 'someone'}${streaming ? ' while a body streamed' : ''}: ${victims.map((v) => `${v.pid} "${v.title}"`).join(', ')}`);
  }

  private async stall(): Promise<Result> {
    const ms = this.ctx.rng.int(2000, 5000);
    const open = this.ctx.relay.open;
    await this.ctx.relay.stall(ms);
    return done(`${ms} ms, ${open} backend connections open`);
  }

  /**
   * Arms the throttle for the next body FETCH (every other time: the next large message's
   * first window); done once the relay has answered one. The relay records each command before it
   * decides, so the first matching command after arming is the one it answered.
   */
  private async throttle(): Promise<Result> {
    const { rng } = this.ctx;
    const backoff = rng.int(300, 1500);
    // A first window when one comes within 10 s, else any body FETCH.
    const patterns = rng.chance(0.5) ? [WINDOW_FETCH, BODY_FETCH] : [BODY_FETCH];
    for (const pattern of patterns) {
      const hit = await this.throttleOne(pattern, backoff);
      if (hit !== undefined) return done(`"${hit.slice(0, 80)}" answered as throttled (${backoff} ms)`);
    }
    return skipped('no body FETCH within 10 s');
  }

  /** The command the relay answered as throttled, or undefined (disarmed) when none matched in 10 s. */
  private async throttleOne(pattern: RegExp, backoffMs: number): Promise<string | undefined> {
    const { exchange } = this.ctx;
    const from = exchange.commands.length;
    exchange.throttleNext(pattern, backoffMs);
    let hit: string | undefined;
    await until(() => {
      hit = exchange.commands.slice(from).find((c) => pattern.test(c));
      return hit !== undefined;
    }, 10_000, 50);
    if (hit === undefined) exchange.throttleNext(NEVER, 0);
    return hit;
  }

  private async restartRedis(): Promise<Result> {
    const downMs = this.ctx.rng.int(1000, 4000);
    await this.ctx.redis.stop();
    await sleep(downMs);
    for (let attempt = 1; ; attempt++) {
      try {
        await this.ctx.redis.start();
        return done(`down ${downMs} ms`);
      } catch (err) {
        if (attempt >= 5) throw new Error(`Redis did not start again on port ${this.ctx.redis.port}: ${errorText(err)}`);
        await sleep(500);
      }
    }
  }

  /** Delivers to a mailbox while a session of it is logged in (its snapshot must not change). */
  private async mailMidSession(): Promise<Result> {
    let user: string | undefined;
    await until(() => {
      const users = this.ctx.live.users();
      user = users.length > 0 ? this.ctx.rng.pick(users) : undefined;
      return user !== undefined;
    }, 5000, 50);
    if (user === undefined) return skipped('nobody logged in');
    const n = this.ctx.rng.int(1, 3);
    for (let i = 0; i < n; i++) await this.ctx.registry.deliver(user);
    return done(`${n} to ${user}`);
  }
}
