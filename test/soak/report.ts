/** The soak's summary: the faults with their counts, the invariants with their figures. */
import type { SessionRecord } from './client-session.js';
import type { Evidence, InvariantResult } from './evidence.js';
import { FAULT_KINDS, type FaultKind } from './injector.js';

export interface SoakReport {
  seed: number;
  durationS: number;
  faults: Record<FaultKind, number>;
  invariants: InvariantResult[];
  violations: string[];
  text: string;
  logDir: string;
}

const SHOWN_PER_INVARIANT = 12;

function countBy<T>(items: readonly T[], key: (t: T) => string): string {
  const counts = new Map<string, number>();
  for (const item of items) counts.set(key(item), (counts.get(key(item)) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`).join(', ');
}

function faultLines(e: Evidence): string[] {
  const lines = ['Faults injected (done; skipped and failed attempts in brackets):'];
  for (const kind of FAULT_KINDS) {
    const of = e.faults.filter((f) => f.kind === kind);
    const n = (o: string) => of.filter((f) => f.outcome === o).length;
    lines.push(`  ${kind.padEnd(18)} ${String(n('done')).padStart(4)}   [skipped ${n('skipped')}, failed ${n('failed')}]`);
  }
  for (const f of e.faults.filter((x) => x.outcome === 'failed')) lines.push(`    failed ${f.kind}: ${f.detail}`);
  return lines;
}

function sessionLines(records: readonly SessionRecord[]): string[] {
  const connected = records.filter((r) => r.connect === 'ok');
  return [
    `Sessions: ${records.length} (${countBy(records, (r) => r.behaviour)})`,
    `  connects: ${countBy(records, (r) => r.connect)}`,
    `  logins: ${countBy(connected.filter((r) => r.login !== undefined), (r) => r.login!)}`,
    `  QUIT: ${countBy(connected, (r) => r.quit)}; dropped by the client: ${countBy(connected, (r) => r.dropped)}; closed by the server first: ${connected.filter((r) => r.serverClosed).length}`,
    `  DELE +OK: ${records.reduce((n, r) => n + r.deletes.length, 0)} still marked at the session's end (after RSETs)`,
  ];
}

function invariantLines(results: readonly InvariantResult[]): string[] {
  const lines = ['Invariants:'];
  for (const r of results) {
    lines.push(`  ${r.ok ? 'PASS' : 'FAIL'}  ${r.name}`, `        ${r.figures}`);
    for (const v of r.violations.slice(0, SHOWN_PER_INVARIANT)) lines.push(`        ! ${v}`);
    if (r.violations.length > SHOWN_PER_INVARIANT) lines.push(`        ! ... and ${r.violations.length - SHOWN_PER_INVARIANT} more`);
    for (const note of r.notes.slice(0, 5)) lines.push(`        note: ${note}`);
  }
  return lines;
}

function logLines(e: Evidence): string[] {
  const merged = new Map<string, number>();
  for (const p of e.fleet.all) for (const [k, n] of p.logged) merged.set(`${p.name} ${k}`, n);
  const top = [...merged].sort((a, b) => b[1] - a[1]).slice(0, 15);
  const throttles = e.fleet.all.reduce((n, p) => n + p.throttleWarnings, 0);
  return [`Proxy log (warnings and errors, most frequent first; throttle warnings ${throttles}):`, ...top.map(([k, n]) => `  ${String(n).padStart(5)}  ${k}`)];
}

export function buildReport(e: Evidence, results: InvariantResult[]): SoakReport {
  const o = e.options;
  const violations = results.flatMap((r) => r.violations.map((v) => `${r.name}: ${v}`));
  const faults = Object.fromEntries(FAULT_KINDS.map((k) => [k, e.faults.filter((f) => f.kind === k && f.outcome === 'done').length])) as Record<FaultKind, number>;
  const passed = results.filter((r) => r.ok).length;
  const text = [
    `pop3-imap-proxy soak: seed ${o.seed}, ${o.durationS} s, ${o.clients} clients, ${o.users} mailboxes, lock TTL ${o.lockTtlS} s; proxy logs in ${e.logDir} (kept when something failed, or with --keep)`,
    ...faultLines(e),
    ...sessionLines(e.records),
    ...invariantLines(results),
    ...logLines(e),
    `Result: ${passed} invariants held, ${results.length - passed} violated (${violations.length} violations)`,
  ].join('\n');
  return { seed: o.seed, durationS: o.durationS, faults, invariants: results, violations, text, logDir: e.logDir };
}
