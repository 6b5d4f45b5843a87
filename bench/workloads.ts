/**
 * The benchmark workloads. Each one runs its targets interleaved (native, proxy, imap-direct,
 * native, proxy, ...) so that a slow phase of the machine hits all of them alike, after one
 * untimed warm-up round (Dovecot builds its indexes and caches on first access, the proxy's
 * code gets compiled), and reports medians.
 */
import { join } from 'node:path';
import type { Dovecot, TestUser } from '../test/support/dovecot.js';
import { supportsPipelining } from './fast-pop3.js';
import { imapDownloadAll, imapSnapshotMs, type ImapTarget } from './imap-direct.js';
import { dovecotMasterPid, processTree, RssPeakSampler, steadyReading, treePssKb } from './memory.js';
import { cliHasFlag, startProxyProcess, type ProxyProcess } from './proxy-process.js';
import { median, ratio, type Row } from './report.js';
import { concurrentSessions, downloadAll, openIdleSessions, timeToListing, type DownloadResult, type Pop3Target } from './sessions.js';

export interface Mailbox {
  readonly user: TestUser;
  readonly messages: number;
  /** Total size with CRLF line ends: what STAT reports and what a download transfers. */
  readonly octets: number;
}

export interface BenchConfig {
  readonly quick: boolean;
  /** Timed rounds per workload (after the warm-up round). */
  readonly reps: number;
  readonly w2SessionsPerRound: number;
  readonly idleRounds: number;
  /** Also measure Dovecot's own POP3 with idle sessions (optional figure; costs two rounds of 1000 logins). */
  readonly idleNative: boolean;
}

export interface BenchContext {
  readonly dovecot: Dovecot;
  readonly config: BenchConfig;
  /** Commands in flight at once for a server that announces PIPELINING. */
  readonly window: number;
  /** The window for Dovecot's POP3: `window`, or 1 if it does not announce PIPELINING. */
  readonly nativeWindow: number;
  progress(message: string): void;
}

export interface WorkloadOutcome {
  readonly rows: Row[];
  readonly json: Record<string, unknown>;
}

type Target = 'native' | 'proxy' | 'imapDirect';
type Runners<S> = Partial<Record<Target, () => Promise<S>>>;
type Samples<S> = Record<Target, S[]>;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const MB = 1_000_000;
/** Dovecot at rest: master, its helpers, the spare login and mail processes, and some slack. */
const SETTLED_DOVECOT_PROCESSES = 40;

/**
 * One untimed warm-up round (of the targets in `warmUp`, by default all), then `reps` rounds in
 * which every target runs once, in turn.
 */
async function rounds<S>(
  ctx: BenchContext,
  label: string,
  runners: Runners<S>,
  reps = ctx.config.reps,
  warmUp: readonly Target[] = ['native', 'proxy', 'imapDirect'],
): Promise<Samples<S>> {
  const samples: Samples<S> = { native: [], proxy: [], imapDirect: [] };
  const targets = (['native', 'proxy', 'imapDirect'] as const).filter((t) => runners[t] !== undefined);
  const firstRound = targets.some((t) => warmUp.includes(t)) ? 0 : 1;
  for (let round = firstRound; round <= reps; round++) {
    for (const target of targets) {
      if (round === 0 && !warmUp.includes(target)) continue;
      const sample = await (runners[target] as () => Promise<S>)();
      if (round > 0) samples[target].push(sample);
    }
    ctx.progress(`${label}: ${round === 0 ? 'warm-up round done' : `round ${round}/${reps} done`}`);
  }
  return samples;
}

/** Runs `fn` with a freshly started proxy process, which is stopped afterwards. */
async function withProxy<T>(
  ctx: BenchContext,
  fn: (proxy: ProxyProcess, target: Pop3Target) => Promise<T>,
  extraArgs: readonly string[] = [],
): Promise<{ result: T; proxyLog: string[] }> {
  const proxy = await startProxyProcess({ imapHost: ctx.dovecot.host, imapPort: ctx.dovecot.imapPort, extraArgs });
  try {
    const window = (await supportsPipelining(proxy.port)) ? ctx.window : 1;
    const result = await fn(proxy, { port: proxy.port, window });
    return { result, proxyLog: proxy.log().tail };
  } catch (err) {
    const { tail } = proxy.log();
    if (tail.length > 0) ctx.progress(`proxy log (last lines):\n  ${tail.join('\n  ')}`);
    throw err;
  } finally {
    await proxy.stop();
  }
}

function nativeTarget(ctx: BenchContext): Pop3Target {
  return { port: ctx.dovecot.pop3Port, window: ctx.nativeWindow };
}

