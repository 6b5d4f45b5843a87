/**
 * What a command handler sees of its session, and what a handler is. The session owns its
 * state; a handler reads it here and changes it only through these methods (each one a
 * transition of RFC 1939's state machine, or a note for the log and the metrics). A leaf of
 * the protocol: the handlers and the session both import it, and it imports neither.
 */
import type { Logger } from 'winston';
import type { LockLease } from '../lock/lock-registry.js';
import type { ClientInfo, Maildrop, MessageEntry } from '../maildrop/maildrop.js';
import type { Command } from './command-parser.js';
import type { ResponseCode } from './responses.js';
import type { SessionServices } from './session-services.js';

export type SessionState = 'authorization' | 'transaction' | 'update' | 'closed';

/** How a session ended, for the log line and for deciding what happens to the mailbox. */
export type EndReason =
  | 'quit'
  | 'quit-failed'
  | 'client-closed'
  | 'idle-timeout'
  | 'backend-failed'
  | 'delivery-failed'
  | 'too-many-errors'
  | 'auth-failures'
  | 'auth-timeout'
  | 'lock-lost'
  | 'internal-error'
  | 'shutdown';

/**
 * How the client hears that the session is over: a last reply line, or 'cut' when the
 * connection must be dropped at once (a reply was cut short, or the client is gone).
 */
export type Farewell = Buffer | 'cut';

/** The mailbox of an authenticated session, as the handlers read it. */
export interface Transaction {
  readonly user: string;
  readonly maildrop: Maildrop;
  readonly messages: readonly MessageEntry[];
  /** 0-based indexes of the messages marked deleted in this session. */
  readonly deleted: ReadonlySet<number>;
  /** The highest message number RETR was given since login or RSET, for LAST (RFC 1725). */
  readonly lastRetrieved: number;
}

/** An AUTH exchange waiting for the client's next response line. */
export interface SaslContinuation {
  respond(context: CommandContext, line: Buffer): Promise<void>;
}

export interface CommandContext {
  readonly state: SessionState;
  readonly client: ClientInfo;
  readonly services: SessionServices;
  readonly logger: Logger;
  /** The session's fields for a log line (cid, client, user). */
  logMeta(): Record<string, unknown>;
  /** Whether passwords must not travel on this connection (TLS exists and is not in use). */
  readonly plaintextAuthRefused: boolean;
  readonly secure: boolean;

  send(data: Buffer | readonly Buffer[]): Promise<void>;
  ok(text: string): Promise<void>;
  error(text: string, code?: ResponseCode): Promise<void>;
  /** A reply to a line the client should not have sent; too many in a row end the session. */
  protocolError(text: string): Promise<void>;
  /** The one way out (see Pop3Session.end). */
  end(reason: EndReason, farewell?: Farewell): void;

  // AUTHORIZATION
  /** USER: the name that waits for PASS. */
  rememberUser(name: string): void;
  /** PASS: the name given by USER, forgotten as it is taken. */
  takeUser(): string | undefined;
  /** STLS: forgets what the client said before, sends the reply and starts TLS. */
  startTls(reply: Buffer): Promise<void>;
  /** The next line is this AUTH exchange's response, not a command. */
  awaitSaslResponse(next: SaslContinuation): void;
  /** A rejected login on this connection: returns how many there have been. */
  authFailed(): number;
  /** A login has begun (see login.ts): the user names the session's log lines from now on. */
  beginLogin(user: string): void;
  /** What the login holds so far: the teardown lets go of it if the session ends meanwhile. */
  holdForLogin(maildrop: Maildrop, lease?: LockLease): void;
  /** The login failed: back to AUTHORIZATION, letting go of what it held (the teardown's path). */
  abandonLogin(): Promise<void>;
  /** The login succeeded: what it held becomes the TRANSACTION state. */
  enterTransaction(messages: readonly MessageEntry[]): void;

  // TRANSACTION
  /** The open mailbox; only handlers of the TRANSACTION state may ask. */
  readonly transaction: Transaction;
  markDeleted(index: number): void;
  /** RSET: every mark of this session taken back. */
  resetDeletions(): void;
  /** RETR delivered the message whole. */
  retrieved(index: number, octets: number): void;
  /** TOP delivered these octets. */
  topped(octets: number): void;
  /** QUIT in TRANSACTION: the UPDATE state. */
  update(): Promise<void>;
}

/** One POP3 command: where it is allowed, how many arguments it takes, and what it does. */
export interface CommandHandler {
  readonly states: readonly SessionState[];
  acceptsArgs(count: number): boolean;
  run(context: CommandContext, command: Command): Promise<void>;
}

/** Every command a server knows, by upper-case keyword. */
export type CommandTable = Readonly<Record<string, CommandHandler>>;
