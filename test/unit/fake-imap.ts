/**
 * A stand-in for an imapflow connection, for the unit tests of the IMAP backend's parts: an
 * in-memory mailbox answering the few commands they send (SELECT, SEARCH, FETCH, STORE,
 * EXPUNGE, MOVE, LIST, LOGOUT), each recorded in `calls`. With `wire`, a real imapflow
 * response parser stands behind it, so that the literal tap can go in and bodies can be sent
 * as the server's bytes.
 */
import { EventEmitter } from 'node:events';
import { Readable } from 'node:stream';
import type { FetchMessageObject, ImapFlow, MailboxObject } from 'imapflow';
import { ImapStream } from 'imapflow/lib/handler/imap-stream.js';
import { parseUidSet, uidSet } from '../../src/imap/uid-set.js';

export interface Stored {
  readonly uid: number;
  readonly body: Buffer;
  readonly flags: Set<string>;
}

export interface FakeOptions {
  readonly capabilities?: readonly string[];
  readonly uidValidity?: bigint;
  readonly highestModseq?: bigint;
  readonly readOnly?: boolean;
  /** LIST's answer. */
  readonly folders?: readonly { path: string; flags: readonly string[] }[];
  /** A real imapflow response parser behind the connection (see `send`). */
  readonly wire?: boolean;
}

type Fetcher = (uids: readonly number[], query: FetchQuery) => AsyncGenerator<FetchMessageObject>;

interface FetchQuery {
  uid?: boolean;
  size?: boolean;
  flags?: boolean;
  source?: boolean | { start: number; maxLength: number };
}

const QUIET = { trace() {}, debug() {}, info() {}, warn() {}, error() {} };

export class FakeImap extends EventEmitter {
  readonly capabilities: Map<string, boolean | number>;
  usable = true;
  busy = false;
  /** Every command, as `NAME argument`. */
  readonly calls: string[] = [];
  readonly messages: Stored[] = [];
  /** Commands whose next use the server refuses (answered false), by name. */
  readonly refuse = new Set<string>();
  /** Commands whose next use fails (rejects), by name. */
  readonly fail = new Map<string, Error>();
  /** Replaces FETCH of bodies, to answer as a test needs. */
  fetcher: Fetcher | undefined;
  /** Bodies sent over the wire stop half-way, until resume(). */
  stalled = false;
  private readonly stalls: (() => void)[] = [];
  /** The FETCH the server is answering now: the next waits for it. */
  private answering = Promise.resolve();
  readonly streamer: InstanceType<typeof ImapStream> | undefined;
  private nextUid = 1;

  constructor(private readonly options: FakeOptions = {}) {
    super();
    this.capabilities = new Map((options.capabilities ?? ['IMAP4rev1', 'UIDPLUS']).map((c) => [c, true]));
    if (options.wire) {
      this.streamer = new ImapStream({ logger: QUIET });
      // imapflow's own reader of the parsed responses: here they are only taken and released.
      this.streamer.on('readable', () => {
        let item: { next: () => void } | null;
        while ((item = this.streamer!.read() as { next: () => void } | null) !== null) item.next();
      });
    }
    this.on('error', () => undefined);
  }

  get client(): ImapFlow {
    return this as unknown as ImapFlow;
  }

  /** Adds messages of these sizes (or bodies); returns their UIDs. */
  add(...bodies: (number | Buffer)[]): number[] {
    return bodies.map((b) => {
      const body = typeof b === 'number' ? Buffer.alloc(b, 0x61) : b;
      const uid = this.nextUid++;
      this.messages.push({ uid, body, flags: new Set() });
      return uid;
    });
  }

  /** Skips UIDs, as expunged messages leave gaps. */
  skipUids(n: number): void {
    this.nextUid += n;
  }

  flagged(flag = '\\Deleted'): number[] {
    return this.messages.filter((m) => m.flags.has(flag)).map((m) => m.uid);
  }

  /** The server's bytes, through the parser (and the tap, once it is in). */
  async send(bytes: Buffer | string): Promise<void> {
    const chunk = typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes;
    const streamer = this.streamer!;
    await new Promise<void>((resolve) => (streamer.write(chunk) ? resolve() : streamer.once('drain', resolve)));
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
  }

  connectionBusy(): boolean {
    return this.busy;
  }

  async mailboxOpen(path: string): Promise<MailboxObject> {
    this.command('SELECT', path);
    const last = this.messages.at(-1)?.uid ?? 0;
    return {
      path,
      uidValidity: this.options.uidValidity ?? 7n,
      uidNext: Math.max(this.nextUid, last + 1),
      exists: this.messages.length,
      highestModseq: this.options.highestModseq,
      readOnly: this.options.readOnly ?? false,
    } as MailboxObject;
  }

  async search(query: { all?: boolean; deleted?: boolean; uid?: string }, options: { returnOptions?: string[] } = {}) {
    this.command('SEARCH', JSON.stringify(query));
    const within = query.uid === undefined ? undefined : new Set(parseUidSet(query.uid));
    const uids = this.messages
      .filter((m) => (within === undefined || within.has(m.uid)) && (!query.deleted || m.flags.has('\\Deleted')))
      .map((m) => m.uid);
    if (options.returnOptions === undefined) return uids;
    return { all: uidSet(uids) };
  }