function imapTarget(ctx: BenchContext): ImapTarget {
  return { host: ctx.dovecot.host, port: ctx.dovecot.imapPort };
}

/** Complaints about a download that did not fetch exactly the expected messages. */
function downloadProblems(target: string, r: DownloadResult, expected: number): string[] {
  if (r.messages === expected && r.retrieved === expected && r.firstError === undefined) return [];
  return [`${target}: ${r.retrieved}/${r.messages} of ${expected} retrieved${r.firstError ? `, first error: ${r.firstError}` : ''}`];
}

function logProblems(ctx: BenchContext, label: string, problems: string[]): void {
  for (const p of problems.slice(0, 5)) ctx.progress(`${label} problem: ${p}`);
}

/** W1: one big mailbox downloaded in one session. */
export async function w1(ctx: BenchContext, box: Mailbox): Promise<WorkloadOutcome> {
  const { result: s, proxyLog } = await withProxy(ctx, (_proxy, proxyTarget) =>
    rounds(ctx, 'W1', {
      native: () => downloadAll(nativeTarget(ctx), box.user),
      proxy: () => downloadAll(proxyTarget, box.user),
      imapDirect: () => imapDownloadAll(imapTarget(ctx), box.user),
    }),
  );
  const problems = [
    ...s.native.flatMap((r) => downloadProblems('native', r, box.messages)),
    ...s.proxy.flatMap((r) => downloadProblems('proxy', r, box.messages)),
    ...s.imapDirect.flatMap((r) => downloadProblems('imap-direct', r, box.messages)),
  ];
  logProblems(ctx, 'W1', problems);
  const ms = (t: Target) => median(s[t].map((r) => r.ms));
  const mbps = (t: Target) => median(s[t].map((r) => box.octets / MB / (r.ms / 1000)));
  const wallRatio = ratio(ms('proxy'), ms('native'));
  const ok = problems.length === 0;
  return {
    rows: [
      row('W1', 'wall ms', ms, wallRatio, '<= 1.5x, no errors', wallRatio !== undefined && wallRatio <= 1.5 && ok, ok ? undefined : `${problems.length} bad sessions`),
      row('W1', 'MB/s', mbps, ratio(mbps('proxy'), mbps('native')), '', undefined),
    ],
    json: {
      messages: box.messages,
      octets: box.octets,
      wallMs: pick(s, (r) => r.ms),
      mbPerS: { native: mbps('native'), proxy: mbps('proxy'), imapDirect: mbps('imapDirect') },
      clientCpuShare: cpuShare(s, (r) => r),
      medianWallMs: { native: ms('native'), proxy: ms('proxy'), imapDirect: ms('imapDirect') },
      ratio: wallRatio,
      problems,
      proxyLog,
    },
  };
}

interface ListingSample {
  readonly stat: number[];
  readonly uidl: number[];
}

/** W2: a mailbox of many small messages; time to the STAT reply and to the end of UIDL. */
export async function w2(ctx: BenchContext, box: Mailbox): Promise<WorkloadOutcome> {
  const sessions = ctx.config.w2SessionsPerRound;
  const pop3 = (target: Pop3Target) => async (): Promise<ListingSample> => {
    const sample: ListingSample = { stat: [], uidl: [] };
    // Sequential: the proxy allows one session per mailbox.
    for (let i = 0; i < sessions; i++) {
      sample.stat.push(await timeToListing(target, box.user, 'stat'));
      sample.uidl.push(await timeToListing(target, box.user, 'uidl'));
    }
    return sample;
  };
  const imap = async (): Promise<ListingSample> => {
    // Over IMAP, STAT and UIDL need the same thing: the UIDs and sizes of all messages.
    const sample: ListingSample = { stat: [], uidl: [] };
    for (let i = 0; i < sessions; i++) {
      sample.stat.push(await imapSnapshotMs(imapTarget(ctx), box.user));
      sample.uidl.push(await imapSnapshotMs(imapTarget(ctx), box.user));
    }
    return sample;
  };
  const { result: s, proxyLog } = await withProxy(ctx, (_proxy, proxyTarget) =>
    rounds(ctx, 'W2', { native: pop3(nativeTarget(ctx)), proxy: pop3(proxyTarget), imapDirect: imap }),
  );
  const stat = (t: Target) => median(s[t].flatMap((x) => x.stat));
  const uidl = (t: Target) => median(s[t].flatMap((x) => x.uidl));
  const statRatio = ratio(stat('proxy'), stat('native'));
  const uidlRatio = ratio(uidl('proxy'), uidl('native'));
  return {
    rows: [
      row('W2a', 'connect..STAT ms', stat, statRatio, '<= 1x', statRatio !== undefined && statRatio <= 1),
      row('W2b', 'connect..UIDL end ms', uidl, uidlRatio, '<= 1x', uidlRatio !== undefined && uidlRatio <= 1),
    ],
    json: {
      messages: box.messages,
      sessionsPerRound: sessions,
      statMs: pick(s, (x) => x.stat),
      uidlMs: pick(s, (x) => x.uidl),
      medianStatMs: { native: stat('native'), proxy: stat('proxy'), imapDirect: stat('imapDirect') },
      medianUidlMs: { native: uidl('native'), proxy: uidl('proxy'), imapDirect: uidl('imapDirect') },
      statRatio,
      uidlRatio,
      proxyLog,
    },
  };
}

