/**
 * One POP3 session: the RFC 1939 state machine (AUTHORIZATION, TRANSACTION, UPDATE) over a
 * byte-stream connection. Commands are dispatched to one handler each (see ./commands). The
 * session knows the mail store only through the Maildrop contract.
 */
import type { Logger } from 'winston';
import type { LockLease, LockLossCause, LockRegistry } from '../lock/lock-registry.js';
import { isMaildropError } from '../maildrop/errors.js';
import type { ClientInfo, Maildrop, MaildropProvider, MessageEntry } from '../maildrop/maildrop.js';
import { parseCommand, type Command } from './command-parser.js';
import { COMMANDS } from './commands/index.js';
import { errLine, okLine, type ResponseCode } from './responses.js';
import { describe } from './session-errors.js';

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
}

export type LoginOutcome = 'ok' | 'auth' | 'in-use' | 'backend-error';

/** What happens in sessions, for whoever counts it (metrics). */
export interface SessionEvents {
  sessionStarted(): void;
  sessionEnded(reason: string): void;
  login(outcome: LoginOutcome): void;
  command(name: string): void;
  /** Message octets sent by RETR (whole) or TOP. */
  retrieved(octets: number, whole: boolean): void;
  deleted(): void;
  expunged(count: number): void;
  lockWaited(seconds: number): void;
  /** A session ended because its shared mailbox lock was lost. */
  lockLost(cause: LockLossCause): void;
  connectionRefused(limit: 'total' | 'per-ip'): void;
}

export interface SessionServices {
  readonly provider: MaildropProvider;
  readonly locks: LockRegistry;
  readonly logger: Logger;
  readonly implementation: string;
  readonly policy: SessionPolicy;
  readonly events: SessionEvents;
}

/** An AUTH exchange waiting for the client's next response line. */
export interface SaslContinuation {
  respond(session: Pop3Session, line: Buffer): Promise<void>;
}

/** The mailbox of an authenticated session. */
export interface Transaction {
  readonly user: string;
  readonly maildrop: Maildrop;
  readonly lease: LockLease;
  readonly messages: readonly MessageEntry[];
  /** 0-based indexes of the messages marked deleted in this session. */
  readonly deleted: Set<number>;
  /** The highest message number RETR was given since login or RSET, for LAST (RFC 1725). */
  lastRetrieved: number;
}

export interface SessionStats {
  retrieved: number;
  retrievedBytes: number;
  topped: number;
  toppedBytes: number;
  deleted: number;
  expunged: number;
}

export class Pop3Session {
  state: SessionState = 'authorization';
  /** The name given by USER, waiting for PASS. */
  pendingUser: string | undefined;
  /** The user of the maildrop being opened or open, for the log line. */
  user: string | undefined;
  transaction: Transaction | undefined;
  /** A maildrop authenticated but not (yet) in TRANSACTION: it must be abandoned on exit. */
  pendingMaildrop: Maildrop | undefined;
  readonly stats: SessionStats = { retrieved: 0, retrievedBytes: 0, topped: 0, toppedBytes: 0, deleted: 0, expunged: 0 };
  /** Set while an AUTH exchange waits for a response line. */
  sasl: SaslContinuation | undefined;
  authFailures = 0;
  /** Protocol errors in a row: a line handled without one ends the run. */
  private errorRun = 0;
  /** The command being answered, which the teardown lets settle first. */
  private inFlight: Promise<void> | undefined;
  /** The mailbox lock was lost: the session ends as soon as no command is being answered. */
  private lockGone = false;

  private readonly startedAt = Date.now();
  /** Set by the first end(): the teardown has begun. */
  private ending = false;
  private markFinished!: () => void;
  private readonly done = new Promise<void>((resolve) => (this.markFinished = resolve));

  constructor(
    readonly io: SessionIO,
    readonly client: ClientInfo,
    readonly services: SessionServices,
  ) {
    services.events.sessionStarted();
  }

  get logger(): Logger {
    return this.services.logger;
  }

  greeting(): Buffer {
    // No APOP timestamp: a proxy never holds the secret APOP needs, and clients that see one try it.
    return okLine(this.services.policy.greeting);
  }

  /** Handles one command line. Resolves when its reply has been written. */
  async handle(line: Buffer): Promise<void> {
    if (this.state === 'closed' || this.state === 'update') return;
    if (this.lockGone) return this.endForLostLock();
    const errorsBefore = this.errorRun;
    const run = this.dispatch(line);
    this.inFlight = run;
    try {
      await run;
    } finally {
      this.inFlight = undefined;
      if (this.lockGone && this.state === 'transaction') this.endForLostLock();
    }
    // Only a run of bad lines is a peer that does not speak POP3; one between good commands
    // (an old client's LAST or XTND, a mistyped command) is forgiven.
    if (this.errorRun === errorsBefore) this.errorRun = 0;
  }

