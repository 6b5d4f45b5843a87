/**
 * The invariants about the processes and the protocol:
 * - every command got a reply or its connection closed within the bound;
 * - no proxy exit the injector (or the teardown) did not cause, and no error that escaped all
 *   of the proxy's handling (its last resort logs those instead of dying: the same bug);
 * - no [IN-USE] later than its holder's end (logged by the proxy, or the holder's process
 *   death) plus the lock TTL and a margin;
 * - every proxy's resident memory under the bound;
 * - every proxy back to no open session once the clients ended, and every mailbox open to a
 *   login again through its proxies (the final probe).
 */
import type { SessionRecord } from './client-session.js';
import { faultsNear, rel, result, who, type Evidence, type InvariantResult } from './evidence.js';

export function checkAnswers(e: Evidence): InvariantResult {
  const violations: string[] = [];
  let commands = 0;
  let replies = 0;
  let closed = 0;
  let maxMs = 0;
  for (const r of e.records) {
    commands += r.commands;
    replies += r.replies;
    closed += r.closedUnanswered;
    maxMs = Math.max(maxMs, r.maxReplyMs);
    for (const t of r.timeouts) {
      violations.push(`${who(e, r)}: no answer to ${t.command} within ${t.waitedMs} ms (${rel(e, t.at - t.waitedMs)}..${rel(e, t.at)}; ${faultsNear(e.faults, e.startedAt, t.at - t.waitedMs, t.at)})`);
    }
  }
  const figures = `sessions ${e.records.length}, commands ${commands}, replies ${replies}, ended by a closed connection ${closed}, unanswered ${violations.length}, slowest reply ${(maxMs / 1000).toFixed(1)} s (bound ${e.options.replyBoundS} s)`;
  return result('no command without an answer (a reply, or the connection closed) within the bound', figures, violations);
}

export function checkExits(e: Evidence): InvariantResult {
  const violations: string[] = [];
  const byCause = new Map<string, number>();
  for (const p of e.fleet.all) {
    for (const x of p.exits) byCause.set(x.cause ?? 'none', (byCause.get(x.cause ?? 'none') ?? 0) + 1);
  }
  for (const x of e.fleet.crashes) {
    const tail = x.tail.filter((l) => l.trim() !== '').slice(-25).map((l) => `      | ${l.length > 400 ? `${l.slice(0, 400)}...` : l}`).join('\n');
    violations.push(`${x.name} generation ${x.gen} (pid ${x.pid}) exited by itself at ${rel(e, x.at)} with code ${x.code} signal ${x.signal}; ` +
      `faults before it: ${faultsNear(e.faults, e.startedAt, x.at - 8000, x.at, 0)}; log ${x.logFile}; its last output:\n${tail}`);
  }
  violations.push(...e.fleet.restartFailures.map((f) => `restart failed: ${f}`), ...e.faultProblems);
  const figures = [...byCause].map(([cause, n]) => `${cause === 'none' ? 'uncaused' : cause} ${n}`).join(', ') || 'none';
  return result('no proxy exit the injector did not cause', `exits: ${figures}; unplanned ${e.fleet.crashes.length}`, violations);
}

export function checkEscapedErrors(e: Evidence): InvariantResult {
  const violations: string[] = [];
  for (const p of e.fleet.all) {
    for (const x of p.escaped) {
      const text = x.message.length > 1500 ? `${x.message.slice(0, 1500)}...` : x.message;
      violations.push(`${p.name} generation ${x.gen} at ${rel(e, x.at)}: ${text.replace(/\n/g, '\n      | ')}\n      faults before it: ${faultsNear(e.faults, e.startedAt, x.at - 8000, x.at, 0)}`);
    }
  }
  return result('no error escaped the proxy\'s own handling (its last-resort log)', `escaped errors logged ${violations.length}`, violations);
}

