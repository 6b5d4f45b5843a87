/**
 * A loopback TCP relay in front of the test Dovecot's IMAP port that makes it behave like Gmail
 * with "Auto-Expunge on" (Gmail's default): a message is expunged as soon as it is flagged
 * \Deleted, whatever the client means to do later (RSET, a dropped connection).
 *
 * - Every capability list the server sends (the untagged CAPABILITY line, and [CAPABILITY ...]
 *   codes in the greeting and in tagged OKs) gets X-GM-EXT-1, which is how clients recognise Gmail.
 *   COMPRESS=DEFLATE is taken out, as the relay must read the stream.
 * - After the server's tagged OK for a STORE or UID STORE that adds \Deleted, the relay holds
 *   that OK, sends its own EXPUNGE (UID EXPUNGE of the same set for UID STORE) on the same server
 *   connection, passes the server's untagged EXPUNGE responses on, swallows its own command's
 *   tagged reply and only then releases the held OK. Client commands sent after that STORE wait
 *   in the relay meanwhile, so the server sees STORE and EXPUNGE back to back.
 * - Because imapflow adds X-GM-MSGID (X-GM-THRID, X-GM-LABELS) to FETCH commands when it sees
 *   X-GM-EXT-1, and Dovecot does not know them, those items are removed from client FETCH lines.
 *
 * Both directions are parsed line by line with IMAP literals ({n} from the server, {n} and {n+}
 * from the client) passed through untouched, so message bodies arrive byte-exact whatever the
 * TCP chunking; everything not named above is relayed unchanged.
 */
import { listenRelay } from './tcp-relay.js';

export interface GmailRelay {
  readonly port: number;
  /** Messages the relay expunged on its own (the server's EXPUNGE/VANISHED answers to its commands). */
  readonly expunged: number;
  /** Expunge commands the relay sent. */
  readonly autoExpunges: number;
  /** Connections opened so far. */
  readonly connections: number;
  close(): Promise<void>;
}

const GMAIL_CAPABILITY = 'X-GM-EXT-1';

/**
 * Splits an IMAP stream into lines (with their line end) and literal bytes. A line ending in
 * {n} or {n+} is followed by n literal bytes, then the same command or response continues on
 * the next line. `starts` tells whether a line begins a new command/response. While `paused`,
 * input is kept unread.
 */
export class ImapSplitter {
  paused = false;
  private buffer: Buffer = Buffer.alloc(0);
  /** Literal bytes still to come. */
  private literal = 0;
  /** Whether the next line continues the command/response of the previous one (after a literal). */
  private continued = false;

  constructor(
    private readonly onLine: (line: Buffer, starts: boolean) => void,
    private readonly onLiteral: (bytes: Buffer) => void,
  ) {}

  push(chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    this.drain();
  }

  resume(): void {
    this.paused = false;
    this.drain();
  }

  private drain(): void {
    while (!this.paused && this.buffer.length > 0) {
      if (this.literal > 0) {
        // Literal bytes go on as they come, without waiting for the whole literal.
        const n = Math.min(this.literal, this.buffer.length);
        this.literal -= n;
        const bytes = this.buffer.subarray(0, n);
        this.buffer = this.buffer.subarray(n);
        this.onLiteral(bytes);
        continue;
      }
      const lf = this.buffer.indexOf(0x0a);
      if (lf < 0) return;
      const line = this.buffer.subarray(0, lf + 1);
      this.buffer = this.buffer.subarray(lf + 1);
      const starts = !this.continued;
      const m = /\{(\d+)\+?\}\r?\n$/.exec(line.subarray(-24).toString('latin1'));
      this.literal = m ? Number(m[1]) : 0;
      this.continued = m !== null;
      this.onLine(line, starts);
    }
  }
}

/** Adds X-GM-EXT-1 to a space-separated capability list and drops COMPRESS=*. */
function gmailCapabilities(list: string): string {
  const caps = list.split(' ').filter((c) => c !== '' && !/^COMPRESS=/i.test(c));
  if (!caps.some((c) => c.toUpperCase() === GMAIL_CAPABILITY)) caps.push(GMAIL_CAPABILITY);
  return caps.join(' ');
}

