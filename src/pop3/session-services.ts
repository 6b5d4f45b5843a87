/**
 * What a POP3 session is given by the connection and the server around it: the connection as
 * the session sees it, the policy, the mail store, the locks and whoever counts its events. A
 * leaf of the protocol: it knows nothing of the session or its commands.
 */
import type { Logger } from 'winston';
import type { LockRegistry } from '../lock/lock-registry.js';
import type { SessionEvents } from '../metrics/events.js';
import type { MaildropProvider } from '../maildrop/maildrop.js';

/** The connection as the session sees it. */
export interface SessionIO {
  /**
   * Writes bytes (pieces are written together, in order); resolves once the client can take
   * more. Rejects when the client is gone.
   */
  send(data: Buffer | readonly Buffer[]): Promise<void>;
  /** Writes `last` if the client can still take it, then closes after what was written. */
  close(last?: Buffer): void;
  /** Drops the connection at once: nothing more reaches the client. */
  destroy(): void;
  /** Whether the connection is encrypted (implicit TLS, or after STLS). */
  readonly secure: boolean;
  /**
   * Sends the reply, then starts TLS on the connection (STLS), dropping whatever the client
   * sent behind the command in plaintext.
   */
  startTls(reply: Buffer): Promise<void>;
  /** The session has logged in: the authentication deadline no longer applies. */
  loggedIn(): void;
}

export interface SessionPolicy {
  /** Whether TLS can be had on this server (so STLS is offered and plaintext passwords refused). */
  readonly tlsAvailable: boolean;
  readonly allowPlaintextAuth: boolean;
  readonly maxAuthFailures: number;
  readonly maxErrors: number;
  /** Notes a failed login from an address; returns the delay before answering it. */
  authFailed(address: string): Promise<number>;
  /** The text after "+OK" in the greeting. */
  readonly greeting: string;
  /** Announced in CAPA as LOGIN-DELAY, and enforced. */
  readonly loginDelayS: number | undefined;
  /** Seconds until this mailbox may be logged in to again (0: now). */
  loginWait(mailboxKey: string): Promise<number>;
  /** Notes a successful login, for the LOGIN-DELAY. */
  loggedIn(mailboxKey: string): void;
  /** Announced in CAPA as EXPIRE. */
  readonly expire: number | 'NEVER' | undefined;
  /** A login NAME<separator>FOLDER logs in as NAME and serves FOLDER; undefined: no such split. */
  readonly folderSeparator?: string | undefined;
}

export type { LoginOutcome, SessionEvents } from '../metrics/events.js';

export interface SessionServices {
  readonly provider: MaildropProvider;
  readonly locks: LockRegistry;
  readonly logger: Logger;
  readonly implementation: string;
  readonly policy: SessionPolicy;
  readonly events: SessionEvents;
}
