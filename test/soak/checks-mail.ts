/**
 * The invariants about mail, checked against the store the oracle read at the end:
 * - nothing lost that no +OK QUIT committed (a QUIT without a reply may have: both allowed);
 * - nothing a +OK QUIT committed still there;
 * - no \Deleted flag left once every session ended;
 * - every RETR and TOP that ended with "." byte-exact to the store;
 * - the oracle's model of the store agreed with the store (else the soak itself is wrong).
 */
import type { SessionRecord } from './client-session.js';
import { deletedEntry, faultsNear, rel, result, who, type Evidence, type InvariantResult } from './evidence.js';

interface Deletions {
  /** Message-ID -> sessions that DELE'd it, by how their QUIT ended. */
  ok: Map<string, SessionRecord[]>;
  noreply: Map<string, SessionRecord[]>;
  err: Map<string, SessionRecord[]>;
  unresolved: number;
}

function add(map: Map<string, SessionRecord[]>, id: string, r: SessionRecord): void {
  const list = map.get(id) ?? [];
  list.push(r);
  map.set(id, list);
}

function deletions(e: Evidence): Deletions {
  const d: Deletions = { ok: new Map(), noreply: new Map(), err: new Map(), unresolved: 0 };
  for (const r of e.records) {
    if (r.quit === 'not-sent') continue;
    for (const del of r.deletes) {
      const entry = deletedEntry(e.registry, r.user, del);
      if (entry === undefined) {
        d.unresolved++;
        continue;
      }
      add(r.quit === 'ok' ? d.ok : r.quit === 'noreply' ? d.noreply : d.err, entry.messageId, r);
    }
  }
  return d;
}

/** The ids the store holds at the end, per user. */
function storeIds(e: Evidence): Set<string> {
  const ids = new Set<string>();
  for (const entries of e.finalState.values()) for (const m of entries) if (m.messageId !== undefined) ids.add(m.messageId);
  return ids;
}

/** Who retrieved or deleted a message: the trail for a lost one. */
function trail(e: Evidence, messageId: string): string {
  const seen = e.records.filter((r) => r.retrs.some((x) => x.messageId === messageId) || r.deletes.some((x) => deletedEntry(e.registry, r.user, x)?.messageId === messageId));
  if (seen.length === 0) return 'no session retrieved or deleted it';
  return seen.map((r) => `${who(e, r)} quit=${r.quit}${r.quitReply ? ` "${r.quitReply}"` : ''}`).join('; ');
}

export function checkNoLoss(e: Evidence): InvariantResult {
  const d = deletions(e);
  const inStore = storeIds(e);
  const violations: string[] = [];
  let removedOk = 0;
  let removedUncertain = 0;
  const delivered = e.registry.all();
  for (const m of delivered) {
    if (inStore.has(m.messageId)) continue;
    if (d.ok.has(m.messageId)) removedOk++;
    else if (d.noreply.has(m.messageId)) removedUncertain++;
    else if (d.err.has(m.messageId)) violations.push(`${m.user} ${m.messageId} removed, though every QUIT of a session that deleted it answered -ERR: ${trail(e, m.messageId)}`);
    else violations.push(`${m.user} ${m.messageId} LOST (delivered ${rel(e, m.deliveredAt)}, no +OK QUIT deleted it): ${trail(e, m.messageId)}`);
  }
  let keptAfterOk = 0;
  for (const [id, sessions] of d.ok) {
    if (!inStore.has(id)) continue;
    // Deleted again later in a session that did not commit is still "deleted by a +OK QUIT".
    keptAfterOk++;
    violations.push(`${id} still in the store although QUIT answered +OK after DELE: ${sessions.map((r) => who(e, r)).join('; ')}`);
  }
  const known = new Set(delivered.map((m) => m.messageId));
  const strangers = [...inStore].filter((id) => !known.has(id));
  for (const id of strangers) violations.push(`the store holds ${id}, which the soak never delivered`);
  const duplicates = [...e.finalState.values()].reduce((n, list) => n + list.length, 0) - inStore.size;
  if (duplicates > 0) violations.push(`${duplicates} message(s) in the store twice`);
  const uncertainQuits = e.records.filter((r) => r.quit === 'noreply').length;
  const figures = `delivered ${delivered.length}, in store ${inStore.size}, removed by +OK QUIT ${removedOk}, removed by a QUIT without reply ${removedUncertain} ` +
    `(${uncertainQuits} such QUITs), lost ${violations.length - keptAfterOk - strangers.length}, kept after +OK ${keptAfterOk}, DELEs not traceable to a message ${d.unresolved}`;
  return result('nothing lost that no +OK QUIT committed', figures, violations, d.unresolved > 0 ? [`${d.unresolved} DELE +OK could not be tied to a message`] : []);
}

