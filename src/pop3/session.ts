/**
 * One POP3 session: the RFC 1939 state machine (AUTHORIZATION, TRANSACTION, UPDATE) over a
 * byte-stream connection. The session owns its state: the command handlers it is given (one
 * per command) read it and change it only through the CommandContext's transitions. It knows
 * the mail store only through the Maildrop contract.
 *
 * As in Dovecot's pop3, a session ends in two steps: disconnect (the client hears the farewell
 * at once, or the connection is cut) and destroy (once the command in flight has settled, the
 * maildrop is let go of, the lock released, the end logged and counted). end() does both.
 */
import type { LockLease, LockLossCause } from '../lock/lock-registry.js';
import { isMaildropError } from '../maildrop/errors.js';
import type { ClientInfo, Maildrop, MessageEntry } from '../maildrop/maildrop.js';
import { isLoopback } from '../net/address.js';
import type {
  CommandContext,
  CommandTable,
  EndReason,
  Farewell,
  SaslContinuation,
  SessionState,
  Transaction,
} from './command-context.js';
import { parseCommand, type Command } from './command-parser.js';
import { errLine, okLine, type ResponseCode } from './responses.js';
import { errorText } from './session-errors.js';
import { countDelivery, noStats, sessionSummary, shownCommand, type SessionStats } from './session-log.js';
import type { SessionIO, SessionServices } from './session-services.js';

interface OpenTransaction extends Transaction {
  readonly lease: LockLease;
  readonly deleted: Set<number>;
  lastRetrieved: number;
}

/** What a login in progress holds, for the teardown to let go of if the session ends first. */
interface Held {
  maildrop: Maildrop | undefined;
  lease: LockLease | undefined;
}

