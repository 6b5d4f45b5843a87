/**
 * RETR, TOP and the UPDATE state over the memory store, driving Pop3Session directly: the
 * bytes on the wire (byte-stuffing, the terminator, a message without a final line end), in
 * whatever chunks the store sends; a read that fails part way cuts the connection without the
 * final "."; QUIT removes exactly the deleted messages, or nothing and says so; any other end
 * removes nothing and gives the mailbox back.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MaildropError } from '../../src/maildrop/errors.js';
import type { MemoryLockRegistry } from '../../src/lock/memory-lock-registry.js';
import { memorySession, type MemorySession } from '../support/memory-connection.js';
import { MemoryStore, type MemoryStoreOptions } from '../support/memory-maildrop.js';
import { memoryServices, type MemoryServices } from '../support/memory-proxy.js';

const T = { timeout: 30_000 };
const TRICKY = Buffer.from('Subject: dots\r\n\r\n.starts with a dot\r\n..two\r\n.\r\nbare\nlf\n.after lf\rcr.\r\n.', 'latin1');
const STUFFED = 'Subject: dots\r\n\r\n..starts with a dot\r\n...two\r\n..\r\nbare\nlf\n..after lf\rcr.\r\n..\r\n.\r\n';
const LONG_HEADER = 'Subject: top\r\nX-A: 1\r\n\r\nl1\r\nl2\r\nl3\r\n';

async function setup(storeOptions: MemoryStoreOptions = {}): Promise<MemoryServices & { s: MemorySession; uidls: string[] }> {
  const store = new MemoryStore(storeOptions).addUser('alice', 'pw');
  store.deliver('alice', TRICKY);
  store.deliver('alice', LONG_HEADER);
  store.deliver('alice', Buffer.from('no blank line\r\nat all\r\n'));
  store.deliver('alice', Buffer.alloc(0));
  const built = memoryServices({ store });
  const s = memorySession(built.services);
  await s.login('alice', 'pw');
  return { ...built, s, uidls: store.uidls('alice') };
}

test('RETR byte-stuffs lines that start with "." and ends with CRLF.CRLF, adding the CRLF a message lacks', T, async () => {
  const { s, store, events } = await setup();
  assert.equal(await s.command('RETR 1'), `+OK Message follows.\r\n${STUFFED}`);
  assert.equal((await s.multi('RETR 2')).body, LONG_HEADER);
  assert.equal(await s.command('RETR 4'), '+OK Message follows.\r\n.\r\n');
  assert.deepEqual(store.eventsOf('retrieved').map((e) => e.index), [0, 1, 3]);
  assert.deepEqual(events.retrievals, [{ octets: TRICKY.length, whole: true }, { octets: LONG_HEADER.length, whole: true }, { octets: 0, whole: true }]);
});

test('the same bytes whatever chunks the store sends them in, trickled or all at once', T, async () => {
  for (const chunkSize of [1, 2, 3, 5, 7, 64]) {
    for (const trickle of [false, true]) {
      const { s } = await setup({ chunkSize, trickle });
      assert.equal(await s.command('RETR 1'), `+OK Message follows.\r\n${STUFFED}`, `chunks of ${chunkSize}, trickle ${trickle}`);
      assert.equal(await s.command('TOP 2 1'), '+OK Message follows.\r\nSubject: top\r\nX-A: 1\r\n\r\nl1\r\n.\r\n');
    }
  }
});

test('a message that has arrived leaves in one write; one still arriving as it comes, CRLF.CRLF never split', T, async () => {
  const whole = await setup();
  const before = whole.s.writes.length;
  await whole.s.command('RETR 1');
  assert.equal(whole.s.writes.length - before, 1, 'status line, message and terminator in one write');
  const trickled = await setup({ chunkSize: 4, trickle: true });
  const from = trickled.s.writes.length;
  assert.equal(await trickled.s.command('RETR 1'), `+OK Message follows.\r\n${STUFFED}`);
  const writes = trickled.s.writes.slice(from).map((w) => w.toString('latin1'));
  assert.ok(writes.length > 3, `${writes.length} writes`);
  assert.ok(writes.at(-1)!.endsWith('\r\n.\r\n'), 'the final line end leaves with the terminator');
});

test('TOP: the header, the blank line and n body lines; all of a message without a blank line', T, async () => {
  const { s, store } = await setup({ chunkSize: 4 });
  assert.equal(await s.command('TOP 2 0'), '+OK Message follows.\r\nSubject: top\r\nX-A: 1\r\n\r\n.\r\n');
  assert.equal(await s.command('TOP 2 2'), '+OK Message follows.\r\nSubject: top\r\nX-A: 1\r\n\r\nl1\r\nl2\r\n.\r\n');
  assert.equal((await s.multi('TOP 2 99999999999999999999')).body, LONG_HEADER);
  assert.equal((await s.multi('TOP 3 0')).body, 'no blank line\r\nat all\r\n');
  assert.equal(await s.command('TOP 1 1'), '+OK Message follows.\r\nSubject: dots\r\n\r\n..starts with a dot\r\n.\r\n');
  assert.equal(store.eventsOf('retrieved').length, 0, 'TOP does not mark a message read');
});

test('a read that fails part way: no final "." and the connection is cut; nothing is removed', T, async () => {
  for (const failAfter of [0, 1, 10, TRICKY.length]) {
    const { s, store, events, locks } = await setup({ chunkSize: 4 });
    store.hooks.readFault = (index) => (index === 0 ? { failAfter } : undefined);
    await s.line('DELE 2');
    const out = await s.command('RETR 1');
    assert.ok(!out.endsWith('\r\n.\r\n'), `failing after ${failAfter} octets: ${JSON.stringify(out.slice(-20))}`);
    assert.ok(STUFFED.startsWith(out.slice('+OK Message follows.\r\n'.length)) || out === '', `only message bytes: ${JSON.stringify(out)}`);
    assert.equal(s.ending, 'cut');
    assert.deepEqual(events.ended, ['delivery-failed']);
    assert.equal(store.messages('alice').length, 4);
    assert.equal(store.eventsOf('commit').length, 0);
    assert.equal(store.eventsOf('abandon').length, 1);
    assert.equal((locks as MemoryLockRegistry).size, 0);
  }
});

test('TOP failing part way is cut the same way', T, async () => {
  const { s, store } = await setup({ chunkSize: 3 });
  store.hooks.readFault = () => ({ failAfter: 5 });
  const out = await s.command('TOP 2 3');
  // What came before the failure may go out (the last octets are held for the terminator).
  assert.ok('+OK Message follows.\r\nSubje'.startsWith(out), JSON.stringify(out));
  assert.equal(s.ending, 'cut');
});

test('read() refused: gone and temporary answer -ERR and go on; a fatal failure ends the session', T, async () => {
  const { s, store } = await setup();
  store.hooks.readFault = () => ({ reject: new MaildropError('gone', 'expunged') });
  assert.equal(await s.line('RETR 1'), '-ERR Message was removed from the mailbox by another client.');
  store.hooks.readFault = () => ({ reject: new MaildropError('temporary', 'throttled') });
  assert.equal(await s.line('RETR 1'), '-ERR [SYS/TEMP] Mail server failed to deliver the message, try again later.');
  assert.equal(s.ending, 'open');
  store.hooks.readFault = () => ({ reject: new MaildropError('temporary', 'connection lost', { fatal: true }) });
  assert.equal(await s.command('RETR 1'), '-ERR [SYS/TEMP] Mail server failed to deliver the message, try again later.\r\n');
  assert.equal(s.ending, 'closed');
});

test('QUIT removes exactly the messages marked deleted, answers once committed, and frees the mailbox', T, async () => {
  const { s, store, uidls, events, services } = await setup();
  await s.line('DELE 3');
  await s.line('DELE 1');
  await s.line('DELE 4');
  await s.line('RSET');
  await s.line('DELE 4');
  await s.line('DELE 2');
  assert.equal(await s.command('QUIT'), '+OK Bye (2 messages deleted).\r\n');
  assert.equal(s.ending, 'closed');
  assert.deepEqual(store.eventsOf('commit').map((e) => e.indexes), [[1, 3]]);
  assert.deepEqual(store.uidls('alice'), [uidls[0], uidls[2]]);
  assert.deepEqual(events.expunges, [2]);
  assert.deepEqual(events.ended, ['quit']);
  const next = memorySession(services);
  await next.login('alice', 'pw');
  assert.equal(await next.command('QUIT'), '+OK Bye (0 messages deleted).\r\n');
  assert.deepEqual(store.eventsOf('commit').at(-1)!.indexes, []);
});

test('QUIT with one deletion says "1 message"', T, async () => {
  const { s } = await setup();
  await s.line('DELE 1');
  assert.equal(await s.command('QUIT'), '+OK Bye (1 message deleted).\r\n');
});

test('a commit that fails: -ERR [SYS/TEMP] or [SYS/PERM], nothing removed, marks taken back, lock freed', T, async () => {
  const cases = [
    { error: new MaildropError('temporary', 'EXPUNGE timed out'), reply: '-ERR [SYS/TEMP] Deleted messages were not removed. Nothing was deleted; try again later.\r\n' },
    { error: new MaildropError('permanent', 'no Trash folder'), reply: '-ERR [SYS/PERM] Deleted messages were not removed. Nothing was deleted; tell the administrator.\r\n' },
    { error: new Error('socket hang up'), reply: '-ERR [SYS/TEMP] Deleted messages were not removed. Nothing was deleted; try again later.\r\n' },
  ];
  for (const { error, reply } of cases) {
    const { s, store, events, locks } = await setup();
    await s.line('DELE 1');
    store.hooks.commitError = error;
    assert.equal(await s.command('QUIT'), reply);
    assert.equal(s.ending, 'closed');
    assert.equal(store.messages('alice').length, 4);
    assert.equal(store.eventsOf('abandon').length, 1);
    assert.deepEqual(events.ended, ['quit-failed']);
    assert.equal((locks as MemoryLockRegistry).size, 0);
  }
});

test('a session that ends without QUIT removes nothing and gives its marks back', T, async () => {
  const { s, store, events, locks } = await setup();
  await s.line('DELE 1');
  await s.line('DELE 2');
  s.session.end('client-closed', 'cut');
  await s.session.finished();
  assert.equal(store.messages('alice').length, 4);
  assert.equal(store.eventsOf('commit').length, 0);
  assert.equal(store.eventsOf('abandon').length, 1);
  assert.deepEqual(events.ended, ['client-closed']);
  assert.equal((locks as MemoryLockRegistry).size, 0);
});

test('an interrupt while a message is being sent cuts the connection rather than write a line into it', T, async () => {
  const { s, store } = await setup({ chunkSize: 4 });
  let resume!: () => void;
  store.hooks.readFault = () => ({ pauseAfter: 8, resume: new Promise<void>((r) => (resume = r)) });
  const retr = s.command('RETR 2');
  await new Promise((r) => setTimeout(r, 20));
  s.session.interrupt('idle-timeout', 'Disconnected for inactivity.');
  assert.equal(s.ending, 'cut');
  resume();
  const out = await retr;
  assert.ok(!out.includes('-ERR') && !out.endsWith('\r\n.\r\n'), JSON.stringify(out));
  await s.session.finished();
  assert.equal(store.eventsOf('abandon').length, 1);
});

test('an interrupt while idle says why and closes', T, async () => {
  const { s, store } = await setup();
  await s.line('DELE 1');
  s.session.interrupt('idle-timeout', 'Disconnected for inactivity.');
  await s.session.finished();
  assert.equal(s.take(), '-ERR Disconnected for inactivity.\r\n');
  assert.equal(s.ending, 'closed');
  assert.equal(store.messages('alice').length, 4);
});

test('an abandon() that fails is logged; the lock is released all the same', T, async () => {
  const { s, store, locks, log } = await setup();
  store.hooks.abandonError = new Error('flags not restored');
  s.session.end('client-closed', 'cut');
  await s.session.finished();
  assert.equal((locks as MemoryLockRegistry).size, 0);
  assert.match(log(), /Could not restore the mailbox state: flags not restored/);
});
