/**
 * Benchmark of the proxy against Dovecot's own POP3 on the same Maildir store, with a direct
 * IMAP client as the ceiling of the IMAP side. Usage:
 *
 *   npm run bench [-- [--quick] [--only=W1,W2,W3,W4,W5,W7,idle]]
 *
 * Progress goes to stderr; the result table and one `BENCH_JSON {...}` line go to stdout.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { mimeMessage } from '../test/support/corpus.js';
import { startDovecot, type Dovecot, type TestUser } from '../test/support/dovecot.js';
import { dovecotConfigForPostfix } from '../test/support/postfix.js';
import { installSignalHandlers, onCleanup, runCleanups } from './cleanup.js';
import { supportsPipelining } from './fast-pop3.js';
import { crlfSize, fillMaildir } from './mailstore.js';
import { CLI, loadLimitArgs } from './proxy-process.js';
import { formatTable, type Row } from './report.js';
import { w5 } from './remote.js';
import { w7, W7_SIZES } from './submission.js';
import { idle, w1, w2, w3, w4, type BenchConfig, type BenchContext, type Mailbox, type WorkloadOutcome } from './workloads.js';

const WORKLOADS = ['W1', 'W2', 'W3', 'W4', 'W5', 'W7', 'idle'] as const;
type WorkloadName = (typeof WORKLOADS)[number];

/** Commands in flight at once when the server announces PIPELINING. */
const PIPELINE_WINDOW = 64;

const SIZES = {
  w1: { messages: 1000, bytes: 50_000 },
  w2: { messages: 20_000, bytes: 2_000 },
  w3: { bytes: 100 * 1024 * 1024 },
  w4: { users: 200, messages: 20, bytes: 20_000 },
  w5: { messages: 200, bytes: 20_000 },
  w7: W7_SIZES,
  idle: { users: 1000, bytes: 2_000 },
};

const FULL: BenchConfig = { quick: false, reps: 7, w2SessionsPerRound: 5, idleRounds: 3, idleNative: true };
/** Same workloads and sizes, fewer rounds; the optional native idle figure is left out. */
const QUICK: BenchConfig = { quick: true, reps: 3, w2SessionsPerRound: 3, idleRounds: 1, idleNative: false };

/**
 * Dovecot's limits raised for the bench: up to 1000 idle sessions at once (each one a POP3 or
 * an IMAP process) and 200 logins in parallel.
 *
 * Dovecot runs in its documented high-performance mode, for its POP3 and for its IMAP alike:
 * long-lived login processes and mail processes reused for the next session. In the default
 * mode every login execs two new processes, which on a small VM costs more than the whole
 * session's protocol work and would hide what is being compared.
 *
 * Dovecot's POP3 does not set \Seen on retrieved messages, like the proxy, which fetches with
 * BODY.PEEK; otherwise only the native side would rename every message file at QUIT.
 */
const DOVECOT_CONFIG = [
  'default_process_limit = 1500',
  'default_client_limit = 4000',
  'default_vsz_limit = 1G',
  'mail_max_userip_connections = 2000',
  'pop3_no_flag_updates = yes',
  ...['imap-login', 'pop3-login'].flatMap((s) => [`service ${s} {`, '  service_count = 0', '  process_min_avail = 2', '  process_limit = 1500', '}']),
  // idle_kill: spare mail processes beyond process_min_avail go away soon after their session.
  ...['imap', 'pop3'].flatMap((s) => [`service ${s} {`, '  service_count = 100', '  process_min_avail = 4', '  idle_kill = 2 secs', '  process_limit = 1500', '}']),
].join('\n');

const startedAt = performance.now();

function progress(message: string): void {
  const seconds = ((performance.now() - startedAt) / 1000).toFixed(1).padStart(6);
  process.stderr.write(`[${seconds} s] ${message}\n`);
}

function parseArgs(argv: string[]): { config: BenchConfig; only: Set<WorkloadName> } {
  let config = FULL;
  let only = new Set<WorkloadName>(WORKLOADS);
  for (const arg of argv) {
    if (arg === '--quick') {
      config = QUICK;
    } else if (arg.startsWith('--only=')) {
      const names = arg.slice('--only='.length).split(',');
      const unknown = names.filter((n) => !(WORKLOADS as readonly string[]).includes(n));
      if (unknown.length > 0) throw new Error(`unknown workload(s) ${unknown.join(', ')}; known: ${WORKLOADS.join(', ')}`);
      only = new Set(names as WorkloadName[]);
    } else {
      throw new Error(`unknown argument ${arg}; usage: bench.js [--quick] [--only=${WORKLOADS.join(',')}]`);
    }
  }
  return { config, only };
}

