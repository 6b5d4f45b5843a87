/**
 * Byte-stuffs a message for a POP3 multi-line reply (RFC 1939 section 3): a '.' that begins a
 * line is doubled, and the reply ends with CRLF.CRLF. Bytes are otherwise passed through
 * untouched; a line starts after LF only, never after a bare CR.
 *
 * The last chunk is held back so that the terminator leaves in the same write as the last
 * data: some clients only look for the terminator at the end of a TCP segment.
 */
const LF = 0x0a;
const DOT = 0x2e;
const TERMINATOR = Buffer.from('.\r\n');
const CRLF_TERMINATOR = Buffer.from('\r\n.\r\n');
const LINE_START_DOT = Buffer.from('\n.');

export class DotStuffer {
  private atLineStart = true;
  private held: Buffer | undefined;
  private endsWithLf = true;

  /** Takes the next chunk of the message; returns stuffed bytes that are ready to send. */
  push(chunk: Buffer): Buffer | undefined {
    if (chunk.length === 0) return undefined;
    const ready = this.held;
    this.held = this.stuff(chunk);
    this.endsWithLf = chunk[chunk.length - 1] === LF;
    return ready;
  }

  /**
   * The held-back data and the terminating line. A message that does not end with a line end
   * gets CRLF first, as Dovecot's POP3 does, so that the '.' stands on a line of its own.
   */
  finish(): Buffer {
    const terminator = this.endsWithLf ? TERMINATOR : CRLF_TERMINATOR;
    const out = this.held ? Buffer.concat([this.held, terminator]) : terminator;
    this.held = undefined;
    return out;
  }

  private stuff(chunk: Buffer): Buffer {
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
    if (pieces.length === 0) return chunk;
    pieces.push(chunk.subarray(from));
    return Buffer.concat(pieces);
  }
}
