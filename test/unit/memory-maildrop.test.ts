/**
 * The memory store keeps the Maildrop contract the fast POP3 tests rely on: credentials
 * checked, a snapshot at open(), marks that leave the store alone until commit(), commit()
 * removing exactly the given messages, streams that say when they have arrived, and the
 * injected failures doing what they say.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isMaildropError } from '../../src/maildrop/errors.js';
import type { MessageStream } from '../../src/maildrop/maildrop.js';
import { MemoryStore } from '../support/memory-maildrop.js';

const client = { address: '127.0.0.1', port: 1 };

function store(options = {}): MemoryStore {
  const s = new MemoryStore(options).addUser('alice', 'pw', ['tok']);
  for (let i = 1; i <= 4; i++) s.deliver('alice', `Subject: ${i}\n\nbody ${i}\n`);
  return s;
}

async function readAll(stream: MessageStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

test('authenticate: the password or a token; anything else is a credentials error', { timeout: 30_000 }, async () => {
  const s = store();
  assert.equal((await s.authenticate({ user: 'alice', password: 'pw' }, client)).mailboxKey, 'memory:alice');
  await s.authenticate({ user: 'alice', accessToken: 'tok' }, client);
  for (const credentials of [{ user: 'alice', password: 'PW' }, { user: 'bob', password: 'pw' }, { user: 'alice', accessToken: 'pw' }]) {
    await assert.rejects(s.authenticate(credentials, client), (err) => isMaildropError(err) && err.kind === 'credentials');
  }
});

test('open() takes a snapshot in CRLF form; later deliveries are not in it', { timeout: 30_000 }, async () => {
  const s = store();
  const m = await s.authenticate({ user: 'alice', password: 'pw' }, client);
  const entries = await m.open();
  s.deliver('alice', 'late\n');
  assert.equal(entries.length, 4);
  assert.equal(new Set(entries.map((e) => e.uidl)).size, 4);
  const first = await readAll(await m.read(0));
  assert.equal(first.toString(), 'Subject: 1\r\n\r\nbody 1\r\n');
  assert.equal(entries[0]!.size, first.length);
});

test('marks leave the store alone; commit removes exactly the given indexes; abandon after it is a no-op', { timeout: 30_000 }, async () => {
  const s = store();
  const uidls = s.uidls('alice');
  const m = await s.authenticate({ user: 'alice', password: 'pw' }, client);
  await m.open();
  await m.markDeleted(0);
  await m.markDeleted(2);
  await m.unmarkDeleted([0]);
  assert.equal(s.messages('alice').length, 4, 'nothing removed before commit');
  await m.commit([1, 2]);
  assert.deepEqual(s.uidls('alice'), [uidls[0], uidls[3]]);
  await m.abandon();
  await assert.rejects(m.read(0), /committed/);
});

test('abandon removes nothing and forgets the marks; calls outside the snapshot throw', { timeout: 30_000 }, async () => {
  const s = store();
  const m = await s.authenticate({ user: 'alice', password: 'pw' }, client);
  await assert.rejects(m.read(0), /before|authenticated/);
  await m.open();
  await m.markDeleted(1);
  await assert.rejects(m.markDeleted(4), /outside the snapshot/);
  await m.abandon();
  await m.abandon();
  assert.equal(s.messages('alice').length, 4);
});

test('streams: chunked, trickled, arrived only once the last chunk is handed over', { timeout: 30_000 }, async () => {
  const s = store({ chunkSize: 3, trickle: true });
  const m = await s.authenticate({ user: 'alice', password: 'pw' }, client);
  await m.open();
  const stream = await m.read(1);
  assert.equal(stream.arrived, false);
  const chunks: Buffer[] = [];
  for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
  assert.ok(chunks.length > 3 && chunks.every((c) => c.length <= 3));
  assert.equal(stream.arrived, true);
  assert.equal(Buffer.concat(chunks).toString(), 'Subject: 2\r\n\r\nbody 2\r\n');
});

test('hooks: a read failing part way, a read rejected, a removed message, a failing commit, a slow authenticate', { timeout: 30_000 }, async () => {
  const s = store({ chunkSize: 4 });
  s.hooks.readFault = (index) => (index === 0 ? { failAfter: 6 } : index === 1 ? { reject: new Error('no') } : undefined);
  const m = await s.authenticate({ user: 'alice', password: 'pw' }, client);
  await m.open();
  const got: Buffer[] = [];
  await assert.rejects(async () => {
    for await (const chunk of (await m.read(0)) as AsyncIterable<Buffer>) got.push(chunk);
  });
  assert.equal(Buffer.concat(got).toString(), 'Subjec');
  await assert.rejects(m.read(1), /no/);
  s.remove('alice', s.uidls('alice')[2]!);
  await assert.rejects(m.read(2), (err) => isMaildropError(err) && err.kind === 'gone');
  s.hooks.commitError = new Error('commit failed');
  await assert.rejects(m.commit([3]), /commit failed/);
  assert.equal(s.messages('alice').length, 3, 'a failed commit removes nothing');
  s.hooks.authenticateDelayMs = 50;
  const started = Date.now();
  await s.authenticate({ user: 'alice', password: 'pw' }, client);
  assert.ok(Date.now() - started >= 45);
});

test('a paused read goes on when resumed', { timeout: 30_000 }, async () => {
  const s = store();
  let resume!: () => void;
  const resumed = new Promise<void>((r) => (resume = r));
  s.hooks.readFault = () => ({ pauseAfter: 5, resume: resumed });
  const m = await s.authenticate({ user: 'alice', password: 'pw' }, client);
  await m.open();
  const stream = await m.read(0);
  const whole = readAll(stream);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(stream.arrived, false);
  resume();
  assert.equal((await whole).toString(), 'Subject: 1\r\n\r\nbody 1\r\n');
});
