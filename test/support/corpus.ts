/**
 * Test messages that stress byte-exactness, as Maildir stores them (LF line ends unless a case
 * says otherwise). Every message has a unique Message-ID and a Subject naming its case.
 */

export interface CorpusMessage {
  name: string;
  data: Buffer;
}

/** Deterministic pseudo-random bytes (mulberry32). */
export function pseudoRandomBytes(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length);
  let state = seed >>> 0;
  let i = 0;
  while (i < length) {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    t = (t ^ (t >>> 14)) >>> 0;
    for (let k = 0; k < 4 && i < length; k++, i++) out[i] = (t >>> (8 * k)) & 0xff;
  }
  return out;
}

/** Base64 in lines of 76 characters, each ending with LF. */
export function base64Lines(data: Buffer): string {
  const b64 = data.toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 76) lines.push(b64.slice(i, i + 76));
  return lines.length ? `${lines.join('\n')}\n` : '';
}

function headers(name: string, extra: string[] = []): string {
  return [
    'From: Corpus Sender <sender@corpus.test>',
    'To: Alice <alice@corpus.test>',
    'Date: Mon, 01 Jan 2024 12:00:00 +0000',
    `Subject: corpus ${name}`,
    `Message-ID: <${name}@corpus.test>`,
    ...extra,
  ].join('\n') + '\n';
}

const latin1 = (s: string) => Buffer.from(s, 'latin1');
const utf8 = (s: string) => Buffer.from(s, 'utf8');

let cached: CorpusMessage[] | undefined;

function build(): CorpusMessage[] {
  const messages: CorpusMessage[] = [];
  const add = (name: string, data: Buffer) => messages.push({ name, data });

  add('plain-ascii', latin1(
    headers('plain-ascii') +
      '\n' +
      'Hello Alice,\n' +
      '\n' +
      'This is a plain ASCII message.\n' +
      'It has a few lines, an indented one,\n' +
      '    like this,\n' +
      'and trailing spaces   \n' +
      '-- \n' +
      'Sender\n',
  ));

  add('utf8-8bit', utf8(
    headers('utf8-8bit', ['MIME-Version: 1.0', 'Content-Type: text/plain; charset=utf-8', 'Content-Transfer-Encoding: 8bit', 'X-Raw-Header: grüße ☃']) +
      '\n' +
      'Grüße aus Köln — “quotes”, ½, €.\n' +
      'Ελληνικά, русский, 日本語, emoji 📬.\n' +
      'Zero-width joiner: 👩‍💻, BOM in a line: \ufeffend\n',
  ));

  add('latin1-8bit', Buffer.concat([
    latin1(headers('latin1-8bit', ['MIME-Version: 1.0', 'Content-Type: text/plain; charset=iso-8859-1', 'Content-Transfer-Encoding: 8bit'])),
    latin1('\n'),
    Buffer.from([0x43, 0x61, 0x66, 0xe9, 0x20, 0x63, 0x72, 0xe8, 0x6d, 0x65, 0x20, 0xe0, 0x20, 0x6c, 0x61, 0x20, 0x63, 0x61, 0x72, 0x74, 0x65, 0x0a]), // "Café crème à la carte"
    Buffer.from([0xa0, 0xa9, 0xb1, 0xbf, 0xc0, 0xd0, 0xdf, 0xf0, 0xff, 0x0a]),
    Buffer.from([0x80, 0x81, 0x9f, 0x0a]),
  ]));

  add('dot-lines', latin1(
    headers('dot-lines') +
      '\n' +
      '.starts with a dot\n' +
      '.\n' +
      '..\n' +
      '...\n' +
      '. space after a dot\n' +
      'a line between\n' +
      '.\n' +
      '.\n' +
      '..two dots\n' +
      'ends with a dot.\n' +
      '.\n',
  ));

  add('lone-cr', latin1(
    headers('lone-cr') +
      '\n' +
      'a\rb\n' +
      '.\r\n' +
      '.\rx\n' +
      'trailing cr\r\r\n' +
      '\r\n' +
      '\r.\n' +
      'end\r',
  ));

  add('long-line', latin1(
    headers('long-line') +
      '\n' +
      'before\n' +
      Array.from({ length: 2000 }, (_, i) => String.fromCharCode(0x21 + (i % 94))).join('') +
      '\n' +
      'after\n' +
      '.' + 'x'.repeat(1999) + '\n',
  ));

  add('empty-body', latin1(headers('empty-body') + '\n'));

  add('no-final-newline', latin1(headers('no-final-newline') + '\nfirst line\nlast line without a newline'));

  add('dot-last-no-newline', latin1(headers('dot-last-no-newline') + '\nthe last line is a lone dot\n.'));

  add('crlf-stored', latin1(
    (headers('crlf-stored') + '\nstored with CRLF line ends\n.dot line\n\nlast\n').replace(/\n/g, '\r\n'),
  ));

  add('multipart-3mb', mimeBody('multipart-3mb', pseudoRandomBytes(2_250_000, 0x3b3b3b), 'random.bin'));

  add('headers-only', latin1(headers('headers-only', ['X-Note: this message has no body separator'])));

  return messages;
}

function mimeBody(name: string, attachment: Buffer, filename: string): Buffer {
  const boundary = `=_boundary_${name}_0f3c`;
  return latin1(
    headers(name, ['MIME-Version: 1.0', `Content-Type: multipart/mixed; boundary="${boundary}"`]) +
      '\n' +
      'This is a multi-part message in MIME format.\n' +
      '\n' +
      `--${boundary}\n` +
      'Content-Type: text/plain; charset=us-ascii\n' +
      '\n' +
      `The attachment holds ${attachment.length} pseudo-random bytes.\n` +
      '\n' +
      `--${boundary}\n` +
      `Content-Type: application/octet-stream; name="${filename}"\n` +
      'Content-Transfer-Encoding: base64\n' +
      `Content-Disposition: attachment; filename="${filename}"\n` +
      '\n' +
      base64Lines(attachment) +
      '\n' +
      `--${boundary}--\n`,
  );
}

/**
 * The corpus, in a fixed order. The messages are built once per process; the array is a fresh
 * copy on every call, the Buffers are shared and must not be modified.
 */
export function corpus(): CorpusMessage[] {
  cached ??= build();
  return cached.map((m) => ({ name: m.name, data: m.data }));
}

/**
 * A deterministic MIME message number `i` with a base64 attachment, about `approxBytes` long in
 * total (LF line ends). The same arguments always give the same bytes.
 */
export function mimeMessage(i: number, approxBytes: number): Buffer {
  const name = `bulk-${i}`;
  const overhead = mimeBody(name, Buffer.alloc(0), `bulk-${i}.bin`).length;
  // 57 bytes become one 76-character base64 line plus its LF.
  const raw = Math.max(0, Math.floor(((approxBytes - overhead) * 57) / 77));
  return mimeBody(name, pseudoRandomBytes(raw, 0x9e3779b9 ^ i), `bulk-${i}.bin`);
}
