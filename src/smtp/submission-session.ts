/**
 * One SMTP submission session, as the front door's hooks drive it: AUTH finds the submitter
 * and logs in to its relay (so that wrong credentials are the client's 535 at once), MAIL and
 * RCPT are asked of the relay as the client asks them, and DATA streams the message to the
 * relay, whose reply to the final "." is the client's. Nothing is queued here: no `250` for a
 * message the relay has not accepted, and nothing relayed that the client did not finish.
 * Replies that are not the client's fault are temporary (4xx), with the reason in the log only.
 */
import type { Readable } from 'node:stream';
import type { Logger } from 'winston';
import type { SubmissionEvents } from '../metrics/events.js';
import type { ClientInfo, Credentials } from '../maildrop/maildrop.js';
import { RelayClient, RelayError, type RelayLogin, type RelayOptions } from './relay-client.js';
import { replyText, type RelayReply } from './relay-reply.js';
import { SmtpReply } from './smtp-reply.js';
import { SubmitterError, type Submitter, type Submitters } from './submitters.js';

export interface SubmissionPolicy {
  /** TLS can be had on this server, and passwords may not go without it (but from loopback). */
  readonly plaintextAuthRefused: (client: ClientInfo, secure: boolean) => boolean;
  readonly maxAuthFailures: number;
  /** Notes a failed login from an address (one count with POP3's); the delay before answering. */
  authFailed(address: string): Promise<number>;
  readonly maxSize: number;
}

export type { SubmissionEvents, SubmissionLogin, SubmissionResult } from '../metrics/events.js';

export interface SubmissionServices {
  readonly submitters: Submitters;
  readonly policy: SubmissionPolicy;
  readonly relayOptions: RelayOptions;
  readonly events: SubmissionEvents;
  readonly logger: Logger;
}

/** MAIL and RCPT parameters, as smtp-server parsed them (upper-case keys). */
export type Params = Readonly<Record<string, string | boolean | undefined>>;

// eslint-disable-next-line no-control-regex -- control characters are what it finds
const CONTROL = /[\u0000-\u001f\u007f]/;
const LF = 0x0a;
const CR = 0x0d;

export class SubmissionSession {
  private submitter: Submitter | undefined;
  private relay: RelayClient | undefined;
  private login: RelayLogin | undefined;
  /** The relay has accepted a MAIL that no DATA or RSET has ended. */
  private inTransaction = false;
  private authFailures = 0;
  /** Set when the message being received must not reach the relay whole (shutdown, client gone). */
  private abandoned = false;
  private receiving = false;

  constructor(
    private readonly services: SubmissionServices,
    readonly client: ClientInfo,
  ) {}

  get user(): string | undefined {
    return this.login?.user;
  }

  /** Whether a message is being received now (a shutdown lets it finish within the grace). */
  get inData(): boolean {
    return this.receiving;
  }

  /** AUTH: resolves once the relay took the login (or there is no relay); rejects with the reply. */
  async auth(credentials: Credentials, secure: boolean): Promise<void> {
    const { policy } = this.services;
    if (policy.plaintextAuthRefused(this.client, secure)) {
      throw new SmtpReply(538, '5.7.11', 'Encryption required: use STARTTLS or the TLS port');
    }
    if (CONTROL.test(credentials.user)) return this.wrongCredentials('the user name holds control characters');
    let submitter: Submitter;
    try {
      submitter = await this.services.submitters.authenticate(credentials, this.client);
    } catch (err) {
      if (err instanceof SubmitterError && err.kind === 'credentials') return this.wrongCredentials(err.message);
      return this.temporary('login', err);
    }
    if (submitter.relay !== undefined) await this.openRelay(submitter);
    this.submitter = submitter;
    this.services.events.login('ok');
    this.log(
      'info',
      `Logged in for sending, profile ${submitter.profile}${submitter.relay ? '' : ' (which has no relay)'}`,
      credentials.user,
    );
  }

  /** MAIL FROM: the sender checked against the login, then asked of the relay. */
  async mailFrom(address: string, params: Params): Promise<void> {
    const submitter = this.submitter!;
    if (submitter.relay === undefined)
      throw new SmtpReply(530, '5.7.0', 'Sending mail is not enabled for this account');
    const senders = submitter.senders;
    if (senders !== undefined && !senders.has(address.toLowerCase())) {
      this.log('info', `Sender <${address}> refused: not an address of this login`);
      throw new SmtpReply(553, '5.7.1', 'Sender address not allowed for this login');
    }
    const relay = await this.relayFor(submitter);
    if (this.inTransaction) passOn(await this.ask(() => relay.reset()));
    const reply = await this.ask(() => relay.mail(address, mailParams(relay, params)));
    this.inTransaction = reply.code === 250;
    passOn(reply);
  }

