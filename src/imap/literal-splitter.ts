/**
 * Takes the message bodies out of the IMAP response stream as they arrive. The bytes the server
 * sends go through here before imapflow's parser sees them: a FETCH response whose `BODY[]`
 * literal belongs to a message someone claimed (a read-ahead) is taken out whole, its literal
 * handed on in the chunks the socket delivered (never joined, never copied); every other byte
 * is passed on to imapflow unchanged and in order, untagged responses (EXISTS, EXPUNGE, FLAGS,
 * other FETCH rows) and tagged ones alike. imapflow thus never assembles those bodies into one
 * Buffer or builds a FETCH object for them; it sees the command complete with nothing to yield.
 *
 * Only the first line of a response decides: `* <seq> FETCH (... UID <uid> ... BODY[] {<n>}`
 * (also `BODY[]<origin>` of a window, `{n+}` and `~{n}`), the UID before the literal. A
 * response with a UID nobody claimed goes to imapflow as before; one that names its UID only
 * after the body is offered with no UID.
 */

/** Where the bytes of one claimed body go. */
export interface BodyTarget {
  /**
   * The next bytes of the literal, a slice of what the socket delivered. False asks the
   * reading to stop until whenDrained() calls back (backpressure down to the socket).
   */
  push(chunk: Buffer): boolean;
  /** Calls back once the target takes more (at once if it does now). */
  whenDrained(ready: () => void): void;
  /** The literal is complete. */
  end(): void;
  /** The connection ended before the literal did. */
  fail(err: Error): void;
}

/**
 * Returns the target for a claimed UID's body of `size` octets, or undefined if not claimed.
 * `uid` is undefined when the row names no UID before its body.
 */
export type Claim = (uid: number | undefined, size: number) => BodyTarget | undefined;

const LF = 0x0a;
const CR = 0x0d;
const OPEN = 0x7b;
const CLOSE = 0x7d;
const ZERO = 0x30;
const STAR = 0x2a;
const SPACE = 0x20;
/**
 * A partial first line longer than this is passed on rather than held: a FETCH line worth
 * taking out is far shorter. Only its end is kept, to see whether a literal follows.
 */
const HOLD_LIMIT = 64 * 1024;
const TAIL = 32;

