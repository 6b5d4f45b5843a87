/**
 * POP3 reply lines. Response codes are those of RFC 2449 and RFC 3206; a reply line is kept
 * within the 512 octets RFC 1939 allows, CRLF included.
 */
export type ResponseCode = 'AUTH' | 'SYS/TEMP' | 'SYS/PERM' | 'IN-USE' | 'LOGIN-DELAY';

const MAX_LINE = 512;

export function okLine(text: string): Buffer {
  return line(text ? `+OK ${text}` : '+OK');
}

export function errLine(text: string, code?: ResponseCode): Buffer {
  return line(code ? `-ERR [${code}] ${text}` : `-ERR ${text}`);
}

/** A complete multi-line reply whose lines are already free of CR and LF. */
export function multiLine(status: string, lines: readonly string[]): Buffer {
  const body = lines.map((l) => (l.startsWith('.') ? `.${l}\r\n` : `${l}\r\n`)).join('');
  return Buffer.concat([okLine(status), Buffer.from(`${body}.\r\n`, 'latin1')]);
}

function line(text: string): Buffer {
  // Text that might reach us from a backend must not break the line structure.
  const clean = text.replace(/[\r\n\0]/g, ' ');
  const bytes = Buffer.from(clean, 'utf8');
  const limited = bytes.length > MAX_LINE - 2 ? bytes.subarray(0, MAX_LINE - 2) : bytes;
  return Buffer.concat([limited, Buffer.from('\r\n')]);
}
