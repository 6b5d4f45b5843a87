/**
 * The \Deleted flag on the server, kept in step with the session's ledger (deletion-ledger.ts):
 * stored where the session flags messages (DELE with --flag-on-dele, QUIT in the flag and
 * expunge modes), taken back where it must leave no trace (RSET, a session that ends without
 * a confirmed commit). Only the flags this session set are ever taken back.
 */
import type { ImapFlow } from 'imapflow';
import type { Logger } from 'winston';
import type { BackendSteps } from './backend-step.js';
import type { DeletionLedger } from './deletion-ledger.js';
import { withTimeout } from './imap-client.js';
import { searchUids } from './uid-search.js';
import { uidSet } from './uid-set.js';

const DELETED = '\\Deleted';

/** What the flags need of the session's backend connection (backend-connection.ts). */
export interface FlagsConnection {
  readonly client: ImapFlow;
  interrupt(): void;
  /** Runs `work` over a new connection of its own, mailbox open. */
  withFresh<T>(work: (client: ImapFlow) => Promise<T>): Promise<T>;
}

export class DeletedFlags {
  constructor(
    private readonly connection: FlagsConnection,
    private readonly steps: BackendSteps,
    private readonly ledger: DeletionLedger,
    private readonly timeoutMs: number,
    private readonly logger: Logger,
  ) {}

  /** Stores \Deleted on these UIDs, noting first which are ours to take back; false if the server refused. */
  async flag(uids: number[]): Promise<boolean> {
    // Noted before the STORE is sent, so that an abandon racing with it still takes it back.
    await this.note(uids);
    return this.connection.client.messageFlagsAdd(uidSet(uids), [DELETED], { uid: true });
  }

  /**
   * Notes which of these UIDs this session is about to flag \Deleted for the first time. If
   * the listing did not tell which messages were flagged already, it is asked now, for these
   * UIDs only: a flag another client set is never taken back.
   */
  async note(uids: readonly number[]): Promise<void> {
    const unknown = this.ledger.unknown(uids);
    if (unknown.length > 0) {
      const query = { uid: uidSet(unknown), deleted: true };
      const flagged = await searchUids(this.connection.client, this.steps, query, 'listing \\Deleted messages');
      this.ledger.answered(unknown, flagged);
    }
    this.ledger.flagging(uids);
  }

  /** RSET: the flags of ours among these UIDs are taken back, and no longer ours. */
  async takeBack(uids: readonly number[]): Promise<void> {
    const ours = this.ledger.oursAmong(uids);
    if (ours.length === 0) return;
    await this.remove(this.connection.client, ours);
    this.ledger.forget(ours);
  }

  /** Takes the flags back over the session's connection, or over a new one if this one is broken. */
  async restore(uids: number[]): Promise<void> {
    if (this.connection.client.usable) {
      try {
        await this.remove(this.connection.client, uids);
        return;
      } catch (err) {
        this.connection.interrupt();
        const why = (err as Error).message;
        this.logger.warn(`Restoring flags on the session connection failed, retrying on a new one: ${why}`);
      }
    }
    await this.connection.withFresh((fresh) => this.remove(fresh, uids));
  }

  /** Removes \Deleted from these UIDs over `client`, within the backend timeout. */
  async remove(client: ImapFlow, uids: number[]): Promise<void> {
    if (uids.length === 0) return;
    const done = await withTimeout(
      client.messageFlagsRemove(uidSet(uids), [DELETED], { uid: true }),
      this.timeoutMs,
      'removing \\Deleted flags',
    );
    if (!done) throw this.steps.failed('removing \\Deleted flags', client);
  }
}