const BODY_LINE = /^\* \d+ FETCH \(((?:.* )?)BODY\[\](?:<\d+>)? ~?\{\d+\}\r?\n$/s;
const UID_ITEM = /(?:^|[ (])UID (\d+)(?= |\)|$)/;

/**
 * The size in a literal marker at the end of `line` (`{n}` or `~{n}`, CRLF or LF), else -1:
 * exactly what imapflow's ImapStream takes for one, so that both read the same responses. A
 * server never sends `{n+}` (LITERAL+ is the client's, RFC 7888): imapflow reads it as text,
 * and so must the splitter.
 */
export function literalAtEnd(line: Buffer): number {
  let end = line.length - 1;
  if (end < 0 || line[end] !== LF) return -1;
  end--;
  if (end >= 0 && line[end] === CR) end--;
  if (end < 0 || line[end] !== CLOSE) return -1;
  end--;
  let start = end;
  while (start >= 0 && line[start] >= 0x30 && line[start] <= 0x39) start--;
  if (start === end || start < 0 || line[start] !== OPEN) return -1;
  // Leading zeros are allowed (RFC 9051's number), as imapflow allows them.
  let first = start + 1;
  while (first < end && line[first] === ZERO) first++;
  // A size no server sends: imapflow fails the connection on it, whatever is taken here.
  if (end + 1 - first > 15) return -1;
  return Number(line.toString('latin1', first, end + 1));
}

type Response = 'none' | 'forward' | 'swallow';

export class ResponseSplitter {
  /** The first line's bytes from earlier chunks, not yet passed on. */
  private held: Buffer[] = [];
  private heldLength = 0;
  /** A line being passed on (or dropped) as it comes: its last bytes so far. */
  private passingTail: Buffer | undefined;
  /** Octets of the current literal still to come. */
  private literalLeft = 0;
  /** Where the current literal goes, when it is a claimed body. */
  private target: BodyTarget | undefined;
  /** What the current response is: the bytes after a literal belong to the same response. */
  private response: Response = 'none';
  private closed = false;
  /** A target that asked to stop in the last push(). */
  private full: BodyTarget | undefined;

  constructor(private readonly claim: Claim) {}

  /** Takes the next bytes from the server; returns the slices to pass on to imapflow, in order. */
  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    if (this.closed) return out;
    // chunk[run..] is to be passed on, up to where something is taken out.
    let run = 0;
    let pos = 0;
    const flush = (end: number) => {
      if (end > run) out.push(run === 0 && end === chunk.length ? chunk : chunk.subarray(run, end));
    };
    const skip = (from: number, to: number) => {
      flush(from);
      run = to;
    };
    while (pos < chunk.length) {
      if (this.literalLeft > 0) {
        const n = Math.min(this.literalLeft, chunk.length - pos);
        if (this.response === 'swallow') {
          skip(pos, pos + n);
          const target = this.target;
          const slice = pos === 0 && n === chunk.length ? chunk : chunk.subarray(pos, pos + n);
          if (target !== undefined && !target.push(slice)) this.full = target;
        }
        pos += n;
        this.literalLeft -= n;
        if (this.literalLeft === 0) this.endTarget();
        continue;
      }
      const lf = chunk.indexOf(LF, pos);
      const end = lf === -1 ? chunk.length : lf + 1;
      const part = chunk.subarray(pos, end);
      if (this.response === 'none' && this.passingTail === undefined) {
        // The first line of a response: held until it is whole, then decided on.
        if (lf === -1) {
          if (this.heldLength + part.length <= HOLD_LIMIT) {
            skip(pos, end);
            this.held.push(part);
            this.heldLength += part.length;
          } else {
            // Too long to be worth taking out: passed on from here, in order (pos is 0 when
            // parts are held: such a line started this chunk).
            out.push(...this.held);
            this.passingTail = lastBytes([...this.held, part]);
            this.held = [];
            this.heldLength = 0;
            this.response = 'forward';
          }
          pos = end;
          continue;
        }
        const line = this.held.length === 0 ? part : Buffer.concat([...this.held, part]);
        const literal = literalAtEnd(line);
        const target = literal >= 0 ? this.claimed(line, literal) : undefined;
        if (target !== undefined) {
          this.response = 'swallow';
          this.target = target;
          skip(pos, end);
        } else {
          this.response = 'forward';
          out.push(...this.held);
        }
        this.held = [];
        this.heldLength = 0;
        pos = end;
        this.afterLine(literal);
        continue;
      }
      // A later line of a response already decided on: passed on or dropped as it comes; only
      // its last bytes are kept, to see whether it announces a literal.
      if (this.response === 'swallow') skip(pos, end);
      pos = end;
      if (lf === -1) {
        this.passingTail = this.passingTail === undefined ? lastBytes([part]) : lastBytes([this.passingTail, part]);
        continue;
      }
      const line = this.passingTail === undefined ? part : lastBytes([this.passingTail, part]);
      this.passingTail = undefined;
      this.afterLine(literalAtEnd(line));
    }
    flush(chunk.length);
    return out;
  }

  /** A line of the current response ended, announcing a literal of this size or none (-1). */
  private afterLine(literal: number): void {
    if (literal > 0) {
      this.literalLeft = literal;
    } else if (literal === 0) {
      this.endTarget();
    } else {
      this.response = 'none';
      this.target = undefined;
    }
  }

  /** The target that asked, in the last push(), to stop reading until it drains; once. */
  takeFull(): BodyTarget | undefined {
    const full = this.full;
    this.full = undefined;
    return full;
  }

  /** The connection is gone: a body cut short fails, so that nobody takes it for whole. */
  close(err: Error): void {
    if (this.closed) return;
    this.closed = true;
    const target = this.target;
    this.target = undefined;
    target?.fail(err);
  }

  /** Whether the stream stands between two responses (nothing of a response seen so far). */
  get atBoundary(): boolean {
    return (
      this.response === 'none' && this.held.length === 0 && this.passingTail === undefined && this.literalLeft === 0
    );
  }

  private endTarget(): void {
    const target = this.target;
    this.target = undefined;
    target?.end();
  }

  private claimed(line: Buffer, size: number): BodyTarget | undefined {
    // Cheap tests first: most lines are no FETCH with a body at their end.
    if (line[0] !== STAR || line[1] !== SPACE) return undefined;
    const match = BODY_LINE.exec(line.toString('latin1'));
    if (match === null) return undefined;
    const uid = UID_ITEM.exec(match[1]);
    return this.claim(uid === null ? undefined : Number(uid[1]), size);
  }
}

/** The last TAIL bytes of these pieces, as one Buffer (a copy: small). */
function lastBytes(pieces: Buffer[]): Buffer {
  const out: Buffer[] = [];
  let need = TAIL;
  for (let i = pieces.length - 1; i >= 0 && need > 0; i--) {
    const piece = pieces[i];
    const take = Math.min(need, piece.length);
    out.unshift(piece.subarray(piece.length - take));
    need -= take;
  }
  return Buffer.concat(out);
}