/** Whether `proxy` was SIGKILLed (or crashed) while `r`'s QUIT was outstanding: README's known window. */
function killedDuringQuit(e: Evidence, r: SessionRecord): boolean {
  const p = e.fleet.all.find((x) => x.name === r.target);
  const from = r.quitSentAt ?? r.connectAt;
  return (p?.exits ?? []).some((x) => x.cause !== 'SIGTERM' && x.cause !== 'teardown' && x.at >= from - 100 && x.at <= r.endAt + 1000);
}

export function checkNoDeletedFlag(e: Evidence): InvariantResult {
  const violations: string[] = [];
  const notes: string[] = [];
  let flagged = 0;
  let total = 0;
  for (const [user, entries] of e.finalState) {
    for (const m of entries) {
      total++;
      if (!m.deleted) continue;
      flagged++;
      const deleters = e.records.filter((r) => r.user === user && r.deletes.some((x) => deletedEntry(e.registry, user, x)?.messageId === m.messageId));
      const windowed = deleters.filter((r) => r.quit === 'noreply' && killedDuringQuit(e, r));
      const text = `${user} UID ${m.uid} ${m.messageId ?? ''} flagged \\Deleted at the end; deleted by: ${deleters.map((r) => `${who(e, r)} quit=${r.quit} [${faultsNear(e.faults, e.startedAt, r.quitSentAt ?? r.endAt, r.endAt)}]`).join('; ') || 'no session'}`;
      if (windowed.length > 0) notes.push(`known window (README: proxy killed inside QUIT between STORE and EXPUNGE): ${text}`);
      else violations.push(text);
    }
  }
  return result('no \\Deleted left once all sessions ended', `${total} messages in store, ${flagged} flagged (${flagged - violations.length} in the documented kill-inside-QUIT window)`, violations, notes);
}

export function checkBytes(e: Evidence): InvariantResult {
  const violations: string[] = [];
  const n = { retr: 0, top: 0, bytes: 0, cut: 0, timedOut: 0 };
  for (const r of e.records) {
    for (const x of r.retrs) {
      if (x.outcome === 'cut') n.cut++;
      if (x.outcome === 'timeout') n.timedOut++;
      if (x.outcome !== 'whole') continue;
      if (x.kind === 'retr') n.retr++;
      else n.top++;
      n.bytes += x.bytes;
      if (x.exact !== true) violations.push(`${who(e, r)}: ${x.problem ?? 'not byte-exact'}`);
    }
  }
  const figures = `RETR ended with "." ${n.retr}, TOP ${n.top}, ${(n.bytes / 1048576).toFixed(1)} MiB checked, not exact ${violations.length}; cut without "." ${n.cut}, timed out ${n.timedOut}`;
  return result('every RETR/TOP that ended with "." is byte-exact', figures, violations);
}

export function checkOracle(e: Evidence): InvariantResult {
  const o = e.oracle;
  const figures = `messages read back over IMAP and matching the model ${o.matched}, gone before the oracle looked ${o.gone}, mismatches ${o.mismatches.length}, retried reads ${o.retries}`;
  return result('the soak\'s model of the store matches the store (a soak self-check)', figures, o.mismatches.map((m) => `SOAK MODEL: ${m}`));
}
