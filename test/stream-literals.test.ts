/**
 * Message bodies streamed from the response stream as they arrive (the literal tap), against a
 * real Dovecot: byte for byte what imapflow itself fetches, with untagged responses of other
 * clients' changes arriving in between; and a backend cut in the middle of a body never ends
 * the message for the POP3 client.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';
import type { ImapFlow } from 'imapflow';
import { LargeMessages } from '../src/imap/large-message.js';
import { LiteralTap } from '../src/imap/literal-tap.js';
import { ReadAhead } from '../src/imap/read-ahead.js';
import { corpus, mimeMessage } from './support/corpus.js';
import { emptyMailbox, imapClient, startDovecot, withMailbox, type Dovecot } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { settled, startProxy } from './support/proxy.js';
import { startRelay } from './support/tcp-relay.js';

let dovecot: Dovecot;
const alice = { name: 'alice', password: 'alice-secret' };

before(async () => {
  dovecot = await startDovecot();
}, { timeout: 120_000 });

after(async () => {
  await dovecot?.stop();
}, { timeout: 60_000 });

beforeEach(async () => {
  await emptyMailbox(dovecot, alice);
}, { timeout: 60_000 });

const withImap = <T>(run: (imap: ImapFlow) => Promise<T>) => withMailbox(dovecot, alice, run);

/** UID, size and bytes of every message, as imapflow's own FETCH gives them. */
async function stored(): Promise<{ uid: number; size: number; source: Buffer }[]> {
  return withImap(async (imap) => {
    const all = await imap.fetchAll('1:*', { uid: true, size: true, source: true });
    return all.map((m) => ({ uid: m.uid, size: m.size!, source: m.source! })).sort((a, b) => a.uid - b.uid);
  });
}

async function drain(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const got: Buffer[] = [];
  for await (const chunk of stream) got.push(chunk as Buffer);
  return Buffer.concat(got);
}

test('read ahead through the tap: every body exact, with EXISTS, EXPUNGE and FETCH FLAGS of other clients in between', { timeout: 120_000 }, async () => {
  const messages = [...corpus().map((m) => m.data), ...Array.from({ length: 40 }, (_, i) => mimeMessage(i, 1_000 + i * 6_000))];
  for (const m of messages) await dovecot.deliver('alice', m);
  const before = await stored();
  const imap = await imapClient(dovecot, alice);
  try {
    await imap.mailboxOpen('INBOX');
    // imapflow finishes its work on the SELECT answer just after it resolves; the tap goes in
    // at the first FETCH that finds the connection idle (as a POP3 client's first RETR does).
    await new Promise((resolve) => setImmediate(resolve));
    const readAhead = new ReadAhead(imap, before, () => false, true);
    let untaggedSeen = 0;
    imap.on('exists', () => untaggedSeen++);
    imap.on('expunge', () => untaggedSeen++);
    imap.on('flags', () => untaggedSeen++);
    for (let i = 0; i < before.length; i++) {
      if (i % 10 === 5) {
        // Another client changes the mailbox: our connection hears of it in untagged
        // responses that arrive between (and during) the read-ahead's FETCHes.
        await withImap(async (other) => {
          await other.messageFlagsAdd({ uid: String(before[i + 1]!.uid) }, ['\\Flagged']);
          await other.messageDelete({ uid: String(before[i - 5]!.uid) });
        });
        await dovecot.deliver('alice', `Subject: late ${i}\n\nlate\n`);
        await imap.noop();
      }
      if (!readAhead.handles(i)) continue;
      const body = await readAhead.take(i);
      assert.ok(body !== undefined, `message ${i + 1} read`);
      const bytes = await drain(body.stream);
      assert.equal(body.size, bytes.length);
      assert.ok(bytes.equals(before[i]!.source), `message ${i + 1} (UID ${before[i]!.uid}) byte for byte`);
    }
    await readAhead.settled();
    const streamed = LiteralTap.of(imap)?.taken ?? 0;
    assert.ok(streamed >= before.length - 2, `bodies came through the tap (${streamed} of ${before.length})`);
    assert.ok(untaggedSeen > 0, 'imapflow still saw the untagged responses');
    // imapflow's own view of the mailbox is intact: its commands and state go on working.
    const now = await imap.fetchAll('1:*', { uid: true, flags: true });
    const status = (await imap.status('INBOX', { messages: true })) as { messages: number };
    assert.equal(now.length, status.messages);
    assert.equal((imap.mailbox as { exists: number }).exists, status.messages);
    assert.ok(now.some((m) => m.flags?.has('\\Flagged')));
  } finally {
    await imap.logout();
  }
});

test('a message expunged by another client before the FETCH: no body, the rest exact', { timeout: 120_000 }, async () => {
  for (let i = 0; i < 6; i++) await dovecot.deliver('alice', mimeMessage(i, 5_000));
  const before = await stored();
  const imap = await imapClient(dovecot, alice);
  try {
    await imap.mailboxOpen('INBOX');
    const readAhead = new ReadAhead(imap, before, () => false, true);
    await withImap(async (other) => {
      await other.messageDelete({ uid: String(before[2]!.uid) });
    });
    for (let i = 0; i < before.length; i++) {
      const body = await readAhead.take(i).catch((err: Error) => err);
      if (i === 2) {
        // Dovecot answers it without a body, or fails the FETCH: never with wrong bytes.
        if (body instanceof Error || body === undefined) continue;
        assert.ok((await drain(body.stream)).equals(before[i]!.source));
        continue;
      }
      if (body instanceof Error) {
        // A FETCH that failed for the expunged message takes its batch with it; read again.
        continue;
      }
      assert.ok(body !== undefined);
      assert.ok((await drain(body.stream)).equals(before[i]!.source), `message ${i + 1}`);
    }
    await readAhead.settled();
    assert.ok(await imap.noop().then(() => true));
  } finally {
    await imap.logout();
  }
});

