/**
 * W5, the remote backend: the legacy application and the proxy on a LAN, the IMAP server
 * across a WAN (latency-relay.ts: 100 Mbit/s per connection, 10 and 40 ms round trip). The
 * comparison is the same application pointed straight at the remote server's own POP3, through
 * the same kind of link.
 *
 * Targets: native (Dovecot's POP3 through the WAN), proxy-cold (the proxy, a new backend
 * connection for every session: --backend-reuse 0 where the build has it) and proxy-reused (the
 * proxy with its backend connections kept between sessions: each sample is the second of two
 * sessions back to back). Clients: one that waits for every reply (window 1) and one that
 * pipelines (window 64, as FastPop3 does elsewhere in the bench).
 */
import { startLatencyRelay, type LatencyRelay } from './latency-relay.js';
import { cliHasFlag, startProxyProcess, type ProxyProcess } from './proxy-process.js';
import { median, ratio, type Row } from './report.js';
import { retrieveSession, type RetrieveResult } from './sessions.js';
import type { BenchContext, Mailbox, WorkloadOutcome } from './workloads.js';

const MBIT = 100;
export const W5_RTTS_MS = [10, 40] as const;
const CLIENTS = [
  // Native pays a round trip per command here; the proxy's read-ahead hides the WAN.
  { name: 'non-pipelining', window: 1, target: '<= 1x', limit: 1 },
  { name: 'pipelining', window: 64, target: '<= 1x', limit: 1 },
] as const;

type W5Target = 'native' | 'cold' | 'reused';

interface W5Sample extends RetrieveResult {
  /** Round trips over the WAN link during the session (see latency-relay.ts). */
  readonly roundTrips: number;
  readonly connections: number;
}

interface Path {
  readonly port: number;
  readonly relay: LatencyRelay;
  /** Runs before the timed session (the reused target's first session). */
  readonly prime?: boolean;
}

async function sample(path: Path, box: Mailbox, window: number): Promise<W5Sample> {
  if (path.prime) await retrieveSession({ port: path.port, window }, box.user, window);
  const before = path.relay.counts();
  const result = await retrieveSession({ port: path.port, window }, box.user, window);
  // A backend LOGOUT is sent after the client has its answer: let it cross before counting.
  await new Promise((r) => setTimeout(r, 50));
  const after = path.relay.counts();
  return { ...result, roundTrips: after.roundTrips - before.roundTrips, connections: after.connections - before.connections };
}

export async function w5(ctx: BenchContext, box: Mailbox): Promise<WorkloadOutcome> {
  const rows: Row[] = [];
  const json: Record<string, unknown> = { messages: box.messages, octets: box.octets, mbit: MBIT };
  const reuse = cliHasFlag('--backend-reuse');
  const problems: string[] = [];
  for (const rtt of W5_RTTS_MS) {
    const relay = (port: number) => startLatencyRelay({ targetHost: ctx.dovecot.host, targetPort: port, delayMs: rtt / 2, mbit: MBIT });
    const nativeRelay = await relay(ctx.dovecot.pop3Port);
    const coldRelay = await relay(ctx.dovecot.imapPort);
    const reusedRelay = reuse ? await relay(ctx.dovecot.imapPort) : undefined;
    const proxies: ProxyProcess[] = [];
    try {
      const start = async (r: LatencyRelay, extraArgs: string[]) => {
        const p = await startProxyProcess({ imapHost: '127.0.0.1', imapPort: r.port, extraArgs });
        proxies.push(p);
        return p;
      };
      const cold = await start(coldRelay, reuse ? ['--backend-reuse', '0'] : []);
      const paths: Partial<Record<W5Target, Path>> = {
        native: { port: nativeRelay.port, relay: nativeRelay },
        cold: { port: cold.port, relay: coldRelay },
      };
      if (reusedRelay) paths.reused = { port: (await start(reusedRelay, ['--backend-reuse', '30'])).port, relay: reusedRelay, prime: true };
      const targets = (['native', 'cold', 'reused'] as const).filter((t) => paths[t] !== undefined);
      for (const client of CLIENTS) {
        const label = `W5 ${rtt} ms ${client.name}`;
        const s: Record<W5Target, W5Sample[]> = { native: [], cold: [], reused: [] };
        for (let round = 0; round <= ctx.config.reps; round++) {
          for (const t of targets) {
            const x = await sample(paths[t]!, box, client.window);
            if (x.retrieved !== box.messages || x.firstError !== undefined) problems.push(`${label} ${t}: ${x.retrieved}/${box.messages} retrieved${x.firstError ? `, ${x.firstError}` : ''}`);
            if (round > 0) s[t].push(x);
          }
          ctx.progress(`${label}: ${round === 0 ? 'warm-up round done' : `round ${round}/${ctx.config.reps} done`}`);
        }
        // Byte check: every path must deliver the very octets native POP3 delivers.
        const reference = s.native[0]?.bodyBytes;
        for (const t of targets) {
          for (const x of s[t]) if (x.bodyBytes !== reference) problems.push(`${label} ${t}: ${x.bodyBytes} body octets, native ${reference}`);
        }
        const ms = (t: W5Target) => median(s[t].map((x) => x.ms));
        const rts = (t: W5Target) => median(s[t].map((x) => x.roundTrips));
        const ok = problems.length === 0;
        const wallRow = (target: 'cold' | 'reused', connection: string) => {
          const proxyRatio = ratio(ms(target), ms('native'));
          rows.push({
            workload: 'W5',
            metric: `${rtt} ms RTT, ${client.name}, wall ms (${connection} backend connection)`,
            native: ms('native'),
            proxy: ms(target),
            ratio: proxyRatio,
            target: client.target,
            pass: proxyRatio !== undefined && proxyRatio <= client.limit && ok,
          });
        };
        wallRow('cold', 'new');
        if (reuse) wallRow('reused', 'reused');
        if (client.window > 1) {
          rows.push({ workload: 'W5', metric: `${rtt} ms RTT, WAN round trips/session, new connection`, native: rts('native'), proxy: rts('cold'), target: '<= 6', pass: (rts('cold') ?? Infinity) <= 6 });
          if (reuse) rows.push({ workload: 'W5', metric: `${rtt} ms RTT, WAN round trips/session, reused connection`, native: rts('native'), proxy: rts('reused'), target: '<= 2', pass: (rts('reused') ?? Infinity) <= 2 });
        }
        json[`${rtt}ms-${client.name}`] = {
          wallMs: { native: s.native.map((x) => x.ms), cold: s.cold.map((x) => x.ms), reused: s.reused.map((x) => x.ms) },
          roundTrips: { native: s.native.map((x) => x.roundTrips), cold: s.cold.map((x) => x.roundTrips), reused: s.reused.map((x) => x.roundTrips) },
          backendConnections: { cold: s.cold.map((x) => x.connections), reused: s.reused.map((x) => x.connections) },
          medianWallMs: { native: ms('native'), cold: ms('cold'), reused: ms('reused') },
          ratio: { cold: ratio(ms('cold'), ms('native')), reused: ratio(ms('reused'), ms('native')) },
        };
      }
    } finally {
      for (const p of proxies) {
        const { tail } = p.log();
        if (problems.length > 0 && tail.length > 0) ctx.progress(`W5 proxy log (last lines):\n  ${tail.join('\n  ')}`);
        await p.stop();
      }
      await nativeRelay.close();
      await coldRelay.close();
      await reusedRelay?.close();
    }
  }
  for (const p of problems.slice(0, 5)) ctx.progress(`W5 problem: ${p}`);
  json.problems = problems;
  return { rows, json };
}