/** A server line (one without literals) with its capability list rewritten, or undefined. */
function rewriteCapabilities(text: string): string | undefined {
  const untagged = /^(\* CAPABILITY )([^\r\n]*)(\r?\n)$/i.exec(text);
  if (untagged) return untagged[1] + gmailCapabilities(untagged[2]!) + untagged[3];
  const code = /^(\S+ (?:OK|PREAUTH) \[CAPABILITY )([^\]]*)(\].*)$/is.exec(text);
  if (code) return code[1] + gmailCapabilities(code[2]!) + code[3];
  return undefined;
}

/** A client STORE that adds \Deleted: `tag [UID] STORE set [(modifiers)] [+]FLAGS[.SILENT] (...)`. */
const STORE_DELETED = /^(\S+) (UID )?STORE (\S+) (?:\([^)]*\) )?\+?FLAGS(?:\.SILENT)? [^\r\n]*\\Deleted\b/i;
const FETCH = /^\S+ (?:UID )?FETCH /i;

export async function startGmailRelay(targetPort: number, targetHost = '127.0.0.1'): Promise<GmailRelay> {
  let expunged = 0;
  let autoExpunges = 0;

  const relay = await listenRelay(targetPort, targetHost, (client, upstream) => {
    let uidplus = false;
    let ownTags = 0;
    /** The client STORE whose tagged answer is awaited. */
    let store: { tag: string; uid: boolean; set: string } | undefined;
    /** Our own expunge command in flight, and the STORE OK held until it is done. */
    let own: { tag: string; held: Buffer } | undefined;

    // Client -> server.
    const fromClient = new ImapSplitter(
      (line, starts) => {
        if (!starts) return void upstream.write(line);
        const text = line.toString('latin1');
        if (FETCH.test(text)) {
          const stripped = text.replace(/ X-GM-(?:MSGID|THRID|LABELS)\b/gi, '').replace(/\(X-GM-(?:MSGID|THRID|LABELS) ?/gi, '(');
          return void upstream.write(Buffer.from(stripped, 'latin1'));
        }
        const m = STORE_DELETED.exec(text);
        if (m) {
          store = { tag: m[1]!, uid: m[2] !== undefined, set: m[3]! };
          // Nothing more goes to the server until the STORE and its expunge are done.
          fromClient.paused = true;
        }
        upstream.write(line);
      },
      (bytes) => upstream.write(bytes),
    );

    // Server -> client.
    const fromServer = new ImapSplitter(
      (line, starts) => {
        if (!starts) return void client.write(line);
        const text = line.toString('latin1');
        const tag = text.slice(0, text.indexOf(' '));
        if (own !== undefined) {
          if (tag === own.tag) {
            // Our command's own answer: swallowed; now the client may have the STORE's OK.
            client.write(own.held);
            own = undefined;
            fromClient.resume();
            return;
          }
          const vanished = /^\* VANISHED (?:\(EARLIER\) )?(\S+)/i.exec(text);
          if (/^\* \d+ EXPUNGE\b/i.test(text)) expunged++;
          else if (vanished) expunged += countSet(vanished[1]!);
        } else if (store !== undefined && tag === store.tag) {
          const ok = /^\S+ OK\b/i.test(text);
          const { uid, set } = store;
          store = undefined;
          if (!ok) {
            client.write(line);
            fromClient.resume();
            return;
          }
          own = { tag: `gm${++ownTags}`, held: Buffer.from(line) };
          autoExpunges++;
          upstream.write(`${own.tag} ${uid && uidplus ? `UID EXPUNGE ${set}` : 'EXPUNGE'}\r\n`);
          return;
        }
        const rewritten = rewriteCapabilities(text);
        if (rewritten !== undefined) {
          if (/\bUIDPLUS\b/i.test(text)) uidplus = true;
          return void client.write(Buffer.from(rewritten, 'latin1'));
        }
        client.write(line);
      },
      (bytes) => client.write(bytes),
    );

    client.on('data', (d: Buffer) => fromClient.push(d));
    upstream.on('data', (d: Buffer) => fromServer.push(d));
  });
  return {
    port: relay.port,
    get expunged() {
      return expunged;
    },
    get autoExpunges() {
      return autoExpunges;
    },
    get connections() {
      return relay.connections;
    },
    close: relay.close,
  };
}

/** How many numbers a set like 3,5:7 names. */
function countSet(set: string): number {
  let n = 0;
  for (const part of set.split(',')) {
    const [a, b] = part.split(':').map(Number);
    n += b === undefined ? 1 : Math.abs(b - a!) + 1;
  }
  return n;
}