export class Pop3Session implements CommandContext {
  private currentState: SessionState = 'authorization';
  /** The name given by USER, waiting for PASS. */
  private pendingUser: string | undefined;
  /** The user of the maildrop being opened or open, for the log line. */
  private user: string | undefined;
  private open: OpenTransaction | undefined;
  private held: Held | undefined;
  private readonly stats: SessionStats = noStats();
  /** Set while an AUTH exchange waits for a response line. */
  private sasl: SaslContinuation | undefined;
  private authFailures = 0;
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
    private readonly io: SessionIO,
    readonly client: ClientInfo,
    readonly services: SessionServices,
    private readonly commands: CommandTable,
  ) {
    services.events.sessionStarted();
  }

  get state(): SessionState {
    return this.currentState;
  }

  get logger() {
    return this.services.logger;
  }

  get secure(): boolean {
    return this.io.secure;
  }

  greeting(): Buffer {
    // No APOP timestamp: a proxy never holds the secret APOP needs, and clients that see one try it.
    return okLine(this.services.policy.greeting);
  }

  /** Handles one command line. Resolves when its reply has been written. */
  async handle(line: Buffer): Promise<void> {
    if (this.currentState === 'closed' || this.currentState === 'update') return;
    if (this.lockGone) return this.endForLostLock();
    const errorsBefore = this.errorRun;
    const run = this.dispatch(line);
    this.inFlight = run;
    try {
      await run;
    } finally {
      this.inFlight = undefined;
      if (this.lockGone && this.currentState === 'transaction') this.endForLostLock();
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
    const handler = this.commands[command.verb];
    if (!handler) return this.protocolError(`Unknown command: ${command.verb.slice(0, 8)}`);
    const state = this.currentState;
    if (!handler.states.includes(state))
      return this.protocolError(`${command.verb} is not allowed in the ${state.toUpperCase()} state.`);
    if (!handler.acceptsArgs(command.args.length))
      return this.protocolError(`Wrong number of arguments for ${command.verb}.`);
    this.services.events.command(command.verb);
    return handler.run(this, command);
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

  get plaintextAuthRefused(): boolean {
    const policy = this.services.policy;
    return policy.tlsAvailable && !policy.allowPlaintextAuth && !this.io.secure && !isLoopback(this.client.address);
  }

  send(data: Buffer | readonly Buffer[]): Promise<void> {
    return this.io.send(data);
  }

  async ok(text: string): Promise<void> {
    this.logger.debug(`S: +OK ${text}`, this.logMeta());
    await this.io.send(okLine(text));
  }

  async error(text: string, code?: ResponseCode): Promise<void> {
    this.logger.debug(`S: -ERR ${code ? `[${code}] ` : ''}${text}`, this.logMeta());
    await this.io.send(errLine(text, code));
  }

  // AUTHORIZATION

  rememberUser(name: string): void {
    this.pendingUser = name;
  }

  takeUser(): string | undefined {
    const user = this.pendingUser;
    this.pendingUser = undefined;
    return user;
  }

  startTls(reply: Buffer): Promise<void> {
    // Everything the client said before TLS is forgotten (RFC 2595 section 4).
    this.pendingUser = undefined;
    return this.io.startTls(reply);
  }

  awaitSaslResponse(next: SaslContinuation): void {
    this.sasl = next;
  }

  authFailed(): number {
    return ++this.authFailures;
  }

  beginLogin(user: string): void {
    this.user = user;
    this.held = { maildrop: undefined, lease: undefined };
  }

  holdForLogin(maildrop: Maildrop, lease?: LockLease): void {
    if (this.held === undefined) throw new Error('holdForLogin() outside a login');
    this.held.maildrop = maildrop;
    if (lease !== undefined) this.held.lease = lease;
  }

  async abandonLogin(): Promise<void> {
    const held = this.held;
    this.held = undefined;
    this.user = undefined;
    if (held !== undefined) await this.letGo(held);
  }

  enterTransaction(messages: readonly MessageEntry[]): void {
    const { maildrop, lease } = this.held ?? {};
    if (maildrop === undefined || lease === undefined || this.user === undefined)
      throw new Error('enterTransaction() before the login held its mailbox');
    this.held = undefined;
    this.open = { user: this.user, maildrop, lease, messages, deleted: new Set(), lastRetrieved: 0 };
    this.currentState = 'transaction';
    this.io.loggedIn();
    this.watchLock(lease);
  }

  // TRANSACTION

  get transaction(): Transaction {
    const open = this.open;
    if (open === undefined) throw new Error('No open maildrop in this state');
    return open;
  }

  markDeleted(index: number): void {
    this.openTransaction().deleted.add(index);
    this.stats.deleted++;
    this.services.events.deleted();
  }

  resetDeletions(): void {
    const open = this.openTransaction();
    open.deleted.clear();
    open.lastRetrieved = 0;
    this.stats.deleted = 0;
  }

  retrieved(index: number, octets: number): void {
    const open = this.openTransaction();
    open.lastRetrieved = Math.max(open.lastRetrieved, index + 1);
    countDelivery(this.stats, octets, true);
    this.services.events.retrieved(octets, true);
  }

  topped(octets: number): void {
    countDelivery(this.stats, octets, false);
    this.services.events.retrieved(octets, false);
  }

  /**
   * QUIT in TRANSACTION: the UPDATE state. Removes exactly the messages marked deleted and
   * answers +OK only once the store confirmed it and the mailbox is free for the next login.
   */
  async update(): Promise<void> {
    const open = this.openTransaction();
    this.currentState = 'update';
    const indexes = [...open.deleted].sort((a, b) => a - b);
    try {
      await open.maildrop.commit(indexes);
    } catch (err) {
      this.logger.warn(`Removing deleted messages failed: ${errorText(err)}`, this.logMeta());
      // A configuration the server cannot follow (no such folder) will not mend by itself.
      const permanent = isMaildropError(err) && err.kind === 'permanent';
      const advice = permanent ? 'tell the administrator' : 'try again later';
      // The reason is in the log above: the client's line names no folder and quotes no server,
      // unless the store said what happened in words for the client (some were removed).
      const said = isMaildropError(err) ? err.clientText : undefined;
      const text = said ?? `Deleted messages were not removed. Nothing was deleted; ${advice}.`;
      return this.end('quit-failed', errLine(text, permanent ? 'SYS/PERM' : 'SYS/TEMP'));
    }
    this.stats.expunged = indexes.length;
    this.services.events.expunged(indexes.length);
    const farewell = okLine(`Bye (${indexes.length} ${indexes.length === 1 ? 'message' : 'messages'} deleted).`);
    this.begin('quit', farewell, true);
  }

  private openTransaction(): OpenTransaction {
    if (this.open === undefined) throw new Error('No open maildrop in this state');
    return this.open;
  }

  /**
   * Once the mailbox lock is lost (another session may have the mailbox now), the session commits
   * nothing: it ends with [SYS/TEMP] at once if idle, else right after the command being answered.
   */
  private watchLock(lease: LockLease): void {
    const lost = () => {
      if (this.ending || this.currentState !== 'transaction') return;
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

  // The way out

  /**
   * The one way out, whatever ended the session (see the top of this file): nothing removed that
   * QUIT did not commit. Any path may call it, any number of times: the first call decides. A
   * handler must not await `finished()`: the teardown waits for the handler.
   */
  end(reason: EndReason, farewell?: Farewell): void {
    this.begin(reason, farewell, false);
  }

  /** Ends the session from outside (idle, deadline, shutdown); a QUIT already committing finishes. */
  interrupt(reason: EndReason, text: string, code?: ResponseCode): void {
    if (this.currentState === 'update') return;
    // Before login every reply is one write, so a login still waiting on the backend cannot be
    // cut short by our line. After it, a command in progress may be in the middle of a reply.
    const midReply = this.inFlight !== undefined && this.currentState !== 'authorization';
    this.end(reason, midReply ? 'cut' : errLine(text, code));
  }

  /** Resolves once the session is over and its cleanup done. */
  finished(): Promise<void> {
    return this.done;
  }

  logMeta(): Record<string, unknown> {
    const cid = this.client.sessionId;
    return {
      ...(cid === undefined ? {} : { cid }),
      client: `${this.client.address}:${this.client.port}`,
      ...(this.user ? { user: this.user } : {}),
    };
  }

  private begin(reason: EndReason, farewell: Farewell | undefined, afterCleanup: boolean): void {
    if (this.ending) return;
    this.ending = true;
    this.currentState = 'closed';
    this.sasl = undefined;
    if (!afterCleanup) this.disconnect(farewell);
    this.destroy(reason, afterCleanup ? farewell : undefined).catch((err: unknown) =>
      this.logger.error(`Session teardown failed: ${errorText(err)}`, this.logMeta()),
    );
  }

  private disconnect(farewell: Farewell | undefined): void {
    if (farewell === 'cut') this.io.destroy();
    else this.io.close(farewell);
  }

  private async destroy(reason: EndReason, lateFarewell: Farewell | undefined): Promise<void> {
    try {
      // Whatever the command in flight still does (a login completing) is part of what is let go.
      await this.inFlight?.catch(() => undefined);
      const held: Held = this.open ?? this.held ?? { maildrop: undefined, lease: undefined };
      this.open = undefined;
      this.held = undefined;
      await this.letGo(held);
    } finally {
      this.currentState = 'closed';
      if (lateFarewell !== undefined) this.disconnect(lateFarewell);
      this.logEnd(reason);
      this.markFinished();
    }
  }

  /** Lets go of a maildrop (nothing removed, marks taken back) and then of its lock. */
  private async letGo({ maildrop, lease }: Held): Promise<void> {
    try {
      await maildrop?.abandon();
    } catch (err) {
      this.logger.error(`Could not restore the mailbox state: ${errorText(err)}`, this.logMeta());
    } finally {
      await lease
        ?.release()
        .catch((err: unknown) =>
          this.logger.error(`Could not release the mailbox lock: ${errorText(err)}`, this.logMeta()),
        );
    }
  }

  private logEnd(reason: EndReason): void {
    this.services.events.sessionEnded(reason);
    const { message, fields } = sessionSummary(reason, this.stats, Date.now() - this.startedAt);
    this.logger.info(message, { ...this.logMeta(), ...fields });
  }

  private trace(command: Command | undefined, line: Buffer): void {
    if (!this.logger.isDebugEnabled()) return;
    const known = command !== undefined && this.commands[command.verb] !== undefined;
    this.logger.debug(`C: ${shownCommand(known ? command : undefined, line)}`, this.logMeta());
  }
}
