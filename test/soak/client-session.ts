/**
 * One POP3 session of a soak client and the record of exactly what it saw: the login's answer,
 * the UIDL listing, every DELE that got +OK (forgotten again by an RSET +OK), how QUIT was
 * answered, and every RETR/TOP with how it ended and whether its bytes are the store's.
 *
 * Commands go out in one write when several are given (pipelining) and their replies are read
 * in order, each within the reply bound. A reply that never comes within the bound while the
 * connection stays open is recorded as unanswered; a connection the server closes is an answer.
 */
import { unstuff } from '../support/pop3-client.js';
import { expectedTop, firstDifference, headerMessageId, sha256 } from './messages.js';
import type { Pop3Wire } from './pop3-wire.js';
import type { Delivered, MailRegistry } from './registry.js';

export type LoginOutcome = 'ok' | 'in-use' | 'sys-temp' | 'other-err' | 'noreply';
export type QuitOutcome = 'not-sent' | 'ok' | 'err' | 'noreply';

export interface RetrRecord {
  kind: 'retr' | 'top';
  n: number;
  k?: number;
  messageId?: string;
  /** whole: ended with CRLF.CRLF; cut: the connection closed first. */
  outcome: 'whole' | 'cut' | 'timeout';
  bytes: number;
  exact?: boolean;
  problem?: string;
}

export interface SessionRecord {
  id: number;
  worker: number;
  user: string;
  target: string;
  behaviour: string;
  connectAt: number;
  endAt: number;
  connect: 'ok' | 'refused' | 'closed' | 'timeout';
  localPort: number;
  greeting?: string;
  passSentAt?: number;
  login?: LoginOutcome;
  loginReply?: string;
  loginAt?: number;
  uidls: Map<number, string>;
  deletes: Array<{ n: number; uidl?: string; messageId?: string }>;
  quit: QuitOutcome;
  quitSentAt?: number;
  quitReply?: string;
  retrs: RetrRecord[];
  commands: number;
  replies: number;
  /** Commands whose reply did not come because the server closed the connection. */
  closedUnanswered: number;
  timeouts: Array<{ command: string; waitedMs: number; at: number }>;
  maxReplyMs: number;
  dropped: 'no' | 'between' | 'mid-body';
  serverClosed: boolean;
}

export interface Reply {
  verb: string;
  status: string;
  body?: Buffer;
}

const MULTILINE = new Set(['RETR', 'TOP', 'CAPA']);

export function uidOfUidl(uidl: string | undefined): number | undefined {
  if (uidl === undefined || !/^[0-9a-f]{16}$/i.test(uidl)) return undefined;
  return parseInt(uidl.slice(0, 8), 16);
}

/** Whether `line` gets a multi-line answer after +OK. */
function isMultiline(line: string): boolean {
  const [verb = '', ...args] = line.split(' ');
  const v = verb.toUpperCase();
  return MULTILINE.has(v) || ((v === 'LIST' || v === 'UIDL') && args.length === 0);
}

export class ClientSession {
  /** Message-ID of message n, as this session's RETR/TOP showed it. */
  private readonly seen = new Map<number, string>();
  /** Set once the connection is gone or timed out: nothing more is read. */
  private over = false;

  constructor(
    readonly rec: SessionRecord,
    readonly wire: Pop3Wire,
    private readonly boundMs: number,
    private readonly registry: MailRegistry,
  ) {}

  get alive(): boolean {
    return !this.over;
  }

  /** Sends the lines in one write and reads their replies in order; stops at the first missing one. */
  async run(lines: readonly string[]): Promise<Array<Reply | undefined>> {
    if (this.over) return lines.map(() => undefined);
    this.wire.send(lines);
    const replies: Array<Reply | undefined> = [];
    for (const line of lines) {
      this.rec.commands++;
      if (line.toUpperCase().startsWith('PASS ')) this.rec.passSentAt = Date.now();
      if (line.toUpperCase() === 'QUIT') {
        this.rec.quit = 'noreply';
        this.rec.quitSentAt = Date.now();
      }
      replies.push(this.over ? this.unanswered() : await this.reply(line));
      // A PASS sent without an answer may have taken the lock: it counts as a possible holder.
      if (/^PASS /i.test(line) && this.rec.login === undefined && replies[replies.length - 1] === undefined) this.rec.login = 'noreply';
    }
    return replies;
  }

  async one(line: string): Promise<Reply | undefined> {
    return (await this.run([line]))[0];
  }

  /** Drops the connection without QUIT. */
  drop(how: 'between' | 'mid-body'): void {
    this.rec.dropped = how;
    this.over = true;
    this.wire.destroy();
  }

  private unanswered(): undefined {
    this.rec.closedUnanswered++;
    return undefined;
  }

  private async reply(line: string): Promise<Reply | undefined> {
    const started = Date.now();
    const status = await this.wire.line(this.boundMs);
    if (status.kind !== 'line') return this.missing(line, status.kind, started);
    const [verb = ''] = line.split(' ');
    const reply: Reply = { verb: verb.toUpperCase(), status: status.line };
    if (status.line.startsWith('+OK') && isMultiline(line)) {
      const body = await this.wire.body(this.boundMs);
      if (body.kind !== 'body') {
        this.bodyMissing(line, body.kind, body.received);
        return this.missing(line, body.kind, started);
      }
      reply.body = unstuff(body.raw);
    }
    this.rec.replies++;
    this.rec.maxReplyMs = Math.max(this.rec.maxReplyMs, Date.now() - started);
    this.record(line, reply);
    return reply;
  }

