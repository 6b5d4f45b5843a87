/**
 * One soak run, start to end: a private Dovecot with the soak's mailboxes, a private Redis,
 * the backend chain (the fault relay, then the Exchange relay, then Dovecot's IMAP), the three
 * proxies, the clients and the injector for the set time; then everything is given time to
 * settle, the store is read, the invariants are checked and everything is stopped again.
 * All traffic is on 127.0.0.1; every wait is bounded; the run stops by itself.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { NO_LOGIN_PENALTY, startDovecot, type Dovecot, type TestUser } from '../support/dovecot.js';
import { startExchangeRelay, type ExchangeRelay } from '../support/exchange-relay.js';
import { checkBytes, checkNoDeletedFlag, checkNoLoss, checkOracle } from './checks-mail.js';
import { checkAnswers, checkEscapedErrors, checkExits, checkInUse, checkMemory, checkSettled } from './checks-process.js';
import { LiveLogins, runClients, type ClientPlan } from './clients.js';
import type { SessionRecord } from './client-session.js';
import type { Evidence, ProbeResult } from './evidence.js';
import { startFaultRelay, type FaultRelay } from './fault-relay.js';
import { ProxyFleet } from './fleet.js';
import { Injector, RedisControl } from './injector.js';
import type { SoakOptions } from './options.js';
import { StoreOracle } from './oracle.js';
import { Pop3Wire } from './pop3-wire.js';
import { MailRegistry } from './registry.js';
import { buildReport, type SoakReport } from './report.js';
import { Rng } from './rng.js';
import { errorText, since, sleep, within } from './util.js';

/** The proxies' --idle-timeout: short, so that idle clients meet it now and then. */
const IDLE_TIMEOUT_S = 15;
/** Server-to-proxy pace of the fault relay: large messages take a while, as over a network. */
const BACKEND_BYTES_PER_SECOND = 2 * 1024 * 1024;
const SETTLE_MS = 60_000;

interface Harness {
  dovecot?: Dovecot;
  redis?: RedisControl;
  exchange?: ExchangeRelay;
  relay?: FaultRelay;
  fleet?: ProxyFleet;
}

export function soakUsers(n: number): TestUser[] {
  return Array.from({ length: n }, (_, i) => {
    const name = `soak${String(i + 1).padStart(2, '0')}`;
    return { name, password: `${name}-secret` };
  });
}

async function tearDown(h: Harness): Promise<void> {
  const quietly = (p: Promise<unknown> | undefined) => within(p ?? Promise.resolve(), 30_000, 'teardown').catch(() => undefined);
  await quietly(h.fleet?.stopAll());
  await quietly(h.relay?.close());
  await quietly(h.exchange?.close());
  await quietly(h.redis?.stop());
  await quietly(h.dovecot?.stop());
}

/** Logs into every mailbox through each proxy that serves it, once everything has settled. */
async function probe(users: readonly TestUser[], targets: ClientPlan['targets']): Promise<ProbeResult[]> {
  const out: ProbeResult[] = [];
  for (const u of users) {
    for (const t of targets(u.name)) {
      const c = await Pop3Wire.connect(t.port, 30_000);
      if (c.kind !== 'connected') {
        out.push({ user: u.name, target: t.name, reply: `(no connection: ${c.kind})` });
        continue;
      }
      c.wire.send([`USER ${u.name}`, `PASS ${u.password}`, 'QUIT']);
      const replies = [await c.wire.line(30_000), await c.wire.line(30_000), await c.wire.line(30_000)];
      const pass = replies[1]!;
      out.push({ user: u.name, target: t.name, reply: pass.kind === 'line' ? pass.line : `(no reply: ${pass.kind})` });
      c.wire.destroy();
    }
  }
  return out;
}

/** Tops mailboxes up while the clients delete, and lets the oracle read new mail back. */
function backgroundLoops(o: SoakOptions, users: readonly TestUser[], registry: MailRegistry, oracle: StoreOracle, note: (t: string) => void): () => Promise<void> {
  let stopped = false;
  const refill = (async () => {
    while (!stopped) {
      for (const u of users) {
        while (!stopped && registry.estimate(u.name) < o.messagesPerUser) await registry.deliver(u.name).catch((err: unknown) => note(`delivery failed: ${errorText(err)}`));
      }
      await sleep(1000);
    }
  })();
  const learn = (async () => {
    while (!stopped) {
      await oracle.learn().catch((err: unknown) => note(`oracle: ${errorText(err)}`));
      await sleep(3000);
    }
  })();
  return async () => {
    stopped = true;
    await within(Promise.all([refill, learn]), 120_000, 'the background loops').catch((err: unknown) => note(errorText(err)));
  };
}

