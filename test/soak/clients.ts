/**
 * The soak's POP3 clients: each worker runs one session after another until the deadline,
 * each with a mailbox and a behaviour drawn from its own seeded stream:
 *
 * - retr-dele-quit: UIDL, RETR the first few, DELE about half, QUIT;
 * - retr-drop: UIDL, LIST, RETR and DELE some, then drop the connection without QUIT, between
 *   commands or in the middle of a RETR body;
 * - top: TOP with 0 to 30 lines of several messages (fetchmail's habit), maybe a DELE, QUIT;
 * - rset: RETR, DELE several, RSET, DELE one, QUIT (only the last DELE may take effect);
 * - pipelined: CAPA, USER, PASS, STAT, UIDL in one write, then every RETR, some DELEs, NOOP
 *   and QUIT in another (mpop's way);
 * - idle: log in, wait (sometimes past the proxy's idle timeout), NOOP, RETR 1, QUIT.
 *
 * Mailboxes of the first half of the users are served by the lone proxy, the others by either
 * replica (drawn per session): a mailbox has one lock registry, so [IN-USE] means one thing.
 */
import type { TestUser } from '../support/dovecot.js';
import { ClientSession, newRecord, type SessionRecord } from './client-session.js';
import { Pop3Wire } from './pop3-wire.js';
import type { MailRegistry } from './registry.js';
import { Rng } from './rng.js';
import { sleep } from './util.js';

export const BEHAVIOURS = ['retr-dele-quit', 'retr-drop', 'top', 'rset', 'pipelined', 'idle'] as const;
export type Behaviour = (typeof BEHAVIOURS)[number];
const WEIGHTS: Record<Behaviour, number> = { 'retr-dele-quit': 28, 'retr-drop': 16, top: 14, rset: 12, pipelined: 20, idle: 10 };

export interface ClientPlan {
  seed: number;
  workers: number;
  deadline: number;
  boundMs: number;
  /** The proxy's --idle-timeout, ms: idle clients sometimes wait longer. */
  idleTimeoutMs: number;
  /** User -> the proxies that serve it (by name) and their ports. */
  targets: (user: string) => Array<{ name: string; port: number }>;
  users: readonly TestUser[];
  registry: MailRegistry;
}

/** Users logged in right now (for the injector's mail-mid-session fault). */
export class LiveLogins {
  private readonly counts = new Map<string, number>();
  add(user: string): void {
    this.counts.set(user, (this.counts.get(user) ?? 0) + 1);
  }
  remove(user: string): void {
    const n = (this.counts.get(user) ?? 1) - 1;
    if (n <= 0) this.counts.delete(user);
    else this.counts.set(user, n);
  }
  users(): string[] {
    return [...this.counts.keys()];
  }
}

type Run = (s: ClientSession, rng: Rng, count: number, plan: ClientPlan) => Promise<void>;

/** USER and PASS, one command each; true when logged in. */
async function login(s: ClientSession, user: TestUser): Promise<boolean> {
  await s.run([`USER ${user.name}`, `PASS ${user.password}`]);
  return s.rec.login === 'ok';
}

const upTo = (count: number, max: number) => Array.from({ length: Math.min(count, max) }, (_, i) => i + 1);

const retrDeleQuit: Run = async (s, rng, count) => {
  for (const n of upTo(count, 6)) {
    await s.one(`RETR ${n}`);
    if (rng.chance(0.5)) await s.one(`DELE ${n}`);
  }
  await s.one('QUIT');
};

const retrDrop: Run = async (s, rng, count) => {
  const list = await s.one('LIST');
  const sizes = (list?.body?.toString('latin1') ?? '').split('\r\n').map((r) => /^(\d+) (\d+)$/.exec(r)).filter((m) => m !== null).map((m) => ({ n: Number(m[1]), size: Number(m[2]) }));
  for (const n of upTo(count, rng.int(1, 4))) {
    await s.one(`RETR ${n}`);
    if (rng.chance(0.6)) await s.one(`DELE ${n}`);
  }
  const biggest = sizes.sort((a, b) => b.size - a.size)[0];
  if (biggest === undefined || rng.chance(0.4) || !s.alive) return s.drop('between');
  // In the middle of a body: the proxy must deliver nothing more of it, and delete nothing.
  s.wire.send([`RETR ${biggest.n}`]);
  await s.wire.waitBytes(rng.int(1, Math.max(1, Math.min(biggest.size - 1, 64 * 1024))), 2000);
  s.drop('mid-body');
};

