/**
 * Byte-stuffs a message for a POP3 multi-line reply (RFC 1939 section 3) or SMTP DATA (RFC 5321
 * section 4.5.2, the same rule): a '.' that begins a line is doubled, and the message ends with
 * CRLF.CRLF. Bytes are otherwise passed through
 * untouched; a line starts after LF only, never after a bare CR.
 *
 * Everything but the last two bytes is passed on at once, so the client sees data as soon as
 * the backend sends it; those two bytes leave with the terminator, so that "CRLF.CRLF" is never
 * split across writes: some clients only look for it at the end of what they read.
 */
const LF = 0x0a;
const DOT = 0x2e;
const TERMINATOR = Buffer.from('.\r\n');
const CRLF_TERMINATOR = Buffer.from('\r\n.\r\n');
const LINE_START_DOT = Buffer.from('\n.');
const HELD_TAIL = 2;

export class DotStuffer {
  private atLineStart = true;
  private held: Buffer | undefined;
  private endsWithLf = true;

  /**
   * Takes the next chunk of the message; returns the stuffed bytes that are ready to send, as
   * pieces to be written together (joining them would copy every message once more).
   */
  push(chunk: Buffer): Buffer[] {
    if (chunk.length === 0) return [];
    const pieces = this.stuff(chunk);
    if (this.held) pieces.unshift(this.held);
    this.endsWithLf = chunk[chunk.length - 1] === LF;
    this.held = this.holdTail(pieces);
    return pieces;
  }

  /**
   * The held-back bytes and the terminating line. A message that does not end with a line end
   * gets CRLF first, as Dovecot's POP3 does, so that the '.' stands on a line of its own.
   */
  finish(): Buffer[] {
    const terminator = this.endsWithLf ? TERMINATOR : CRLF_TERMINATOR;
    const out = this.held ? [this.held, terminator] : [terminator];
    this.held = undefined;
    return out;
  }

  /** Cuts the last HELD_TAIL bytes off the pieces (in place) and returns them as a copy. */
  private holdTail(pieces: Buffer[]): Buffer {
    const tail: Buffer[] = [];
    let missing = HELD_TAIL;
    while (missing > 0 && pieces.length > 0) {
      const last = pieces.pop()!;
      const cut = Math.max(0, last.length - missing);
      tail.unshift(last.subarray(cut));
      missing -= last.length - cut;
      if (cut > 0) pieces.push(last.subarray(0, cut));
    }
    // A copy, so that the small tail does not pin a large chunk in memory.
    return Buffer.concat(tail);
  }

  /** The chunk with the dots that begin lines doubled, as pieces to be joined. */
  private stuff(chunk: Buffer): Buffer[] {
    const pieces: Buffer[] = [];
    let from = 0;
    if (this.atLineStart && chunk[0] === DOT) {
      pieces.push(TERMINATOR.subarray(0, 1));
    }
    let at = chunk.indexOf(LINE_START_DOT, 0);
    while (at !== -1) {
      // Split after the LF and repeat the '.' that follows it.
      pieces.push(chunk.subarray(from, at + 2));
      from = at + 1;
      at = chunk.indexOf(LINE_START_DOT, at + 2);
    }
    this.atLineStart = chunk[chunk.length - 1] === LF;
    pieces.push(chunk.subarray(from));
    return pieces;
  }
}
