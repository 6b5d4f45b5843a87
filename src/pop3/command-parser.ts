/**
 * Parses one POP3 command line (RFC 1939: a keyword, then arguments separated by spaces).
 * Keywords are case-insensitive. The raw remainder after the keyword is kept for commands
 * whose single argument may itself contain spaces (PASS).
 */
export interface Command {
  /** Upper-cased keyword. */
  readonly verb: string;
  /** Arguments split on spaces. */
  readonly args: readonly string[];
  /** Everything after the keyword and one space, decoded as UTF-8. */
  readonly rest: string;
}

const KEYWORD = /^[A-Za-z]{1,8}$/;

export function parseCommand(line: Buffer): Command | undefined {
  const text = line.toString('utf8');
  const space = text.indexOf(' ');
  const keyword = space === -1 ? text : text.slice(0, space);
  if (!KEYWORD.test(keyword)) return undefined;
  const rest = space === -1 ? '' : text.slice(space + 1);
  const args = rest.split(' ').filter((a) => a.length > 0);
  return { verb: keyword.toUpperCase(), args, rest };
}

/** A message number: a plain positive decimal, at most `count`. */
export function parseMessageNumber(arg: string, count: number): number | undefined {
  if (!/^[1-9][0-9]{0,9}$/.test(arg)) return undefined;
  const n = Number(arg);
  return n <= count ? n : undefined;
}

/** A line count for TOP: a plain non-negative decimal; huge values mean "all of it". */
export function parseLineCount(arg: string): number | undefined {
  if (!/^[0-9]{1,20}$/.test(arg)) return undefined;
  return Math.min(Number(arg), Number.MAX_SAFE_INTEGER);
}