/** The soft limit on open files: 1000 idle sessions need 1000 sockets here and 2000 in the proxy. */
function checkFileLimit(): void {
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'latin1'));
  const limit = m?.[1] === 'unlimited' ? Infinity : Number(m?.[1] ?? 0);
  if (limit < 4096) progress(`warning: open file limit is ${limit}; the idle workload needs about 3000 (raise it with ulimit -n)`);
}

/** The share of all CPUs' time that was not idle during the next `ms` (from /proc/stat). */
async function cpuBusy(ms: number): Promise<number> {
  const read = () => {
    const fields = (/^cpu\s+(.*)$/m.exec(readFileSync('/proc/stat', 'latin1'))?.[1] ?? '').trim().split(/\s+/).map(Number);
    // user nice system idle iowait irq softirq steal: idle and iowait count as idle.
    const total = fields.slice(0, 8).reduce((a, b) => a + b, 0);
    return { total, idle: (fields[3] ?? 0) + (fields[4] ?? 0) };
  };
  const a = read();
  await new Promise((r) => setTimeout(r, ms));
  const b = read();
  const total = b.total - a.total;
  return total > 0 ? 1 - (b.idle - a.idle) / total : 0;
}

/** The commit of the working tree the bench runs in, "+" when it has changes; undefined outside git. */
function gitCommit(): string | undefined {
  const head = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' });
  if (head.status !== 0) return undefined;
  const dirty = spawnSync('git', ['status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' }).stdout.trim() !== '';
  return `${head.stdout.trim()}${dirty ? '+' : ''}`;
}

const user = (name: string): TestUser => ({ name, password: `${name}-secret` });

interface Users {
  w1: TestUser;
  w2: TestUser;
  w3: TestUser;
  w4: TestUser[];
  w5: TestUser;
  w7: TestUser;
  idle: TestUser[];
}

function benchUsers(): Users {
  return {
    w1: user('w1'),
    w2: user('w2'),
    w3: user('w3'),
    w5: user('w5'),
    w7: user('w7'),
    w4: Array.from({ length: SIZES.w4.users }, (_, i) => user(`w4-${i}`)),
    idle: Array.from({ length: SIZES.idle.users }, (_, i) => user(`idle-${i}`)),
  };
}

/** Writes `count` messages made by `make` and returns the mailbox with its CRLF size. */
async function fill(d: Dovecot, u: TestUser, count: number, make: (i: number) => Buffer): Promise<Mailbox> {
  let octets = 0;
  await fillMaildir(d, u.name, count, (i) => {
    const data = make(i);
    octets += crlfSize(data);
    return data;
  });
  return { user: u, messages: count, octets };
}

/** Fills the Maildirs the selected workloads need. */
async function fillStore(d: Dovecot, users: Users, only: Set<WorkloadName>): Promise<Record<WorkloadName, Mailbox[]>> {
  const boxes: Record<WorkloadName, Mailbox[]> = { W1: [], W2: [], W3: [], W4: [], W5: [], W7: [], idle: [] };
  if (only.has('W1')) boxes.W1.push(await fill(d, users.w1, SIZES.w1.messages, (i) => mimeMessage(i, SIZES.w1.bytes)));
  if (only.has('W2')) boxes.W2.push(await fill(d, users.w2, SIZES.w2.messages, (i) => mimeMessage(i, SIZES.w2.bytes)));
  if (only.has('W3')) boxes.W3.push(await fill(d, users.w3, 1, (i) => mimeMessage(i, SIZES.w3.bytes)));
  if (only.has('W4')) {
    // Every W4 user gets the same messages: built once, written many times.
    const messages = Array.from({ length: SIZES.w4.messages }, (_, i) => mimeMessage(i, SIZES.w4.bytes));
    for (const u of users.w4) boxes.W4.push(await fill(d, u, messages.length, (i) => messages[i] as Buffer));
  }
  if (only.has('W5')) boxes.W5.push(await fill(d, users.w5, SIZES.w5.messages, (i) => mimeMessage(i, SIZES.w5.bytes)));
  // W7 submits its own mail (through Postfix and LMTP): the mailbox starts empty.
  if (only.has('W7')) boxes.W7.push({ user: users.w7, messages: 0, octets: 0 });
  if (only.has('idle')) {
    const message = mimeMessage(0, SIZES.idle.bytes);
    for (const u of users.idle) boxes.idle.push(await fill(d, u, 1, () => message));
  }
  return boxes;
}