test('the backend cut in the middle of a streamed body: the client never gets the terminating line', { timeout: 120_000 }, async () => {
  const message = mimeMessage(1, 200_000);
  await dovecot.deliver('alice', message);
  const relay = await startRelay(dovecot.imapPort, { throttle: { bytesPerTick: 16_384, tickMs: 2 } });
  const proxy = await startProxy({ imapPort: relay.port, logLevel: 'info' });
  try {
    for (const into of [0, 1, 30, 4_000, 65_536, 150_000, message.length - 60]) {
      const c = await RawPop3.login(proxy.port, alice.name, alice.password);
      assert.match(await c.command('STAT'), /^\+OK 1 /);
      // The next bytes from the server are the FETCH line (under 60 octets) and the body.
      relay.cutAfter(60 + into);
      const upToStat = c.received().length;
      c.write('RETR 1\r\n');
      await c.waitClose(30_000);
      const retr = c.received().subarray(upToStat).toString('latin1');
      assert.ok(!retr.includes('\r\n.\r\n') && !retr.startsWith('.\r\n'), `cut ${into} octets into the body: no terminating line (${retr.length} octets came)`);
      await settled(proxy);
    }
  } finally {
    await proxy.close();
    await relay.close();
  }
});

test('a large message in one streamed FETCH: byte for byte what Dovecot POP3 sends, and a cut in the middle never ends it', { timeout: 120_000 }, async () => {
  const message = mimeMessage(2, 3_000_000);
  await dovecot.deliver('alice', mimeMessage(3, 10_000));
  await dovecot.deliver('alice', message);
  await dovecot.deliver('alice', mimeMessage(4, 10_000));
  const native = await RawPop3.login(dovecot.pop3Port, alice.name, alice.password);
  const expected: Buffer[] = [];
  for (const n of [1, 2, 3]) expected.push((await native.multiline(`RETR ${n}`)).body);
  await native.command('QUIT');
  const relay = await startRelay(dovecot.imapPort);
  const proxy = await startProxy({ imapPort: relay.port, logLevel: 'info' });
  try {
    const c = await RawPop3.login(proxy.port, alice.name, alice.password);
    // In order, then the large one again after a jump.
    for (const n of [1, 2, 3, 2]) assert.ok((await c.multiline(`RETR ${n}`)).body.equals(expected[n - 1]!), `message ${n} exact`);
    await c.command('QUIT');
    for (const into of [10, 1_000_000, 2_900_000]) {
      const s = await RawPop3.login(proxy.port, alice.name, alice.password);
      assert.ok((await s.multiline("RETR 1")).body.equals(expected[0]!));
      relay.cutAfter(60 + into);
      const upTo = s.received().length;
      s.write('RETR 2\r\n');
      await s.waitClose(30_000);
      const retr = s.received().subarray(upTo).toString('latin1');
      assert.ok(!retr.includes('\r\n.\r\n') && !retr.startsWith('.\r\n'), `cut ${into} octets into the body: no terminating line (${retr.length} octets came)`);
      await settled(proxy);
    }
  } finally {
    await proxy.close();
    await relay.close();
  }
});

test('windows of a large message through the tap: exact at sizes around the window boundaries', { timeout: 120_000 }, async () => {
  const window = 65_536;
  const sizes = [window - 1, window, window + 1, 2 * window, 3 * window + 17];
  for (const size of sizes) {
    const head = `Subject: w${size}\r\n\r\n`;
    await dovecot.deliver('alice', Buffer.concat([Buffer.from(head), Buffer.alloc(size - head.length, 0x2e)]));
  }
  const before = await stored();
  assert.deepEqual(before.map((m) => m.size), sizes);
  const imap = await imapClient(dovecot, alice);
  try {
    await imap.mailboxOpen('INBOX');
    await new Promise((resolve) => setImmediate(resolve));
    const large = new LargeMessages(imap, true);
    for (let i = 0; i < before.length; i++) {
      const body = await large.fetch(before[i]!.uid, before[i]!.size, window);
      assert.ok(body !== undefined);
      const bytes = await drain(body.stream);
      assert.ok(bytes.equals(before[i]!.source), `${sizes[i]} octets in windows of ${window}`);
    }
    await large.settled();
    const tap = LiteralTap.of(imap);
    assert.ok(tap !== undefined && tap.taken >= sizes.length + 4, `the windows came through the tap (${tap?.taken})`);
    // A message that is gone: undefined, and the connection goes on.
    await withImap((other) => other.messageDelete({ uid: String(before[0]!.uid) }));
    await imap.noop();
    assert.equal(await large.fetch(before[0]!.uid, before[0]!.size, window), undefined);
    assert.ok(await imap.noop().then(() => true));
  } finally {
    await imap.logout();
  }
});
