/**
 * UIDL values from UIDVALIDITY and UID, with a template in Dovecot's pop3_uidl_format syntax
 * so a site moving from Dovecot's own POP3 keeps its clients' UIDL lists. `%u` is the UID,
 * `%v` the UIDVALIDITY, `%%` a percent sign; between '%' and the letter an optional width with
 * zero padding and `X` for hex: `%08Xu` is the UID in hex, zero-padded to 8 digits. Dovecot
 * prints hex in lower case, and so do we, or the UIDLs would differ.
 */
export type UidlFormatter = (uid: number, uidValidity: number) => string;

export const DEFAULT_UIDL_FORMAT = '%08Xu%08Xv';

const TOKEN = /%(?:(%)|(0?)([1-9][0-9]?)?(X?)([uv]))/g;

export function compileUidlFormat(template: string): UidlFormatter {
  const parts: Array<string | ((uid: number, uidValidity: number) => string)> = [];
  let last = 0;
  const seen = new Set<string>();
  for (const match of template.matchAll(TOKEN)) {
    parts.push(template.slice(last, match.index));
    last = match.index + match[0].length;
    const [, percent, zero, width, radix, field] = match;
    if (percent) {
      parts.push('%');
      continue;
    }
    seen.add(field);
    parts.push(numberFormatter(field as 'u' | 'v', radix ?? '', Number(width ?? 0), zero === '0'));
  }
  parts.push(template.slice(last));
  if (template.replace(TOKEN, '').includes('%')) {
    throw new Error(`unknown % sequence in UIDL format "${template}" (use %u, %v, %%, e.g. %08Xu%08Xv)`);
  }
  if (!seen.has('u') || !seen.has('v')) {
    throw new Error(`UIDL format "${template}" must contain both %u (UID) and %v (UIDVALIDITY)`);
  }
  const format: UidlFormatter = (uid, uidValidity) =>
    parts.map((p) => (typeof p === 'string' ? p : p(uid, uidValidity))).join('');
  // RFC 1939: 1 to 70 characters in 0x21..0x7E, checked on the shortest and longest values.
  const samples = [format(1, 1), format(0xffffffff, 0xffffffff)];
  if (samples.some((s) => s.length > 70 || !/^[\x21-\x7e]+$/.test(s))) {
    throw new Error(`UIDL format "${template}" yields values that are not 1-70 printable characters without spaces`);
  }
  return format;
}

function numberFormatter(field: 'u' | 'v', radix: string, width: number, zeroPad: boolean) {
  const base = radix === 'X' ? 16 : 10;
  return (uid: number, uidValidity: number): string =>
    (field === 'u' ? uid : uidValidity).toString(base).padStart(width, zeroPad ? '0' : ' ');
}