async function runWorkload(name: WorkloadName, ctx: BenchContext, boxes: Mailbox[]): Promise<WorkloadOutcome> {
  const first = boxes[0] as Mailbox;
  switch (name) {
    case 'W1':
      return w1(ctx, first);
    case 'W2':
      return w2(ctx, first);
    case 'W3':
      return w3(ctx, first);
    case 'W4':
      return w4(ctx, boxes);
    case 'W5':
      return w5(ctx, first);
    case 'W7':
      return w7(ctx, first);
    case 'idle':
      return idle(ctx, boxes);
  }
}

async function main(): Promise<number> {
  const { config, only } = parseArgs(process.argv.slice(2));
  installSignalHandlers();
  checkFileLimit();
  // Other work on the machine skews every figure: say so up front, and record it.
  const busyBefore = await cpuBusy(1000);
  if (busyBefore > 0.2) progress(`warning: the CPUs are ${(busyBefore * 100).toFixed(0)} % busy before the start; other work on this machine will skew the figures`);
  const users = benchUsers();
  const all = [users.w1, users.w2, users.w3, users.w5, users.w7, ...users.w4, ...users.idle];
  progress(`starting Dovecot with ${all.length} users (${config.quick ? 'quick' : 'full'} run: ${[...only].join(', ')})`);
  // W7's Postfix needs Dovecot's LMTP and auth sockets; the other workloads run without them.
  const extraConfig = only.has('W7') ? `${DOVECOT_CONFIG}\n${dovecotConfigForPostfix()}` : DOVECOT_CONFIG;
  const dovecot = await startDovecot({ users: all, extraConfig });
  onCleanup(async () => {
    progress('stopping Dovecot');
    await dovecot.stop();
  });
  progress(`Dovecot: IMAP ${dovecot.imapPort}, POP3 ${dovecot.pop3Port}; writing the Maildirs`);
  const boxes = await fillStore(dovecot, users, only);
  const nativeWindow = (await supportsPipelining(dovecot.pop3Port)) ? PIPELINE_WINDOW : 1;
  progress(`Maildirs written; Dovecot POP3 pipelining window ${nativeWindow}`);

  const ctx: BenchContext = { dovecot, config, nativeWindow, window: PIPELINE_WINDOW, progress };
  const rows: Row[] = [];
  const results: Record<string, unknown> = {};
  let failures = 0;
  for (const name of WORKLOADS) {
    if (!only.has(name)) continue;
    const started = performance.now();
    try {
      const outcome = await runWorkload(name, ctx, boxes[name]);
      rows.push(...outcome.rows);
      results[name] = { ...outcome.json, seconds: (performance.now() - started) / 1000 };
    } catch (err) {
      failures += 1;
      const message = (err as Error).stack ?? String(err);
      progress(`${name} failed: ${message}`);
      rows.push({ workload: name, metric: '-', target: '-', pass: false, note: `failed: ${(err as Error).message.split('\n')[0]}` });
      results[name] = { error: (err as Error).message };
    }
  }

  process.stdout.write(`\n${formatTable(rows)}\n\n`);
  const summary = {
    quick: config.quick,
    reps: config.reps,
    sizes: SIZES,
    pipelineWindow: { native: nativeWindow, proxy: PIPELINE_WINDOW },
    proxy: { cli: CLI, commit: gitCommit(), limitArgs: loadLimitArgs() },
    totalSeconds: (performance.now() - startedAt) / 1000,
    cpus: os.cpus().length,
    cpuBusyBefore: busyBefore,
    pass: rows.every((r) => r.pass !== false),
    rows,
    workloads: results,
  };
  process.stdout.write(`BENCH_JSON ${JSON.stringify(summary)}\n`);
  return failures === 0 ? 0 : 1;
}

main()
  .then(
    async (status) => {
      await runCleanups();
      progress('done');
      process.exit(status);
    },
    async (err: unknown) => {
      progress(`benchmark failed: ${(err as Error).stack ?? String(err)}`);
      await runCleanups();
      process.exit(1);
    },
  );
