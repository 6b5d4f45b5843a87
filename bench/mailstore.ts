/**
 * Fills the benchmark's Maildirs by writing the message files directly: much faster than one
 * delivery at a time for tens of thousands of messages. The files are named the way Dovecot's
 * own delivery names them, with the physical (S=) and CRLF (W=) sizes, so that Dovecot need not
 * read a message just to learn its size.
 */
import { chown, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Dovecot } from '../test/support/dovecot.js';

const WRITE_CONCURRENCY = 32;
// One timestamp for all files; the micro-second field numbers them, so names stay unique.
const BASE_SECONDS = Math.floor(Date.now() / 1000) - 60;

/** Size of the message with every bare LF counted as CRLF: what POP3 and RFC822.SIZE report. */
export function crlfSize(data: Buffer): number {
  let bareLf = 0;
  for (let i = data.indexOf(0x0a); i >= 0; i = data.indexOf(0x0a, i + 1)) {
    if (i === 0 || data[i - 1] !== 0x0d) bareLf += 1;
  }
  return data.length + bareLf;
}

function fileName(i: number, data: Buffer): string {
  return `${BASE_SECONDS}.M${100_000 + i}P${process.pid}Q${i}.bench,S=${data.length},W=${crlfSize(data)}`;
}

/** Writes `count` messages, make(0) .. make(count - 1), into the user's Maildir/new. */
export async function fillMaildir(d: Dovecot, user: string, count: number, make: (i: number) => Buffer): Promise<void> {
  const newDir = join(d.maildir(user), 'new');
  // The mail processes own the Maildir; the files must belong to them too.
  const owner = await stat(d.maildir(user));
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      const data = make(i);
      const path = join(newDir, fileName(i, data));
      await writeFile(path, data, { mode: 0o600 });
      if (owner.uid !== process.getuid?.()) await chown(path, owner.uid, owner.gid);
    }
  };
  await Promise.all(Array.from({ length: Math.min(WRITE_CONCURRENCY, count) }, worker));
}