  /** RCPT TO: the relay's answer is the client's; a refused recipient is refused alone. */
  async rcptTo(address: string, params: Params): Promise<void> {
    const relay = this.relay;
    if (relay === undefined || !this.inTransaction) throw new SmtpReply(503, '5.5.1', 'Send MAIL first');
    passOn(await this.ask(() => relay.rcpt(address, rcptParams(relay, params))));
  }

  /**
   * DATA: the message streamed to the relay as it arrives. Resolves to the text of the relay's
   * 250 for the client; rejects with the reply the client gets otherwise.
   */
  async data(message: Readable): Promise<string> {
    const relay = this.relay;
    if (relay === undefined || !this.inTransaction) throw new SmtpReply(503, '5.5.1', 'Send MAIL first');
    this.inTransaction = false;
    this.receiving = true;
    const check = new MessageCheck(this.services.policy.maxSize);
    let reply: RelayReply;
    try {
      reply = await relay.data(check.filter(message), () => this.abandoned || check.failed !== undefined);
    } catch (err) {
      this.relay = undefined;
      return this.dataFailed(err, check);
    } finally {
      this.receiving = false;
    }
    if (reply.code < 200 || reply.code >= 300) {
      this.services.events.message('refused', check.octets);
      this.log('info', `The relay refused the message: ${replyText(reply)}`);
      passOn(reply);
    }
    this.services.events.message('accepted', check.octets);
    this.log('info', `Message relayed, ${check.octets} octets: ${replyText(reply)}`);
    return `${reply.enhanced ?? '2.0.0'} ${reply.lines.join(' ')}`;
  }

  /** The message being received is not to reach the relay whole (a shutdown at the end of its grace). */
  abandon(): void {
    this.abandoned = true;
    if (this.receiving) this.relay?.abort();
  }

  /** The client is gone: the relay connection goes too (a transaction in progress is not finished). */
  close(): void {
    this.abandoned = true;
    const relay = this.relay;
    this.relay = undefined;
    if (relay === undefined) return;
    if (this.receiving || this.inTransaction) relay.abort();
    else void relay.quit();
  }

  private dataFailed(err: unknown, check: MessageCheck): never {
    if (check.failed !== undefined) {
      this.services.events.message('refused', check.octets);
      this.log('info', `Message refused before it reached the relay: ${check.failed.text}`);
      throw check.failed;
    }
    this.services.events.message(this.abandoned ? 'abandoned' : 'failed', check.octets);
    this.log('warn', `Message not relayed (the relay got no final "."): ${(err as Error).message}`);
    throw new SmtpReply(451, '4.4.1', 'The message could not be relayed, try again later');
  }

  private async openRelay(submitter: Submitter): Promise<RelayClient> {
    this.relay = undefined;
    for (let attempt = 0; ; attempt++) {
      const login = await submitter.relayLogin().catch((err: unknown) => this.temporary('token', err));
      try {
        this.relay = await RelayClient.open(submitter.relay!, login, this.services.relayOptions);
        this.login = login;
        return this.relay;
      } catch (err) {
        if (!(err instanceof RelayError) || err.kind !== 'login') return this.temporary('relay', err);
        if (submitter.relayChecksCredentials) return this.wrongCredentials(err.message);
        // A token the relay refused: a fresh one once, then it is the proxy's access that is wrong.
        submitter.refused(login);
        if (attempt > 0) return this.temporary('token', err);
      }
    }
  }

  private relayFor(submitter: Submitter): Promise<RelayClient> {
    return this.relay === undefined ? this.openRelay(submitter) : Promise.resolve(this.relay);
  }

  /** A relay command; a relay gone meanwhile is the client's 451, never a silent success. */
  private async ask(command: () => Promise<RelayReply>): Promise<RelayReply> {
    try {
      return await command();
    } catch (err) {
      this.relay = undefined;
      this.inTransaction = false;
      if (err instanceof RelayError && err.reply !== undefined) return err.reply;
      this.log('warn', `The relay connection failed: ${(err as Error).message}`);
      throw new SmtpReply(451, '4.4.1', 'The relay is not reachable, try again later');
    }
  }

