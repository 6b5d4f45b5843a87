/**
 * Splits the client's byte stream into command lines, never holding more than `maxLine` bytes
 * of one line. A line ends at LF; a CR before it is dropped. A bare CR is ordinary data.
 * A line that outgrows the limit is reported once as `overlong` and the rest of it, up to its
 * LF, is thrown away unread, so a client that never sends a line end cannot grow our memory.
 */
export type LineEvent = { kind: 'line'; line: Buffer } | { kind: 'overlong' };

const LF = 0x0a;
const CR = 0x0d;

export class LineReader {
  private partial: Buffer[] = [];
  private partialLength = 0;
  private discarding = false;

  constructor(private readonly maxLine: number) {}

  /** Forgets everything buffered: used when the byte stream changes meaning (STLS). */
  reset(): void {
    this.partial = [];
    this.partialLength = 0;
    this.discarding = false;
  }

  push(chunk: Buffer): LineEvent[] {
    const events: LineEvent[] = [];
    let start = 0;
    while (start < chunk.length) {
      const lf = chunk.indexOf(LF, start);
      const end = lf === -1 ? chunk.length : lf;
      this.take(chunk.subarray(start, end), events);
      if (lf === -1) break;
      this.endLine(events);
      start = lf + 1;
    }
    return events;
  }

  private take(piece: Buffer, events: LineEvent[]): void {
    if (this.discarding || piece.length === 0) return;
    // The limit counts the CRLF too, as RFC 2449 does; the CR is already in `piece`, the LF is not.
    if (this.partialLength + piece.length + 1 > this.maxLine) {
      this.partial = [];
      this.partialLength = 0;
      this.discarding = true;
      events.push({ kind: 'overlong' });
      return;
    }
    this.partial.push(piece);
    this.partialLength += piece.length;
  }

  private endLine(events: LineEvent[]): void {
    if (this.discarding) {
      this.discarding = false;
      return;
    }
    let line = this.partial.length === 1 ? this.partial[0] : Buffer.concat(this.partial, this.partialLength);
    if (line.length > 0 && line[line.length - 1] === CR) line = line.subarray(0, line.length - 1);
    this.partial = [];
    this.partialLength = 0;
    events.push({ kind: 'line', line });
  }
}
