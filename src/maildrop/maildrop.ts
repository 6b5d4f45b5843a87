/**
 * What the POP3 side needs from a mail store, in the store's own terms. The POP3 protocol
 * code depends on this contract only; the IMAP backend implements it.
 */
import type { Readable } from 'node:stream';

/**
 * A password, or an OAuth 2.0 bearer token the store accepts in its place (XOAUTH2, OAUTHBEARER);
 * and the folder to serve, when the login names one (else the configured one).
 */
export type Credentials =
  | { readonly user: string; readonly password: string; readonly folder?: string | undefined }
  | { readonly user: string; readonly accessToken: string; readonly folder?: string | undefined };

export interface ClientInfo {
  readonly address: string;
  readonly port: number;
  /** The id on the session's log lines, for the store's log too (IMAP ID). */
  readonly sessionId?: string;
}

/** One message of the snapshot taken when the mailbox was opened. */
export interface MessageEntry {
  /** Exact size in octets, CRLF line ends. */
  readonly size: number;
  /** Unique, stable identifier: the same in every session while the store keeps the message. */
  readonly uidl: string;
}

export interface MaildropProvider {
  /** Checks the credentials with the store and resolves to an authenticated maildrop. */
  authenticate(credentials: Credentials, client: ClientInfo): Promise<Maildrop>;
}

/**
 * A message's raw bytes as the store delivers them. `arrived` turns true once the store has
 * handed over all of them (some may still wait in the stream's buffer): a reader that finds
 * nothing buffered knows from it whether more is on its way or the message is at its end.
 */
export interface MessageStream extends Readable {
  readonly arrived: boolean;
}

/**
 * One user's mailbox for one session. Message indexes are 0-based positions in the snapshot
 * returned by open(), fixed for the session.
 */
export interface Maildrop {
  /** Identifies the mailbox itself (not the session): equal for every login to it. */
  readonly mailboxKey: string;
  /** Opens the mailbox and takes the snapshot of its messages. */
  open(): Promise<readonly MessageEntry[]>;
  /** The raw message, streamed; fails with an error if it cannot be delivered whole. */
  read(index: number): Promise<MessageStream>;
  /** Tells the store that RETR delivered this message whole (it may mark it read). */
  retrieved(index: number): Promise<void>;
  /** Marks a message for deletion in the store (reversible). */
  markDeleted(index: number): Promise<void>;
  /** Takes back the marks this session set on these messages. */
  unmarkDeleted(indexes: readonly number[]): Promise<void>;
  /** Removes exactly these messages (as the store is configured to) and ends the session with the store. */
  commit(indexes: readonly number[]): Promise<void>;
  /**
   * Ends the session with the store without removing anything, taking back every mark this
   * session set (over a new connection if need be). Safe to call at any point, and again.
   */
  abandon(): Promise<void>;
}
