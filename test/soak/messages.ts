/**
 * The soak's messages: generated from (seed, user, index), so any of them can be made again
 * later without keeping it, and what POP3 must deliver for each: the store form (what Dovecot's
 * IMAP serves as BODY[]: a Maildir file with LF line ends is served with CRLF) with a CRLF added
 * when it lacks a final line end, as RETR sends it before the "." line (Dovecot's own POP3 does
 * the same); TOP, the header, the empty line and the first k body lines.
 *
 * The model of the store form is checked against the real store for every message the oracle
 * reads back (see oracle.ts), so a mismatch in the model shows as a soak fault, not as the proxy's.
 */
import { createHash } from 'node:crypto';
import { Rng } from './rng.js';

/** How the file is written to the Maildir. */
export type Style = 'lf' | 'crlf' | 'nofinal';

export interface MessageSpec {
  readonly user: string;
  /** 1-based, per user, in delivery order (Dovecot gives UIDs in that order, see oracle.ts). */
  readonly index: number;
  readonly messageId: string;
}

const CRLF = Buffer.from('\r\n', 'latin1');
const WORDS = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel', 'india', 'juliet', 'kilo', 'lima', 'caf\xe9', 'gr\xfc\xdfe', 'na\xefve', '=3D', 'From', '>From'];

export function messageIdOf(seed: number, user: string, index: number): string {
  return `<s${seed}.${user}.${index}@soak.test>`;
}

/** Sizes: mostly small, some read ahead whole (up to 256 KB), a few fetched in windows. */
function drawSize(rng: Rng): number {
  const kind = rng.weighted({ small: 70, medium: 22, large: 8 });
  if (kind === 'small') return rng.int(300, 20_000);
  if (kind === 'medium') return rng.int(20_000, 250_000);
  return rng.int(300_000, 1_200_000);
}

/** One body line (without its line end): words, and now and then a line POP3 must byte-stuff. */
function bodyLine(rng: Rng): string {
  const special = rng.next();
  if (special < 0.03) return '.';
  if (special < 0.06) return `.${rng.pick(WORDS)} leading dot`;
  if (special < 0.08) return '..';
  if (special < 0.1) return '';
  const length = rng.chance(0.05) ? rng.int(200, 990) : rng.int(10, 90);
  let line = '';
  while (line.length < length) line += `${rng.pick(WORDS)} `;
  return line.slice(0, length).trimEnd();
}

/** The file as delivered into the Maildir (latin1 bytes, so 8-bit bytes stay single octets). */
export function generate(seed: number, spec: MessageSpec): { raw: Buffer; style: Style } {
  const rng = Rng.fork(seed, `message:${spec.user}:${spec.index}`);
  const style = rng.weighted<Style>({ lf: 60, crlf: 35, nofinal: 5 });
  const size = drawSize(rng);
  const header = [
    `Message-ID: ${spec.messageId}`,
    'From: Soak Sender <sender@soak.test>',
    `To: ${spec.user}@soak.test`,
    `Subject: soak ${spec.user} #${spec.index} (${style}, about ${size} octets)`,
    'Date: Mon, 02 Mar 2026 10:00:00 +0000',
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=iso-8859-1',
    'Content-Transfer-Encoding: 8bit',
    '',
  ];
  const lines = [...header];
  let total = header.join('\n').length;
  while (total < size) {
    const line = bodyLine(rng);
    lines.push(line);
    total += line.length + 1;
  }
  const eol = style === 'crlf' ? '\r\n' : '\n';
  const text = lines.join(eol) + (style === 'nofinal' ? '' : eol);
  return { raw: Buffer.from(text, 'latin1'), style };
}

/** The store form: Dovecot's IMAP serves a Maildir file with LF line ends with CRLF. */
export function storeForm(raw: Buffer, style: Style): Buffer {
  if (style === 'crlf') return raw;
  return Buffer.from(raw.toString('latin1').replace(/\n/g, '\r\n'), 'latin1');
}

function withFinalCrlf(data: Buffer): Buffer {
  return data.length >= 2 && data[data.length - 2] === 0x0d && data[data.length - 1] === 0x0a ? data : Buffer.concat([data, CRLF]);
}

/** What RETR must deliver, un-stuffed, up to the "." line. */
export function expectedRetr(store: Buffer): Buffer {
  return withFinalCrlf(store);
}

/** What TOP n k must deliver, un-stuffed: header, empty line, k body lines (see src/pop3/top-filter.ts). */
export function expectedTop(store: Buffer, k: number): Buffer {
  const end = store.indexOf('\r\n\r\n', 0, 'latin1');
  if (end < 0) return withFinalCrlf(store);
  let from = end + 4;
  for (let left = k; left > 0; left--) {
    const lf = store.indexOf(0x0a, from);
    if (lf < 0) return withFinalCrlf(store);
    from = lf + 1;
  }
  return withFinalCrlf(store.subarray(0, from));
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The Message-ID in a message's header (of a RETR or TOP body), if it has one. */
export function headerMessageId(body: Buffer): string | undefined {
  const end = body.indexOf('\r\n\r\n', 0, 'latin1');
  const header = body.subarray(0, end < 0 ? Math.min(body.length, 4096) : end).toString('latin1');
  return /^Message-ID:[ \t]*(<[^>\r\n]+>)/im.exec(header)?.[1];
}

/** Where two buffers first differ (for a report), or -1. */
export function firstDifference(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}