  private async wrongCredentials(why: string): Promise<never> {
    this.services.events.login('auth');
    this.log('info', `Login failed: ${why}`);
    this.authFailures++;
    const delay = await this.services.policy.authFailed(this.client.address);
    await new Promise((resolve) => setTimeout(resolve, delay));
    const last = this.authFailures >= this.services.policy.maxAuthFailures;
    throw new SmtpReply(535, '5.7.8', 'Authentication credentials invalid', last);
  }

  private temporary(what: 'login' | 'token' | 'relay', err: unknown): never {
    this.services.events.login('backend-error');
    this.log('warn', `Login not completed (${what}): ${(err as Error).message}`);
    throw new SmtpReply(454, '4.7.0', 'Temporary authentication failure, try again later');
  }

  private log(level: 'info' | 'warn', message: string, user = this.user): void {
    const client = `${this.client.address}:${this.client.port}`;
    this.services.logger.log(level, message, {
      cid: this.client.sessionId,
      client,
      ...(user ? { user } : {}),
      protocol: 'smtp',
    });
  }
}

/** A relay's refusal becomes the client's, code, enhanced code and text as the relay said them. */
function passOn(reply: RelayReply): void {
  if (reply.code < 300) return;
  // A 3xx here is the relay answering out of turn: never taken for a success (nor a 250).
  if (reply.code < 400) throw new SmtpReply(451, '4.4.0', 'The relay answered out of turn, try again later');
  throw new SmtpReply(reply.code, reply.enhanced ?? (reply.code < 500 ? '4.0.0' : '5.0.0'), reply.lines.join(' '));
}

/** MAIL parameters the relay takes; one it lacks that the client insists on is refused. */
function mailParams(relay: RelayClient, params: Params): string[] {
  const out: string[] = [];
  if (typeof params.SIZE === 'string' && relay.supports('SIZE')) out.push(`SIZE=${params.SIZE}`);
  if (params.BODY === '8BITMIME') {
    if (!relay.supports('8BITMIME'))
      throw new SmtpReply(555, '5.6.3', 'The relay does not take 8-bit messages (BODY=8BITMIME)');
    out.push('BODY=8BITMIME');
  }
  if (params.SMTPUTF8 !== undefined && params.SMTPUTF8 !== false) {
    if (!relay.supports('SMTPUTF8'))
      throw new SmtpReply(555, '5.6.7', 'The relay does not take internationalized addresses (SMTPUTF8)');
    out.push('SMTPUTF8');
  }
  return out;
}

function rcptParams(_relay: RelayClient, _params: Params): string[] {
  return [];
}

/**
 * What the message must be before its final "." goes to the relay: lines ending in CRLF only
 * (a bare CR or LF is how SMTP smuggling hides a second message; refused as Postfix refuses it),
 * and no larger than the limit announced in EHLO.
 */
class MessageCheck {
  octets = 0;
  failed: SmtpReply | undefined;
  private lastByte = LF;

  constructor(private readonly maxSize: number) {}

  async *filter(message: Readable): AsyncGenerator<Buffer> {
    for await (const chunk of message as AsyncIterable<Buffer>) {
      this.octets += chunk.length;
      if (this.octets > this.maxSize)
        this.failed ??= new SmtpReply(552, '5.3.4', `Message too big (the limit is ${this.maxSize} octets)`);
      if (this.failed === undefined && this.bareLineEnd(chunk)) {
        this.failed = new SmtpReply(
          554,
          '5.6.0',
          'Message refused: a bare CR or LF line end (send CRLF line ends only)',
        );
      }
      if (this.failed !== undefined) continue;
      yield chunk;
    }
    // A stream destroyed when the client went away can end the loop as if it were whole: only
    // a stream that really ended (the client's final ".") may let the relay have its end.
    if (!message.readableEnded) throw new Error('the client went away before the end of its message');
  }

  /** Whether an LF without its CR, or a CR without its LF, is in `chunk` (or across its start). */
  private bareLineEnd(chunk: Buffer): boolean {
    const before = this.lastByte;
    this.lastByte = chunk[chunk.length - 1]!;
    if (before === CR && chunk[0] !== LF) return true;
    for (let at = chunk.indexOf(LF); at !== -1; at = chunk.indexOf(LF, at + 1)) {
      if ((at === 0 ? before : chunk[at - 1]) !== CR) return true;
    }
    // A CR at the very end waits for the next chunk's first byte.
    for (let at = chunk.indexOf(CR); at !== -1 && at < chunk.length - 1; at = chunk.indexOf(CR, at + 1)) {
      if (chunk[at + 1] !== LF) return true;
    }
    return false;
  }
}