interface RssReading {
  /** RSS just before the RETR, KiB. */
  readonly beforeKb: number;
  /** Peak RSS during the RETR minus beforeKb, KiB. */
  readonly growthKb: number;
}

/**
 * W3: one very large message. The proxy's RSS is sampled during every RETR, the warm-up's
 * included: that first RETR in a fresh process is the one that shows how far memory grows
 * (later ones reuse what the first left behind).
 */
export async function w3(ctx: BenchContext, box: Mailbox): Promise<WorkloadOutcome> {
  const rss: RssReading[] = [];
  const proxied = (proxy: ProxyProcess, target: Pop3Target) => () => {
    const sampler = new RssPeakSampler(proxy.pid);
    return downloadAll(target, box.user, {
      beforeRetr: () => sampler.start(),
      afterRetr: () => {
        const { baselineKb, peakKb } = sampler.stop();
        rss.push({ beforeKb: baselineKb, growthKb: peakKb - baselineKb });
      },
    });
  };
  const { result: s, proxyLog } = await withProxy(ctx, (proxy, proxyTarget) =>
    rounds(ctx, 'W3', {
      native: () => downloadAll(nativeTarget(ctx), box.user),
      proxy: proxied(proxy, proxyTarget),
      imapDirect: () => imapDownloadAll(imapTarget(ctx), box.user),
    }),
  );
  const problems = [
    ...s.native.flatMap((r) => downloadProblems('native', r, 1)),
    ...s.proxy.flatMap((r) => downloadProblems('proxy', r, 1)),
    ...s.imapDirect.flatMap((r) => downloadProblems('imap-direct', r, 1)),
  ];
  logProblems(ctx, 'W3', problems);
  const ms = (t: Target) => median(s[t].map((r) => r.ms));
  const growthMiB = rss.map((r) => r.growthKb / 1024);
  const maxGrowthMiB = growthMiB.length > 0 ? Math.max(...growthMiB) : undefined;
  const wallRatio = ratio(ms('proxy'), ms('native'));
  const ok = problems.length === 0;
  return {
    rows: [
      row('W3', `RETR ${(box.octets / MB).toFixed(0)} MB, wall ms`, ms, wallRatio, '<= 1.5x', wallRatio !== undefined && wallRatio <= 1.5 && ok, ok ? undefined : `${problems.length} bad sessions`),
      {
        workload: 'W3',
        metric: 'proxy RSS growth MiB (max)',
        proxy: maxGrowthMiB,
        target: '<= 64 MiB',
        pass: maxGrowthMiB !== undefined && maxGrowthMiB <= 64,
      },
    ],
    json: {
      octets: box.octets,
      wallMs: pick(s, (r) => r.ms),
      medianWallMs: { native: ms('native'), proxy: ms('proxy'), imapDirect: ms('imapDirect') },
      ratio: wallRatio,
      clientCpuShare: cpuShare(s, (r) => r),
      // The first entry is the warm-up's RETR, in a fresh proxy process.
      proxyRssGrowthMiB: growthMiB,
      proxyRssBeforeMiB: rss.map((r) => r.beforeKb / 1024),
      maxProxyRssGrowthMiB: maxGrowthMiB,
      problems,
      proxyLog,
    },
  };
}

/**
 * W4: many users at once, each downloading a small mailbox. Where the build has
 * --backend-reuse, twice: with it at its default (a round's sessions find the connections the
 * round before left) and with it off.
 */
