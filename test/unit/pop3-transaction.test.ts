/**
 * The TRANSACTION state over the memory store, driving Pop3Session directly: STAT, LIST, UIDL,
 * NOOP and their message numbers, DELE and what it hides, RSET, LAST, and a snapshot that
 * stays fixed while the store changes. Retrieval and the UPDATE state: pop3-retrieval.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MaildropError } from '../../src/maildrop/errors.js';
import { memorySession, type MemorySession } from '../support/memory-connection.js';
import { MemoryStore } from '../support/memory-maildrop.js';
import { memoryServices } from '../support/memory-proxy.js';

const T = { timeout: 30_000 };
const MESSAGES = ['Subject: one\n\nfirst\n', 'Subject: two\n\nsecond body\n', 'Subject: three\n\nthird\nmore\n'];
const SIZES = MESSAGES.map((m) => Buffer.byteLength(m.replace(/\n/g, '\r\n')));

async function loggedIn(): Promise<{ s: MemorySession; store: MemoryStore; uidls: string[] }> {
  const store = new MemoryStore().addUser('alice', 'pw');
  for (const m of MESSAGES) store.deliver('alice', m);
  const { services } = memoryServices({ store });
  const s = memorySession(services);
  await s.login('alice', 'pw');
  return { s, store, uidls: store.uidls('alice') };
}

test('STAT, LIST and UIDL list the snapshot; LIST n and UIDL n answer one line', T, async () => {
  const { s, uidls } = await loggedIn();
  const total = SIZES.reduce((a, b) => a + b, 0);
  assert.equal(await s.line('STAT'), `+OK 3 ${total}`);
  const list = await s.multi('LIST');
  assert.equal(list.status, '+OK 3 messages');
  assert.equal(list.body, SIZES.map((size, i) => `${i + 1} ${size}\r\n`).join(''));
  const uidl = await s.multi('UIDL');
  assert.equal(uidl.status, '+OK Unique-ID listing follows');
  assert.equal(uidl.body, uidls.map((u, i) => `${i + 1} ${u}\r\n`).join(''));
  assert.equal(await s.line('LIST 2'), `+OK 2 ${SIZES[1]}`);
  assert.equal(await s.line('UIDL 3'), `+OK 3 ${uidls[2]}`);
  assert.equal(await s.line('NOOP'), '+OK');
});

test('bad message numbers get -ERR and the session goes on', T, async () => {
  const { s } = await loggedIn();
  const expected: Record<string, string> = {
    'RETR 0': '-ERR No such message.',
    'RETR 4': '-ERR No such message.',
    'LIST 00000000000000000001': '-ERR No such message.',
    'DELE 12345678901234567890': '-ERR No such message.',
    'RETR -1': '-ERR Invalid message number: -1',
    'RETR abc': '-ERR Invalid message number: abc',
    'RETR +1': '-ERR Invalid message number: +1',
    'RETR 1.0': '-ERR Invalid message number: 1.0',
    'UIDL x': '-ERR Invalid message number: x',
    'TOP 1 x': '-ERR Invalid line count: x',
    'TOP 1 -1': '-ERR Invalid line count: -1',
    'TOP 9 1': '-ERR No such message.',
    'RETR': '-ERR Wrong number of arguments for RETR.',
    'RETR 1 2': '-ERR Wrong number of arguments for RETR.',
    'TOP 1': '-ERR Wrong number of arguments for TOP.',
    'UIDL 1 2': '-ERR Wrong number of arguments for UIDL.',
    'STAT 1': '-ERR Wrong number of arguments for STAT.',
    'NOOP x': '-ERR Wrong number of arguments for NOOP.',
    'RSET x': '-ERR Wrong number of arguments for RSET.',
    'LAST 1': '-ERR Wrong number of arguments for LAST.',
  };
  for (const [command, reply] of Object.entries(expected)) assert.equal(await s.line(command), reply, command);
  assert.match(await s.line('stat'), /^\+OK 3 \d+$/);
});

test('DELE marks a message: it leaves STAT, LIST and UIDL, and every command on it is refused', T, async () => {
  const { s, store, uidls } = await loggedIn();
  assert.equal(await s.line('DELE 2'), '+OK Message 2 deleted.');
  assert.equal(await s.line('STAT'), `+OK 2 ${SIZES[0]! + SIZES[2]!}`);
  assert.equal((await s.multi('LIST')).body, `1 ${SIZES[0]}\r\n3 ${SIZES[2]}\r\n`);
  assert.equal((await s.multi('UIDL')).body, `1 ${uidls[0]}\r\n3 ${uidls[2]}\r\n`);
  assert.equal((await s.multi('LIST')).status, '+OK 2 messages');
  for (const c of ['DELE 2', 'RETR 2', 'TOP 2 0', 'LIST 2', 'UIDL 2']) assert.equal(await s.line(c), '-ERR Message 2 is deleted.', c);
  assert.equal(store.messages('alice').length, 3, 'the store keeps it until QUIT');
  assert.deepEqual(store.eventsOf('markDeleted').map((e) => e.index), [1]);
});

test('RSET takes back every mark of the session, and LAST goes back to 0', T, async () => {
  const { s, store } = await loggedIn();
  await s.line('DELE 1');
  await s.line('DELE 3');
  await s.multi('RETR 2');
  assert.equal(await s.line('LAST'), '+OK 2');
  assert.equal(await s.line('RSET'), '+OK 3 messages.');
  assert.deepEqual(store.eventsOf('unmarkDeleted').map((e) => [...e.indexes].sort()), [[0, 2]]);
  assert.equal(await s.line('LAST'), '+OK 0');
  assert.match(await s.line('STAT'), /^\+OK 3 /);
  assert.equal((await s.multi('RETR 1')).status, '+OK Message follows.');
  assert.equal(await s.line('RSET'), '+OK 3 messages.');
});

test('LAST: the highest message RETR gave since login; TOP does not count', T, async () => {
  const { s } = await loggedIn();
  assert.equal(await s.line('LAST'), '+OK 0');
  await s.multi('TOP 3 0');
  assert.equal(await s.line('LAST'), '+OK 0');
  await s.multi('RETR 2');
  await s.multi('RETR 1');
  assert.equal(await s.line('LAST'), '+OK 2');
});

test('the snapshot stays fixed: a later delivery is not seen, a message removed elsewhere is -ERR', T, async () => {
  const { s, store, uidls } = await loggedIn();
  store.deliver('alice', 'Subject: late\n\nlate\n');
  assert.match(await s.line('STAT'), /^\+OK 3 /);
  store.remove('alice', uidls[1]!);
  assert.equal(await s.line('RETR 2'), '-ERR Message was removed from the mailbox by another client.');
  assert.equal(await s.line('LIST 2'), `+OK 2 ${SIZES[1]}`);
  assert.equal((await s.multi('RETR 3')).body, MESSAGES[2]!.replace(/\n/g, '\r\n'));
});

test('DELE failing at the store: -ERR [SYS/TEMP] and the message stays; a fatal failure ends the session', T, async () => {
  const { s, store } = await loggedIn();
  store.hooks.markDeletedError = new MaildropError('temporary', 'STORE timed out');
  assert.equal(await s.line('DELE 1'), '-ERR [SYS/TEMP] Message 1 could not be marked deleted, try again later.');
  assert.match(await s.line('STAT'), /^\+OK 3 /);
  store.hooks.markDeletedError = new MaildropError('temporary', 'connection lost', { fatal: true });
  assert.equal(await s.command('DELE 1'), '-ERR [SYS/TEMP] Message 1 could not be marked deleted, try again later.\r\n');
  assert.equal(s.ending, 'closed');
  assert.equal(store.messages('alice').length, 3);
});

test('RSET failing at the store keeps the marks and says so', T, async () => {
  const { s, store } = await loggedIn();
  await s.line('DELE 1');
  store.hooks.unmarkDeletedError = new MaildropError('temporary', 'STORE timed out');
  assert.equal(await s.line('RSET'), '-ERR [SYS/TEMP] Deletions could not be taken back, try again later.');
  assert.equal(await s.line('LIST 1'), '-ERR Message 1 is deleted.');
});
