/**
 * Fills the benchmark's Maildirs by writing the message files directly: much faster than one
 * delivery at a time for tens of thousands of messages.
 *
 * The files are named the way Dovecot's own delivery names them, with the physical (S=) and
 * CRLF (W=) sizes, so that Dovecot need not read a message just to learn its size; and as mail
 * that arrived over time, one message per second. Names that all share one second and differ
 * only in a counter make Dovecot's Maildir code several times slower on a large mailbox (300 ms
 * instead of 70 ms to open 20,000 messages): a cost that real mailboxes do not have and that
 * would dwarf what the benchmark compares.
 */
import { chown, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Dovecot } from '../test/support/dovecot.js';

const WRITE_CONCURRENCY = 32;

/** Size of the message with every bare LF counted as CRLF: what POP3 and RFC822.SIZE report. */
export function crlfSize(data: Buffer): number {
  let bareLf = 0;
  for (let i = data.indexOf(0x0a); i >= 0; i = data.indexOf(0x0a, i + 1)) {
    if (i === 0 || data[i - 1] !== 0x0d) bareLf += 1;
  }
  return data.length + bareLf;
}

/** Message i of count: one a second, the last a minute ago, so all are in the past and in order. */
function fileName(i: number, count: number, nowSeconds: number, data: Buffer): string {
  const seconds = nowSeconds - 60 - count + i;
  const micros = (i * 7919) % 1_000_000;
  return `${seconds}.M${micros}P${process.pid}.bench,S=${data.length},W=${crlfSize(data)}`;
}

/** Writes `count` messages, make(0) .. make(count - 1), into the user's Maildir/new. */
export async function fillMaildir(d: Dovecot, user: string, count: number, make: (i: number) => Buffer): Promise<void> {
  const newDir = join(d.maildir(user), 'new');
  // The mail processes own the Maildir; the files must belong to them too.
  const owner = await stat(d.maildir(user));
  const nowSeconds = Math.floor(Date.now() / 1000);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      const data = make(i);
      const path = join(newDir, fileName(i, count, nowSeconds, data));
      await writeFile(path, data, { mode: 0o600 });
      if (owner.uid !== process.getuid?.()) await chown(path, owner.uid, owner.gid);
    }
  };
  await Promise.all(Array.from({ length: Math.min(WRITE_CONCURRENCY, count) }, worker));
}
