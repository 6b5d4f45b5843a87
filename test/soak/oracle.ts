/**
 * The oracle: the store as Dovecot's IMAP serves it, read directly (never through the proxy or
 * the relays), read-only (EXAMINE, so the oracle never changes a flag or \Recent).
 *
 * - learn(): reads back every message delivered since the last look (UID, Message-ID, BODY[])
 *   and checks the model of messages.ts against it: the store form's hash and the predicted UID.
 *   A message already removed by then is marked `gone` (deleted before the oracle saw it; the
 *   model stands for it alone).
 * - finalState(): every message left, with its \Deleted flag, once all sessions have ended.
 *
 * The injector kills Dovecot imap processes, sometimes the oracle's own: every read is retried.
 */
import type { ImapFlow } from 'imapflow';
import type { Dovecot, TestUser } from '../support/dovecot.js';
import { imapClient } from '../support/dovecot.js';
import { sha256 } from './messages.js';
import type { MailRegistry } from './registry.js';
import { errorText, sleep, within } from './util.js';

export interface StoredEntry {
  uid: number;
  messageId: string | undefined;
  deleted: boolean;
}

export interface OracleFindings {
  /** Messages read back whose bytes and UID were as the model said. */
  matched: number;
  /** Model and store disagree: the soak's own fault, reported apart from the proxy's. */
  mismatches: string[];
  /** Delivered and gone before the oracle looked. */
  gone: number;
  /** Reads that failed and were retried (a killed imap process, mostly). */
  retries: number;
}

const READ_TIMEOUT_MS = 60_000;
const ATTEMPTS = 4;

export class StoreOracle {
  readonly findings: OracleFindings = { matched: 0, mismatches: [], gone: 0, retries: 0 };

  constructor(
    private readonly dovecot: Dovecot,
    private readonly registry: MailRegistry,
    private readonly users: readonly TestUser[],
  ) {}

  /** Runs `read` on the user's INBOX, examined; retried when the connection fails. */
  private async examine<T>(user: TestUser, read: (imap: ImapFlow, exists: number) => Promise<T>): Promise<T> {
    let lastError: unknown;
    for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
      let imap: ImapFlow | undefined;
      try {
        return await within((async () => {
          imap = await imapClient(this.dovecot, user);
          const box = await imap.mailboxOpen('INBOX', { readOnly: true });
          return read(imap, box.exists);
        })(), READ_TIMEOUT_MS, `the oracle's read of ${user.name}`);
      } catch (err) {
        lastError = err;
        this.findings.retries++;
        await sleep(200 * attempt);
      } finally {
        const client = imap as ImapFlow | undefined;
        await client?.logout().catch(() => client.close());
      }
    }
    throw new Error(`the oracle could not read ${user.name}'s mailbox: ${errorText(lastError)}`);
  }

  /** Reads back what was delivered since the last call, for every user with such messages. */
  async learn(): Promise<void> {
    for (const user of this.users) {
      const pending = this.registry.unlearned(user.name);
      if (pending.length === 0) continue;
      const from = pending[0]!.index;
      const upTo = pending[pending.length - 1]!.index;
      const seen = await this.examine(user, async (imap, exists) => {
        if (exists === 0) return [];
        return imap.fetchAll(`${from}:${upTo}`, { uid: true, envelope: true, source: true }, { uid: true });
      });
      this.compare(user.name, pending, seen.map((m) => ({ uid: m.uid, messageId: m.envelope?.messageId, source: m.source })));
    }
  }

  private compare(user: string, pending: ReturnType<MailRegistry['unlearned']>, seen: Array<{ uid: number; messageId: string | undefined; source: Buffer | undefined }>): void {
    const byUid = new Map(seen.map((m) => [m.uid, m]));
    for (const entry of pending) {
      const stored = byUid.get(entry.index);
      if (stored === undefined) {
        entry.learned = 'gone';
        this.findings.gone++;
        continue;
      }
      const problems: string[] = [];
      if (stored.messageId !== entry.messageId) problems.push(`UID ${entry.index} holds ${stored.messageId ?? '(no Message-ID)'}, predicted ${entry.messageId}`);
      if (stored.source === undefined || sha256(stored.source) !== entry.storeHash) {
        problems.push(`BODY[] of ${entry.messageId} (${stored.source?.length ?? 0} octets) is not the model's store form (${entry.storeSize} octets, ${entry.style})`);
      }
      entry.learned = problems.length === 0 ? 'match' : 'mismatch';
      if (problems.length === 0) this.findings.matched++;
      else this.findings.mismatches.push(`${user}: ${problems.join('; ')}`);
    }
  }

  /** Every message left in every mailbox. */
  async finalState(): Promise<Map<string, StoredEntry[]>> {
    const state = new Map<string, StoredEntry[]>();
    for (const user of this.users) {
      const entries = await this.examine(user, async (imap, exists) => {
        if (exists === 0) return [];
        const all = await imap.fetchAll('1:*', { uid: true, flags: true, envelope: true });
        return all.map((m) => ({ uid: m.uid, messageId: m.envelope?.messageId, deleted: m.flags?.has('\\Deleted') ?? false }));
      });
      state.set(user.name, entries.sort((a, b) => a.uid - b.uid));
    }
    return state;
  }
}
