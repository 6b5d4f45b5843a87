/**
 * Cuts a message down to what TOP n k returns (RFC 1939): the header, the empty line that ends
 * it, and the first k lines of the body. A message without an empty line is all header and is
 * passed whole. Works on chunks as they arrive, so only as much is read as is needed.
 */
const LF = 0x0a;
const CR = 0x0d;

export class TopFilter {
  private inHeader = true;
  /** Bytes of the current header line seen so far, and whether they are a lone CR. */
  private lineLength = 0;
  private lineIsCr = false;
  private linesLeft: number;
  private satisfied = false;

  constructor(bodyLines: number) {
    this.linesLeft = bodyLines;
  }

  /** True once everything TOP needs has been passed; the rest of the message is not needed. */
  get done(): boolean {
    return this.satisfied;
  }

  /** Returns the part of `chunk` that belongs to the reply. */
  push(chunk: Buffer): Buffer {
    if (this.satisfied) return chunk.subarray(0, 0);
    let from = 0;
    if (this.inHeader) {
      const bodyStart = this.findBodyStart(chunk);
      if (bodyStart === -1) return chunk;
      this.inHeader = false;
      from = bodyStart;
    }
    while (this.linesLeft > 0) {
      const lf = chunk.indexOf(LF, from);
      if (lf === -1) return chunk;
      this.linesLeft--;
      from = lf + 1;
    }
    this.satisfied = true;
    return chunk.subarray(0, from);
  }

  /** Offset just past the LF of the empty line that ends the header, or -1 if not in `chunk`. */
  private findBodyStart(chunk: Buffer): number {
    let start = 0;
    for (;;) {
      const lf = chunk.indexOf(LF, start);
      if (lf === -1) {
        this.extendLine(chunk, start);
        return -1;
      }
      const length = this.lineLength + (lf - start);
      const lineIsCr = lf > start ? lf - start === 1 && chunk[start] === CR : this.lineIsCr;
      this.lineLength = 0;
      this.lineIsCr = false;
      if (length === 0 || (length === 1 && lineIsCr)) return lf + 1;
      start = lf + 1;
    }
  }

  private extendLine(chunk: Buffer, start: number): void {
    const tail = chunk.length - start;
    if (tail === 0) return;
    this.lineIsCr = this.lineLength === 0 && tail === 1 && chunk[start] === CR;
    this.lineLength += tail;
  }
}