export async function w4(ctx: BenchContext, boxes: readonly Mailbox[]): Promise<WorkloadOutcome> {
  if (!cliHasFlag('--backend-reuse')) return w4With(ctx, boxes, [], '');
  const on = await w4With(ctx, boxes, [], ', backend reuse on');
  const off = await w4With(ctx, boxes, ['--backend-reuse', '0'], ', backend reuse off');
  return { rows: [...on.rows, ...off.rows], json: { reuseOn: on.json, reuseOff: off.json } };
}

async function w4With(ctx: BenchContext, boxes: readonly Mailbox[], extraArgs: string[], label: string): Promise<WorkloadOutcome> {
  const users = boxes.map((b) => b.user);
  const { result: s, proxyLog } = await withProxy(
    ctx,
    (_proxy, proxyTarget) =>
      rounds(ctx, `W4${label}`, {
        native: () => concurrentSessions(nativeTarget(ctx), users),
        proxy: () => concurrentSessions(proxyTarget, users),
      }),
    extraArgs,
  );
  const rate = (t: Target) => median(s[t].map((r) => (r.sessions - r.errors) / (r.ms / 1000)));
  const errors = (t: Target) => s[t].reduce((sum, r) => sum + r.errors, 0);
  const samples = (t: Target) => s[t].flatMap((r) => r.errorSamples).slice(0, 5);
  logProblems(ctx, 'W4', [...samples('native').map((e) => `native: ${e}`), ...samples('proxy').map((e) => `proxy: ${e}`)]);
  const rateRatio = ratio(rate('proxy'), rate('native'));
  return {
    rows: [
      row('W4', `${users.length} concurrent, sessions/s${label}`, rate, rateRatio, '>= 1x', rateRatio !== undefined && rateRatio >= 1),
      {
        workload: 'W4',
        metric: `failed sessions (all rounds)${label}`,
        native: errors('native'),
        proxy: errors('proxy'),
        target: '0',
        pass: errors('proxy') === 0,
        // Failures on the native side mean the bench's Dovecot setup is wrong, not the proxy.
        note: errors('native') > 0 ? 'native sessions failed: see the log' : undefined,
      },
    ],
    json: {
      users: users.length,
      messagesPerUser: boxes[0]?.messages,
      sessionsPerS: pick(s, (r) => (r.sessions - r.errors) / (r.ms / 1000)),
      wallMs: pick(s, (r) => r.ms),
      medianSessionsPerS: { native: rate('native'), proxy: rate('proxy') },
      ratio: rateRatio,
      errors: { native: errors('native'), proxy: errors('proxy') },
      errorSamples: { native: samples('native'), proxy: samples('proxy') },
      proxyLog,
    },
  };
}

interface IdleSample {
  /** The memory added per idle session, KiB: proxy RSS, or Dovecot's PSS for native. */
  readonly kbPerSession: number;
  /** Proxy rounds: what Dovecot's IMAP side adds per session behind the proxy (PSS), KiB. */
  readonly backendKbPerSession?: number;
  /** How long the logins took (they run 50 at a time). */
  readonly openSeconds: number;
  readonly errors: number;
  readonly errorSamples: string[];
}

interface IdleMeters {
  /** The memory figure of the server under test, KiB. */
  readonly own: () => number | Promise<number>;
  /** The memory of the IMAP server behind it, KiB (proxy only). */
  readonly backend?: () => number;
}

/**
 * One idle round: the memory before, `users.length` authenticated sessions opened and left
 * alone for a moment, the memory again; then the sessions QUIT.
 */
async function idleRound(ctx: BenchContext, label: string, target: Pop3Target, users: readonly TestUser[], meters: IdleMeters): Promise<IdleSample> {
  const before = await meters.own();
  const backendBefore = meters.backend?.();
  const started = performance.now();
  const sessions = await openIdleSessions(target, users);
  const openSeconds = (performance.now() - started) / 1000;
  ctx.progress(`idle: ${users.length - sessions.errors} ${label} sessions opened in ${openSeconds.toFixed(1)} s`);
  try {
    // Let the logins' garbage and any buffered work settle before reading.
    await sleep(2000);
    const after = await meters.own();
    const backendAfter = meters.backend?.();
    const opened = Math.max(1, users.length - sessions.errors);
    return {
      kbPerSession: (after - before) / opened,
      backendKbPerSession: backendBefore === undefined || backendAfter === undefined ? undefined : (backendAfter - backendBefore) / opened,
      openSeconds,
      errors: sessions.errors,
      errorSamples: sessions.errorSamples,
    };
  } finally {
    await sessions.close();
  }
}

/**
 * Waits until Dovecot is back to its resting set of processes. Mail processes are reused and
 * outlive their sessions for a few seconds (idle_kill): a memory baseline taken before they are
 * gone would count them as already there.
 */