/** When `h` let go of its lock at the latest: its logged end, or its process's exit. */
function releasedAt(e: Evidence, h: SessionRecord): number | undefined {
  const p = e.fleet.all.find((x) => x.name === h.target);
  if (p === undefined) return undefined;
  const logged = h.localPort > 0 ? p.endsOf(h.localPort, h.connectAt)[0]?.at : undefined;
  const death = p.exits.find((x) => x.at >= h.connectAt)?.at;
  if (logged === undefined) return death;
  return death === undefined ? logged : Math.min(logged, death);
}

export function checkInUse(e: Evidence): InvariantResult {
  const allowanceMs = (e.options.lockTtlS + e.options.inUseMarginS) * 1000;
  const violations: string[] = [];
  let inUse = 0;
  let unmatched = 0;
  const sessions = e.records.filter((r) => r.passSentAt !== undefined);
  for (const r of sessions) {
    if (r.login !== 'in-use') continue;
    inUse++;
    const asked = r.passSentAt!;
    const answered = r.loginAt ?? r.endAt;
    // Who could hold the lock: a session of the same mailbox whose PASS went out before this
    // answer came and which got in (or never heard back).
    const holders = sessions.filter((h) => h !== r && h.user === r.user && h.passSentAt! < answered && (h.login === 'ok' || h.login === 'noreply'));
    const ends = holders.map((h) => ({ h, at: releasedAt(e, h) }));
    unmatched += ends.filter((x) => x.at === undefined).length;
    if (ends.some((x) => x.at === undefined || x.at + allowanceMs >= asked)) continue;
    const last = ends.sort((a, b) => b.at! - a.at!).slice(0, 3).map((x) => `${who(e, x.h)} released by ${rel(e, x.at)}`).join('; ');
    violations.push(`${who(e, r)}: [IN-USE] asked ${rel(e, asked)}, more than ${allowanceMs / 1000} s after every holder had ended: ${last || 'no holder at all'}; ${faultsNear(e.faults, e.startedAt, asked - allowanceMs, answered)}`);
  }
  for (const p of e.probes) if (/\[IN-USE\]/i.test(p.reply)) violations.push(`final probe of ${p.user} via ${p.target}, long after every session ended: ${p.reply}`);
  const figures = `[IN-USE] answers ${inUse}, stale ${violations.length} (lock TTL ${e.options.lockTtlS} s + margin ${e.options.inUseMarginS} s), holders whose end was not seen ${unmatched}`;
  return result('no [IN-USE] outliving its holder by more than the lock TTL', figures, violations);
}

export function checkMemory(e: Evidence): InvariantResult {
  const limitKiB = e.options.rssLimitMiB * 1024;
  const rows = e.fleet.all.map((p) => ({ name: p.name, kib: p.rssMaxKiB }));
  const violations = rows.filter((r) => r.kib > limitKiB).map((r) => `${r.name}: resident memory reached ${(r.kib / 1024).toFixed(1)} MiB (bound ${e.options.rssLimitMiB} MiB)`);
  const figures = `max RSS ${rows.map((r) => `${r.name} ${(r.kib / 1024).toFixed(1)} MiB`).join(', ')} (bound ${e.options.rssLimitMiB} MiB, sampled every second)`;
  return result('bounded memory', figures, violations);
}

export function checkSettled(e: Evidence): InvariantResult {
  const violations: string[] = [];
  if (!e.settled) violations.push(`sessions still open on the proxies long after every client ended: ${e.openSessions}`);
  for (const p of e.probes) if (!p.reply.startsWith('+OK') && !/\[IN-USE\]/i.test(p.reply)) violations.push(`final probe: ${p.user} via ${p.target}: ${p.reply}`);
  const ok = e.probes.filter((p) => p.reply.startsWith('+OK')).length;
  return result('proxies back to idle, every mailbox served again', `open sessions at the end: ${e.openSessions}; final logins +OK ${ok} of ${e.probes.length}`, violations);
}