  private dispatch(line: Buffer): Promise<void> {
    const sasl = this.sasl;
    if (sasl) {
      this.sasl = undefined;
      if (this.logger.isDebugEnabled()) this.logger.debug('C: <SASL response>', this.logMeta());
      return sasl.respond(this, line);
    }
    const command = parseCommand(line);
    this.trace(command, line);
    if (!command) return this.protocolError('Unknown command.');
    const handler = COMMANDS[command.verb];
    if (!handler) return this.protocolError(`Unknown command: ${command.verb.slice(0, 8)}`);
    if (!handler.states.includes(this.state)) return this.protocolError(`${command.verb} is not allowed in the ${this.state.toUpperCase()} state.`);
    if (!handler.acceptsArgs(command.args.length)) return this.protocolError(`Wrong number of arguments for ${command.verb}.`);
    this.services.events.command(command.verb);
    return handler.run(this, command);
  }

  /**
   * Watches the mailbox lock of the transaction. Once it is lost (another session may have the
   * mailbox now), the session commits nothing: it ends at once if idle, else right after the
   * command being answered (a QUIT already committing is let finish), with [SYS/TEMP].
   */
  watchLock(lease: LockLease): void {
    const lost = () => {
      if (this.ending || this.state !== 'transaction') return;
      this.lockGone = true;
      this.services.events.lockLost(lease.lost.reason as LockLossCause);
      if (this.inFlight === undefined) this.endForLostLock();
    };
    if (lease.lost.aborted) return lost();
    lease.lost.addEventListener('abort', lost, { once: true });
  }

  private endForLostLock(): void {
    this.logger.warn('Session ended: the mailbox lock was lost; nothing was changed', this.logMeta());
    this.end('lock-lost', errLine('The mailbox lock was lost; nothing was changed. Log in again.', 'SYS/TEMP'));
  }

  /** Whether a command line may be as long as `length`: SASL responses may be much longer. */
  acceptsLineOf(length: number, commandLimit: number): boolean {
    return this.sasl !== undefined || length + 2 <= commandLimit;
  }

  /**
   * A reply to a line the client should not have sent (unknown, malformed, out of state, too
   * long). After maxErrors of them in a row the connection is closed: a peer that keeps erring
   * is not speaking POP3 (a cross-protocol attack, or a confused program).
   */
  async protocolError(text: string): Promise<void> {
    this.errorRun++;
    if (this.errorRun < this.services.policy.maxErrors) return this.error(text);
    this.logger.debug(`S: -ERR ${text} Too many errors, closing connection.`, this.logMeta());
    this.end('too-many-errors', errLine(`${text} Too many errors, closing connection.`));
  }

  /** Whether passwords must not travel on this connection (TLS exists and is not in use). */
  get plaintextAuthRefused(): boolean {
    const policy = this.services.policy;
    return policy.tlsAvailable && !policy.allowPlaintextAuth && !this.io.secure && !isLoopback(this.client.address);
  }

  async ok(text: string): Promise<void> {
    this.logger.debug(`S: +OK ${text}`, this.logMeta());
    await this.io.send(okLine(text));
  }

  async error(text: string, code?: ResponseCode): Promise<void> {
    this.logger.debug(`S: -ERR ${code ? `[${code}] ` : ''}${text}`, this.logMeta());
    await this.io.send(errLine(text, code));
  }

  /**
   * The one way out of a session, whatever ended it (Dovecot's client_destroy). The client
   * hears the farewell at once; then, once the command in flight has settled, the maildrop is
   * let go of (nothing removed that QUIT did not commit), the lock released and the end logged
   * and counted. Any path may call it, any number of times: the first call decides. A command
   * handler must not await `finished()`: the teardown waits for the handler.
   */
  end(reason: EndReason, farewell?: Farewell): void {
    this.begin(reason, farewell, false);
  }

  /** Resolves once the session is over and its cleanup done. */
  finished(): Promise<void> {
    return this.done;
  }