  async fetchAll(range: string, query: FetchQuery): Promise<FetchMessageObject[]> {
    this.command('FETCH', `${range} ${Object.keys(query).join(' ')}`);
    const rows = this.select(range).map((m) => ({
      uid: m.uid,
      seq: 0,
      ...(query.size ? { size: m.body.length } : {}),
      ...(query.flags ? { flags: new Set(m.flags) } : {}),
    }));
    return rows as FetchMessageObject[];
  }

  async *fetch(range: string, query: FetchQuery): AsyncGenerator<FetchMessageObject> {
    const window = typeof query.source === 'object' ? query.source : undefined;
    const origin = window === undefined ? '' : `<${window.start}>`;
    this.command('FETCH', `${range} BODY[]${window === undefined ? '' : `<${window.start}.${window.maxLength}>`}`);
    if (this.fetcher !== undefined) return yield* this.fetcher([...parseUidSet(range)], query);
    // The server answers one command after the other, as imapflow sends them.
    const previous = this.answering;
    let answered!: () => void;
    this.answering = new Promise<void>((resolve) => (answered = resolve));
    try {
      await previous;
      for (const m of this.select(range)) {
        const start = window?.start ?? 0;
        const source = m.body.subarray(start, start + (window?.maxLength ?? m.body.length));
        // What imapflow yields for the rows it parses itself (without a wire, or an empty window).
        if (this.streamer === undefined || source.length === 0) {
          yield { uid: m.uid, seq: 0, source } as FetchMessageObject;
          continue;
        }
        const head = Buffer.from(`* 1 FETCH (UID ${m.uid} BODY[]${origin} {${source.length}}\r\n`, 'latin1');
        const tail = Buffer.from(')\r\n', 'latin1');
        if (!this.stalled) {
          await this.send(Buffer.concat([head, source, tail]));
          continue;
        }
        // Half of the body now, the rest once resume() is called.
        const half = source.length >> 1;
        await this.send(Buffer.concat([head, source.subarray(0, half)]));
        // Resumed already while the first half went out: no wait.
        if (this.stalled) await new Promise<void>((resolve) => this.stalls.push(resolve));
        await this.send(Buffer.concat([source.subarray(half), tail]));
      }
      if (this.streamer !== undefined) await this.send('A1 OK Fetch completed.\r\n');
    } finally {
      answered();
    }
  }

  /** Lets the bodies stalled half-way go on. */
  resume(): void {
    this.stalled = false;
    for (const go of this.stalls.splice(0)) go();
  }

  async download(range: string): Promise<{ meta: object; content?: Readable }> {
    this.command('FETCH', `${range} download`);
    const m = this.messages.find((x) => String(x.uid) === range);
    if (m === undefined) return { meta: {} };
    return { meta: {}, content: Readable.from([m.body.subarray(0, 3), m.body.subarray(3)]) };
  }

  async messageFlagsAdd(range: string, flags: string[]): Promise<boolean> {
    if (!this.command('STORE', `${range} +FLAGS ${flags.join(' ')}`)) return false;
    for (const m of this.select(range)) for (const f of flags) m.flags.add(f);
    return true;
  }

  async messageFlagsRemove(range: string, flags: string[]): Promise<boolean> {
    if (!this.command('STORE', `${range} -FLAGS ${flags.join(' ')}`)) return false;
    for (const m of this.select(range)) for (const f of flags) m.flags.delete(f);
    return true;
  }

  async messageDelete(range: string): Promise<boolean> {
    if (!this.command('EXPUNGE', range)) return false;
    const gone = new Set(this.select(range).map((m) => m.uid));
    this.remove(gone);
    return true;
  }

  async messageMove(range: string, folder: string): Promise<boolean> {
    if (!this.command('MOVE', `${range} ${folder}`)) return false;
    this.remove(new Set(this.select(range).map((m) => m.uid)));
    return true;
  }

  async list(): Promise<{ path: string; flags: Set<string> }[]> {
    this.command('LIST', '');
    return (this.options.folders ?? []).map((f) => ({ path: f.path, flags: new Set(f.flags) }));
  }

  async logout(): Promise<void> {
    this.command('LOGOUT', '');
    this.usable = false;
  }

  close(): void {
    this.usable = false;
    this.emit('close');
  }

  /** Records a command; false when the server is to refuse it; throws when it is to fail. */
  private command(name: string, argument: string): boolean {
    this.calls.push(argument === '' ? name : `${name} ${argument}`);
    const failure = this.fail.get(name);
    if (failure !== undefined) {
      this.fail.delete(name);
      throw failure;
    }
    return !this.refuse.delete(name);
  }

  private select(range: string): Stored[] {
    if (range === '1:*') return this.messages;
    const uids = new Set(parseUidSet(range));
    return this.messages.filter((m) => uids.has(m.uid));
  }

  private remove(uids: Set<number>): void {
    for (let i = this.messages.length - 1; i >= 0; i--) {
      if (uids.has(this.messages[i]!.uid)) this.messages.splice(i, 1);
    }
  }
}

/** The steps' view of a connection, recording whether it was marked interrupted. */
export function stepConnection<C extends { readonly usable: boolean }>(
  client: C,
): { client: C; interrupted: boolean; interrupt(): void } {
  return {
    client,
    interrupted: false,
    interrupt() {
      this.interrupted = true;
    },
  };
}
