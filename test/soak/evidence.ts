/**
 * What the invariant checks read: every session's record, the deliveries, the store at the
 * end, the proxies' exits and logs, the faults. And what each check answers.
 */
import type { SessionRecord } from './client-session.js';
import type { ProxyFleet } from './fleet.js';
import type { FaultEvent } from './injector.js';
import type { OracleFindings, StoredEntry } from './oracle.js';
import type { SoakOptions } from './options.js';
import type { Delivered, MailRegistry } from './registry.js';

export interface ProbeResult {
  user: string;
  target: string;
  reply: string;
}

export interface Evidence {
  options: SoakOptions;
  startedAt: number;
  records: SessionRecord[];
  registry: MailRegistry;
  finalState: Map<string, StoredEntry[]>;
  oracle: OracleFindings;
  fleet: ProxyFleet;
  faults: FaultEvent[];
  faultProblems: string[];
  /** Whether every proxy reported no open session after the clients ended, and what they reported. */
  settled: boolean;
  openSessions: string;
  probes: ProbeResult[];
  logDir: string;
}

export interface InvariantResult {
  name: string;
  ok: boolean;
  figures: string;
  violations: string[];
  /** Worth knowing, not a violation. */
  notes: string[];
}

/** The faults that overlapped [from - slack, to], for the reproduction of a finding. */
export function faultsNear(faults: readonly FaultEvent[], startedAt: number, from: number, to: number, slackMs = 2000): string {
  const near = faults.filter((f) => f.outcome === 'done' && f.endAt >= from - slackMs && f.at <= to);
  if (near.length === 0) return 'no fault nearby';
  return near.map((f) => `${f.kind} at +${((f.at - startedAt) / 1000).toFixed(1)}s (${f.detail})`).join('; ');
}

/** "+12.3s" from the start of the run. */
export function rel(e: Pick<Evidence, 'startedAt'>, at: number | undefined): string {
  return at === undefined ? '?' : `+${((at - e.startedAt) / 1000).toFixed(1)}s`;
}

/** One line naming a session, for a violation. */
export function who(e: Pick<Evidence, 'startedAt'>, r: SessionRecord): string {
  return `session #${r.id} (${r.behaviour}, ${r.user} via ${r.target}, client port ${r.localPort}, ${rel(e, r.connectAt)}..${rel(e, r.endAt)})`;
}

/** The message a DELE named: by the Message-ID the session saw, else by its UIDL's UID. */
export function deletedEntry(registry: MailRegistry, user: string, d: SessionRecord['deletes'][number]): Delivered | undefined {
  if (d.messageId !== undefined) {
    const byId = registry.byId(d.messageId);
    if (byId !== undefined) return byId;
  }
  const uid = d.uidl !== undefined && /^[0-9a-f]{16}$/i.test(d.uidl) ? parseInt(d.uidl.slice(0, 8), 16) : undefined;
  return uid === undefined ? undefined : registry.byUid(user, uid);
}

export function result(name: string, figures: string, violations: string[], notes: string[] = []): InvariantResult {
  return { name, ok: violations.length === 0, figures, violations, notes };
}
