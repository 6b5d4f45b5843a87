/**
 * With every hook into imapflow's internals off (as when the installed imapflow does not fit
 * them), the backend still logs in, lists, reads every message byte for byte (small ones and a
 * large one in windows) and removes exactly what it is told: imapflow's own way, against the
 * real Dovecot, compared with what imapflow itself fetches.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Readable } from 'node:stream';
import winston from 'winston';
import type { FastPaths } from '../src/imap/fast-paths.js';
import { ImapMaildropProvider, type ImapBackendOptions } from '../src/imap/imap-maildrop.js';
import { compileUidlFormat } from '../src/imap/uidl-format.js';
import { corpus, mimeMessage } from './support/corpus.js';
import { emptyMailbox, startDovecot, withMailbox, type Dovecot } from './support/dovecot.js';

const TEST = { timeout: 120_000 };
const alice = { name: 'alice', password: 'alice-secret' };
const OFF: FastPaths = { 'literal-tap': false, 'login-diet': false, 'busy-check': false };
let dovecot: Dovecot;

before(async () => {
  dovecot = await startDovecot();
  await emptyMailbox(dovecot, alice);
  for (const m of corpus()) await dovecot.deliver('alice', m.data);
  // Over the read-ahead's limit: read in 64 KiB windows.
  await dovecot.deliver('alice', mimeMessage(1, 700_000));
}, { timeout: 60_000 });

after(async () => {
  await dovecot?.stop();
}, { timeout: 60_000 });

function provider(fastPaths: FastPaths): ImapMaildropProvider {
  const options: ImapBackendOptions = {
    host: '127.0.0.1',
    port: dovecot.imapPort,
    tls: 'none',
    verifyTls: true,
    ca: undefined,
    mailbox: 'INBOX',
    servername: undefined,
    timeoutMs: 20_000,
    connectTimeoutMs: 5_000,
    uidl: compileUidlFormat('%08Xu%08Xv'),
    chunkSize: 64 * 1024,
    cacheMessages: 0,
    maxMessages: undefined,
    markSeen: false,
    deleteMode: { kind: 'expunge' },
    flagOnDele: false,
    fastPaths,
  };
  return new ImapMaildropProvider(options, winston.createLogger({ silent: true }));
}

async function drain(stream: Readable): Promise<Buffer> {
  const got: Buffer[] = [];
  for await (const chunk of stream) got.push(chunk as Buffer);
  return Buffer.concat(got);
}

test('every fast path off: login, listing, every message byte for byte, and QUIT removes exactly the one deleted', TEST, async () => {
  const stored = await withMailbox(dovecot, alice, async (imap) => {
    const all = await imap.fetchAll('1:*', { uid: true, size: true, source: true });
    return all.sort((a, b) => a.uid - b.uid).map((m) => ({ uid: m.uid, size: m.size!, source: m.source! }));
  });
  const maildrop = await provider(OFF).authenticate({ user: alice.name, password: alice.password }, { address: '127.0.0.1', port: 1 });
  const entries = await maildrop.open();
  assert.deepEqual(entries.map((e) => e.size), stored.map((m) => m.size));
  // In order (the read-ahead's walk), then one again out of order.
  for (let i = 0; i < entries.length; i++) assert.ok((await drain(await maildrop.read(i))).equals(stored[i]!.source), `message ${i + 1}`);
  assert.ok((await drain(await maildrop.read(0))).equals(stored[0]!.source));
  await maildrop.markDeleted(1);
  await maildrop.commit([1]);
  const left = await withMailbox(dovecot, alice, async (imap) => (await imap.fetchAll('1:*', { uid: true, flags: true })).map((m) => m.uid));
  assert.deepEqual(left.sort((a, b) => a - b), stored.filter((_, i) => i !== 1).map((m) => m.uid));
});