const top: Run = async (s, rng, count) => {
  const picks = rng.shuffle(upTo(count, 50)).slice(0, 4);
  for (const n of picks) await s.one(`TOP ${n} ${rng.pick([0, 1, 5, 30])}`);
  if (picks.length > 0 && rng.chance(0.3)) await s.one(`DELE ${picks[0]}`);
  await s.one('QUIT');
};

const rset: Run = async (s, rng, count) => {
  if (count > 0) await s.one('RETR 1');
  for (const n of upTo(count, 3)) await s.one(`DELE ${n}`);
  await s.one('RSET');
  if (count > 0) await s.one(`DELE ${rng.int(1, count)}`);
  await s.one('QUIT');
};

const idle: Run = async (s, rng, _count, plan) => {
  // Some wait past the idle timeout: the proxy closes those, which counts as an answer.
  const waitMs = rng.chance(0.25) ? plan.idleTimeoutMs + rng.int(1000, 4000) : rng.int(1000, 8000);
  await sleep(Math.min(waitMs, Math.max(0, plan.deadline + plan.idleTimeoutMs - Date.now())));
  await s.one('NOOP');
  await s.one('RETR 1');
  await s.one('QUIT');
};

const RUNS: Record<Exclude<Behaviour, 'pipelined'>, Run> = { 'retr-dele-quit': retrDeleQuit, 'retr-drop': retrDrop, top, rset, idle };

async function pipelined(s: ClientSession, rng: Rng, user: TestUser, live: LiveLogins): Promise<void> {
  await s.run(['CAPA', `USER ${user.name}`, `PASS ${user.password}`, 'STAT', 'UIDL']);
  if (s.rec.login !== 'ok') return void (await s.one('QUIT'));
  const numbers = upTo(s.rec.uidls.size, rng.int(1, 8));
  const deletes = numbers.filter(() => rng.chance(0.5)).map((n) => `DELE ${n}`);
  live.add(user.name);
  try {
    await s.run([...numbers.map((n) => `RETR ${n}`), ...deletes, 'NOOP', 'QUIT']);
  } finally {
    live.remove(user.name);
  }
}

/** One session from connect to end; the record says what happened. */
async function session(rec: SessionRecord, port: number, user: TestUser, rng: Rng, plan: ClientPlan, live: LiveLogins): Promise<void> {
  const connected = await Pop3Wire.connect(port, plan.boundMs);
  if (connected.kind !== 'connected') {
    rec.connect = connected.kind;
    if (connected.kind === 'timeout') rec.timeouts.push({ command: '(greeting)', waitedMs: plan.boundMs, at: Date.now() });
    return;
  }
  rec.greeting = connected.greeting;
  rec.localPort = connected.wire.localPort;
  const s = new ClientSession(rec, connected.wire, plan.boundMs, plan.registry);
  try {
    if (rec.behaviour === 'pipelined') {
      await pipelined(s, rng, user, live);
      return;
    }
    if (!(await login(s, user))) {
      await s.one('QUIT');
      return;
    }
    live.add(user.name);
    try {
      await s.one('UIDL');
      await RUNS[rec.behaviour as Exclude<Behaviour, 'pipelined'>](s, rng, rec.uidls.size, plan);
    } finally {
      live.remove(user.name);
    }
  } finally {
    connected.wire.destroy();
  }
}

/** Runs every worker until the deadline; resolves with every session's record. */
export async function runClients(plan: ClientPlan, live: LiveLogins, onEnd: (rec: SessionRecord) => void): Promise<SessionRecord[]> {
  const records: SessionRecord[] = [];
  let nextId = 0;
  const worker = async (w: number) => {
    const rng = Rng.fork(plan.seed, `client:${w}`);
    while (Date.now() < plan.deadline) {
      const user = rng.pick(plan.users);
      const target = rng.pick(plan.targets(user.name));
      const rec = newRecord(++nextId, w, user.name, target.name, rng.weighted(WEIGHTS));
      records.push(rec);
      try {
        await session(rec, target.port, user, rng, plan, live);
      } finally {
        rec.endAt = Date.now();
        onEnd(rec);
      }
      await sleep(rec.connect === 'refused' ? 300 : rng.int(50, 500));
    }
  };
  await Promise.all(Array.from({ length: plan.workers }, (_, w) => worker(w)));
  return records;
}