async function settleDovecot(masterPid: number | undefined): Promise<void> {
  if (masterPid === undefined) return;
  const deadline = Date.now() + 30_000;
  while (processTree(masterPid).length > SETTLED_DOVECOT_PROCESSES && Date.now() < deadline) await sleep(250);
}

/** Idle: many authenticated sessions doing nothing; the memory each one costs. */
export async function idle(ctx: BenchContext, boxes: readonly Mailbox[]): Promise<WorkloadOutcome> {
  const users = boxes.map((b) => b.user);
  const dovecotPid = dovecotMasterPid(join(ctx.dovecot.dir, 'dovecot.conf'));
  const dovecotPss = () => (dovecotPid === undefined ? 0 : treePssKb(dovecotPid));
  const settle = () => settleDovecot(dovecotPid);

  const native = async (): Promise<IdleSample> => {
    await settle();
    return idleRound(ctx, 'native', nativeTarget(ctx), users, { own: dovecotPss });
  };
  // A fresh proxy per round: a process that already served sessions keeps its grown heap.
  const proxied = async (): Promise<IdleSample> => {
    const { result } = await withProxy(ctx, async (proxy, target) => {
      // One session first, so that the baseline includes the code every session needs.
      await timeToListing(target, users[0] as TestUser, 'stat');
      await settle();
      return idleRound(ctx, 'proxy', target, users, { own: () => steadyReading(() => proxy.rssKb()), backend: dovecotPss });
    });
    return result;
  };
  // Nothing here is timed, and every proxy round starts a fresh process: the only warm-up needed
  // is Dovecot's (each user's first login creates the mailbox indexes), for the native figure.
  const s = ctx.config.idleNative
    ? await rounds(ctx, 'idle', { native, proxy: proxied }, ctx.config.idleRounds, ['native'])
    : await rounds(ctx, 'idle', { proxy: proxied }, ctx.config.idleRounds, []);
  // A thousand mail processes that just lost their session take Dovecot's shutdown several
  // seconds; left alone they exit within idle_kill.
  await settle();
  const kb = (t: Target) => median(s[t].map((r) => r.kbPerSession));
  const errors = (t: Target) => s[t].reduce((sum, r) => sum + r.errors, 0);
  const samples = (t: Target) => s[t].flatMap((r) => r.errorSamples).slice(0, 5);
  logProblems(ctx, 'idle', [...samples('native').map((e) => `native: ${e}`), ...samples('proxy').map((e) => `proxy: ${e}`)]);
  const proxyKb = kb('proxy');
  const ok = errors('proxy') === 0;
  return {
    rows: [
      {
        workload: 'idle',
        metric: `${users.length} sessions, KiB/session`,
        native: kb('native'),
        proxy: proxyKb,
        target: '<= 100 KiB (proxy RSS)',
        pass: proxyKb !== undefined && proxyKb <= 100 && ok,
        note: ok ? undefined : `${errors('proxy')} logins failed`,
      },
    ],
    json: {
      sessions: users.length,
      proxyRssKbPerSession: s.proxy.map((r) => r.kbPerSession),
      nativePssKbPerSession: s.native.map((r) => r.kbPerSession),
      backendPssKbPerProxySession: s.proxy.map((r) => r.backendKbPerSession),
      openSeconds: pick(s, (r) => r.openSeconds),
      medianProxyRssKbPerSession: proxyKb,
      medianNativePssKbPerSession: kb('native'),
      errors: { native: errors('native'), proxy: errors('proxy') },
      errorSamples: { native: samples('native'), proxy: samples('proxy') },
    },
  };
}

function row(
  workload: string,
  metric: string,
  value: (t: Target) => number | undefined,
  r: number | undefined,
  target: string,
  pass: boolean | undefined,
  note?: string,
): Row {
  return { workload, metric, native: value('native'), proxy: value('proxy'), imapDirect: value('imapDirect'), ratio: r, target, pass, note };
}

/** Median share of the wall time the client process spent on the CPU, per target. */
function cpuShare<S>(s: Samples<S>, download: (x: S) => { ms: number; clientCpuMs: number }): Record<Target, number | undefined> {
  const share = (t: Target) => median(s[t].map((x) => download(x).clientCpuMs / download(x).ms));
  return { native: share('native'), proxy: share('proxy'), imapDirect: share('imapDirect') };
}

function pick<S, V>(s: Samples<S>, f: (x: S) => V): Record<Target, V[]> {
  return { native: s.native.map(f), proxy: s.proxy.map(f), imapDirect: s.imapDirect.map(f) };
}