  /**
   * QUIT in TRANSACTION: the UPDATE state. Removes exactly the messages marked deleted and
   * answers +OK only once the store confirmed it and the mailbox is free for the next login.
   */
  async update(): Promise<void> {
    const tx = this.transaction;
    if (!tx) return;
    this.state = 'update';
    const indexes = [...tx.deleted].sort((a, b) => a - b);
    try {
      await tx.maildrop.commit(indexes);
    } catch (err) {
      this.logger.warn(`Removing deleted messages failed: ${describe(err)}`, this.logMeta());
      // A configuration the server cannot follow (no such folder) will not mend by itself.
      const permanent = isMaildropError(err) && err.kind === 'permanent';
      const advice = permanent ? 'tell the administrator' : 'try again later';
      const reply = errLine(`Deleted messages were not removed: ${describe(err)}. Nothing was deleted; ${advice}.`, permanent ? 'SYS/PERM' : 'SYS/TEMP');
      return this.end('quit-failed', reply);
    }
    this.stats.expunged = indexes.length;
    this.services.events.expunged(indexes.length);
    this.begin('quit', okLine(`Bye (${indexes.length} ${indexes.length === 1 ? 'message' : 'messages'} deleted).`), true);
  }

  logMeta(): Record<string, unknown> {
    const cid = this.client.sessionId;
    return { ...(cid === undefined ? {} : { cid }), client: `${this.client.address}:${this.client.port}`, ...(this.user ? { user: this.user } : {}) };
  }

  private begin(reason: EndReason, farewell: Farewell | undefined, afterCleanup: boolean): void {
    if (this.ending) return;
    this.ending = true;
    this.state = 'closed';
    this.sasl = undefined;
    if (!afterCleanup) this.hangUp(farewell);
    this.tearDown(reason, afterCleanup ? farewell : undefined).catch((err: unknown) =>
      this.logger.error(`Session teardown failed: ${describe(err)}`, this.logMeta()),
    );
  }

  private hangUp(farewell: Farewell | undefined): void {
    if (farewell === 'cut') this.io.destroy();
    else this.io.close(farewell);
  }

  private async tearDown(reason: EndReason, lateFarewell: Farewell | undefined): Promise<void> {
    try {
      // Whatever the command in flight still does (a login completing) is part of what is let go.
      await this.inFlight?.catch(() => undefined);
      await this.letGo();
    } finally {
      this.state = 'closed';
      if (lateFarewell !== undefined) this.hangUp(lateFarewell);
      this.logEnd(reason);
      this.markFinished();
    }
  }

  /** Lets go of the maildrop (nothing removed, marks taken back) and then of its lock. */
  private async letGo(): Promise<void> {
    const maildrop = this.transaction?.maildrop ?? this.pendingMaildrop;
    const lease = this.transaction?.lease;
    this.transaction = undefined;
    this.pendingMaildrop = undefined;
    try {
      await maildrop?.abandon();
    } catch (err) {
      this.logger.error(`Could not restore the mailbox state: ${describe(err)}`, this.logMeta());
    } finally {
      await lease?.release().catch((err: unknown) => this.logger.error(`Could not release the mailbox lock: ${describe(err)}`, this.logMeta()));
    }
  }

  private logEnd(reason: EndReason): void {
    this.services.events.sessionEnded(reason);
    const s = this.stats;
    const seconds = ((Date.now() - this.startedAt) / 1000).toFixed(3);
    this.logger.info(
      `Session ended: ${reason}, top=${s.topped}/${s.toppedBytes}, retr=${s.retrieved}/${s.retrievedBytes}, ` +
        `del=${s.deleted}, expunged=${s.expunged}, duration=${seconds}s`,
      { ...this.logMeta(), event: 'session-end', reason, ...s, durationSeconds: Number(seconds) },
    );
  }

  private trace(command: Command | undefined, line: Buffer): void {
    if (!this.logger.isDebugEnabled()) return;
    this.logger.debug(`C: ${shownCommand(command, line)}`, this.logMeta());
  }
}

/**
 * A command line as the log may show it: never a password, a SASL response (an AUTH initial
 * response carries credentials or a token), or an unknown line that might carry either.
 */
function shownCommand(command: Command | undefined, line: Buffer): string {
  if (!command || !COMMANDS[command.verb]) return `<unrecognised line, ${line.length} bytes>`;
  if (command.verb === 'PASS') return 'PASS ***';
  // An APOP digest is derived from the password: no more fit for a log than the password.
  if (command.verb === 'APOP') return `APOP ${command.args[0] ?? ''} ***`.trim();
  if (command.verb === 'AUTH') return command.args.length > 1 ? `AUTH ${command.args[0]} ***` : `AUTH ${command.args.join(' ')}`.trim();
  return `${command.verb} ${command.args.join(' ')}`.trim();
}

export function isLoopback(address: string): boolean {
  return address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.');
}
