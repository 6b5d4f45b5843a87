/**
 * SMTP replies as the relay sends them (RFC 5321 section 4.2): a three-digit code, one or more
 * lines, and, where the relay speaks ENHANCEDSTATUSCODES (RFC 2034, RFC 3463), an enhanced
 * status code at the start of the text. Read with a bounded buffer: a relay that sends an
 * endless line is a broken relay, not a reason to hold memory.
 */

export interface RelayReply {
  readonly code: number;
  /** The enhanced status code (class.subject.detail), if the relay gave one. */
  readonly enhanced: string | undefined;
  /** The text of each line, without code, separator or enhanced code. */
  readonly lines: readonly string[];
}

/** A reply line longer than this (RFC 5321 allows 512) means the relay is not speaking SMTP. */
const MAX_REPLY_LINE = 4096;
/** Lines in one reply: EHLO lists a few dozen at most. */
const MAX_REPLY_LINES = 200;

const LINE = /^([2-5][0-9][0-9])([ -])(.*)$/;
const ENHANCED = /^([245]\.\d{1,3}\.\d{1,3})(?: |$)/;

export class ReplyError extends Error {}

/** Collects reply lines from the relay's bytes; yields each complete reply. */
export class ReplyReader {
  private partial = '';
  private lines: string[] = [];
  private code: number | undefined;

  /** Feeds bytes; returns the replies they completed. Throws ReplyError on garbage. */
  push(chunk: Buffer): RelayReply[] {
    this.partial += chunk.toString('latin1');
    const replies: RelayReply[] = [];
    for (let end = this.partial.indexOf('\r\n'); end !== -1; end = this.partial.indexOf('\r\n')) {
      const line = this.partial.slice(0, end);
      this.partial = this.partial.slice(end + 2);
      const reply = this.line(line);
      if (reply !== undefined) replies.push(reply);
    }
    if (this.partial.length > MAX_REPLY_LINE) throw new ReplyError('the relay sent a reply line over 4096 octets');
    return replies;
  }

  private line(line: string): RelayReply | undefined {
    const match = LINE.exec(line);
    if (match === null) throw new ReplyError(`the relay sent a line that is no SMTP reply: ${line.slice(0, 80)}`);
    const code = Number(match[1]);
    if (this.code !== undefined && code !== this.code)
      throw new ReplyError('the relay changed the reply code within one reply');
    this.code = code;
    this.lines.push(match[3]);
    if (this.lines.length > MAX_REPLY_LINES) throw new ReplyError('the relay sent a reply of over 200 lines');
    if (match[2] === '-') return undefined;
    const lines = this.lines;
    this.lines = [];
    this.code = undefined;
    return withEnhanced(code, lines);
  }
}

/** Takes the enhanced code off the lines when the first carries one of the reply's class. */
function withEnhanced(code: number, lines: string[]): RelayReply {
  const found = ENHANCED.exec(lines[0]);
  if (found === null || found[1][0] !== String(code)[0]) return { code, enhanced: undefined, lines };
  const enhanced = found[1];
  const strip = (line: string) => (line.startsWith(enhanced) ? line.slice(enhanced.length).trimStart() : line);
  return { code, enhanced, lines: lines.map(strip) };
}

/** The reply as one line of text, for a log line. */
export function replyText(reply: RelayReply): string {
  return `${reply.code}${reply.enhanced ? ` ${reply.enhanced}` : ''} ${reply.lines.join(' / ')}`.trim();
}