export async function runSoak(o: SoakOptions, print: (line: string) => void = (l) => process.stdout.write(`${l}\n`), abort?: AbortSignal): Promise<SoakReport> {
  const startedAt = Date.now();
  const note = (t: string) => {
    if (o.verbose) print(`[${since(startedAt)}] ${t}`);
  };
  const logDir = await mkdtemp(path.join(os.tmpdir(), 'pop3-soak-'));
  const users = soakUsers(o.users);
  const h: Harness = {};
  let report: SoakReport | undefined;
  try {
    h.dovecot = await startDovecot({ users, extraConfig: `${NO_LOGIN_PENALTY}\nverbose_proctitle = yes` });
    const registry = new MailRegistry(o.seed, h.dovecot);
    for (const u of users) for (let i = 0; i < o.messagesPerUser; i++) await registry.deliver(u.name);
    const oracle = new StoreOracle(h.dovecot, registry, users);
    await oracle.learn();
    h.redis = await RedisControl.start();
    // Exchange Online in front of Dovecot: its capabilities, estimated sizes and throttle answer.
    h.exchange = await startExchangeRelay(h.dovecot.imapPort);
    h.relay = await startFaultRelay(h.exchange.port, { bytesPerSecond: BACKEND_BYTES_PER_SECOND });
    h.fleet = await ProxyFleet.create({ imapPort: h.relay.port, redisUrl: h.redis.url, lockTtlS: o.lockTtlS, idleTimeoutS: IDLE_TIMEOUT_S, logDir });
    await h.fleet.startAll();
    const fleet = h.fleet;
    const alone = new Set(users.slice(0, Math.ceil(users.length / 2)).map((u) => u.name));
    const targets = (user: string) => (alone.has(user) ? [fleet.single] : fleet.replicas).map((p) => ({ name: p.name, port: p.port }));
    note(`started: Dovecot imap ${h.dovecot.imapPort}, Redis ${h.redis.port}, proxies ${fleet.all.map((p) => `${p.name}:${p.port}`).join(' ')}`);

    const live = new LiveLogins();
    const runStart = Date.now();
    const plan: ClientPlan = { seed: o.seed, workers: o.clients, deadline: runStart + o.durationS * 1000, boundMs: o.replyBoundS * 1000, idleTimeoutMs: IDLE_TIMEOUT_S * 1000, targets, users, registry };
    abort?.addEventListener('abort', () => (plan.deadline = Date.now()));
    const injector = new Injector({ rng: Rng.fork(o.seed, 'injector'), fleet, relay: h.relay, exchange: h.exchange, redis: h.redis, dovecotDir: h.dovecot.dir, registry, live, note });
    const stopLoops = backgroundLoops(o, users, registry, oracle, note);
    const onEnd = (r: SessionRecord) => {
      if (r.quit === 'ok') registry.noteCommitted(r.user, r.deletes.length);
      if (r.timeouts.length > 0 || r.retrs.some((x) => x.outcome === 'whole' && !x.exact)) note(`session #${r.id} ${r.user}: ${JSON.stringify({ timeouts: r.timeouts, bad: r.retrs.filter((x) => !x.exact && x.outcome === 'whole') })}`);
    };
    const clients = runClients(plan, live, onEnd);
    // Faults stop a little before the clients do, each restoring what it broke.
    await injector.run(() => Math.min(plan.deadline, runStart + o.durationS * 1000 - 2000), o.faultGapS);
    const clientLimitMs = Math.max(10_000, (o.durationS + 4 * o.replyBoundS + 120) * 1000 - (Date.now() - runStart));
    const records = await within(clients, clientLimitMs, 'the clients to finish');
    await stopLoops();
    note(`clients done: ${records.length} sessions`);

    await h.redis.start();
    for (const p of fleet.all) if (!p.running) await fleet.restart(p);
    const settled = await fleet.settle(SETTLE_MS);
    const openSessions = await fleet.openSessions();
    // Every lock a killed replica left has expired by now, and every kept listing is harmless.
    await sleep((o.lockTtlS + 1) * 1000);
    const probes = await probe(users, targets);
    await oracle.learn().catch(() => undefined);
    const finalState = await oracle.finalState();
    const e: Evidence = {
      options: o, startedAt: runStart, records, registry, finalState, oracle: oracle.findings, fleet,
      faults: injector.events, faultProblems: injector.problems, settled, openSessions, probes, logDir,
    };
    const results = [checkNoLoss(e), checkNoDeletedFlag(e), checkBytes(e), checkAnswers(e), checkExits(e), checkEscapedErrors(e), checkInUse(e), checkMemory(e), checkSettled(e), checkOracle(e)];
    report = buildReport(e, results);
    return report;
  } finally {
    await tearDown(h);
    if (report !== undefined && report.violations.length === 0 && !o.keep) await rm(logDir, { recursive: true, force: true });
  }
}