  private missing(line: string, kind: 'closed' | 'timeout', started: number): undefined {
    this.over = true;
    if (kind === 'timeout') {
      this.rec.timeouts.push({ command: line.startsWith('PASS ') ? 'PASS ***' : line, waitedMs: Date.now() - started, at: Date.now() });
      this.wire.destroy();
    } else {
      this.rec.serverClosed = true;
      this.rec.closedUnanswered++;
    }
    if (/^PASS /i.test(line)) this.rec.login = 'noreply';
    return undefined;
  }

  /** A RETR/TOP whose body did not end: cut (or timed out) after `received` octets. */
  private bodyMissing(line: string, kind: 'closed' | 'timeout', received: number): void {
    const [verb = '', n = '0', k] = line.split(' ');
    if (!/^(RETR|TOP)$/i.test(verb)) return;
    this.rec.retrs.push({ kind: verb.toUpperCase() === 'TOP' ? 'top' : 'retr', n: Number(n), k: k === undefined ? undefined : Number(k), outcome: kind === 'closed' ? 'cut' : 'timeout', bytes: received });
  }

  private record(line: string, reply: Reply): void {
    const [, a, b] = line.split(' ');
    const ok = reply.status.startsWith('+OK');
    switch (reply.verb) {
      case 'PASS':
        this.rec.loginReply = reply.status;
        this.rec.loginAt = Date.now();
        this.rec.login = ok ? 'ok' : /\[IN-USE\]/i.test(reply.status) ? 'in-use' : /\[SYS\/TEMP\]/i.test(reply.status) ? 'sys-temp' : 'other-err';
        break;
      case 'UIDL':
        if (ok && reply.body) this.takeUidls(reply.body);
        break;
      case 'RETR':
      case 'TOP':
        if (ok && reply.body) this.checkBody(reply.verb === 'TOP' ? 'top' : 'retr', Number(a), b === undefined ? undefined : Number(b), reply.body);
        break;
      case 'DELE':
        if (ok) this.rec.deletes.push({ n: Number(a), uidl: this.rec.uidls.get(Number(a)), messageId: this.seen.get(Number(a)) });
        break;
      case 'RSET':
        if (ok) this.rec.deletes = [];
        break;
      case 'QUIT':
        this.rec.quit = ok ? 'ok' : 'err';
        this.rec.quitReply = reply.status;
        break;
    }
  }

  private takeUidls(body: Buffer): void {
    for (const row of body.toString('latin1').split('\r\n')) {
      const m = /^(\d+) (\S+)$/.exec(row);
      if (m) this.rec.uidls.set(Number(m[1]), m[2]!);
    }
  }

  /** Checks a whole RETR/TOP body against the store (during the run: it is cheap). */
  private checkBody(kind: 'retr' | 'top', n: number, k: number | undefined, body: Buffer): void {
    const messageId = headerMessageId(body);
    const r: RetrRecord = { kind, n, k, messageId, outcome: 'whole', bytes: body.length };
    this.rec.retrs.push(r);
    if (messageId !== undefined) this.seen.set(n, messageId);
    const byUidl = this.registry.byUid(this.rec.user, uidOfUidl(this.rec.uidls.get(n)) ?? 0);
    const entry = (messageId === undefined ? undefined : this.registry.byId(messageId)) ?? byUidl;
    if (entry === undefined) {
      r.exact = false;
      r.problem = `message ${n} is none the soak delivered (Message-ID ${messageId ?? 'missing'}, UIDL ${this.rec.uidls.get(n) ?? '?'})`;
      return;
    }
    if (byUidl !== undefined && byUidl.messageId !== entry.messageId) {
      r.exact = false;
      r.problem = `${kind.toUpperCase()} ${n} served ${entry.messageId}, but UIDL ${n} names ${byUidl.messageId}`;
      return;
    }
    r.exact = kind === 'retr' ? sha256(body) === entry.retrHash : this.topMatches(entry, k ?? 0, body, r);
    if (!r.exact && r.problem === undefined) r.problem = this.describe(entry, body);
  }

  private topMatches(entry: Delivered, k: number, body: Buffer, r: RetrRecord): boolean {
    const expected = expectedTop(this.registry.storeOf(entry), k);
    if (expected.equals(body)) return true;
    r.problem = `TOP ${r.n} ${k} of ${entry.messageId}: ${body.length} octets, expected ${expected.length}, first difference at ${firstDifference(body, expected)}`;
    return false;
  }

  private describe(entry: Delivered, body: Buffer): string {
    const store = this.registry.storeOf(entry);
    const at = firstDifference(body, store);
    const around = (b: Buffer) => JSON.stringify(b.subarray(Math.max(0, at - 16), at + 16).toString('latin1'));
    return `RETR of ${entry.messageId} (${entry.style}): ${body.length} octets, store form ${store.length}; first difference at ${at}: got ${around(body)}, store ${around(store)}`;
  }
}

export function newRecord(id: number, worker: number, user: string, target: string, behaviour: string): SessionRecord {
  return {
    id, worker, user, target, behaviour,
    connectAt: Date.now(), endAt: 0, connect: 'ok', localPort: 0,
    uidls: new Map(), deletes: [], quit: 'not-sent', retrs: [],
    commands: 0, replies: 0, closedUnanswered: 0, timeouts: [], maxReplyMs: 0,
    dropped: 'no', serverClosed: false,
  };
}
