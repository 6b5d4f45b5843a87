/**
 * The fast paths keep every rule: the mailbox listing kept between sessions must never show a
 * stale message, size or flag, and messages read ahead in batches must arrive byte for byte,
 * in any order, with the same answers as Dovecot's own POP3 and nothing lost on a fault.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';
import type { ImapFlow } from 'imapflow';
import { corpus, mimeMessage } from './support/corpus.js';
import { emptyMailbox, startDovecot, withMailbox, type Dovecot } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { settled, startProxy, type TestProxy } from './support/proxy.js';
import { startRelay } from './support/tcp-relay.js';

let dovecot: Dovecot;
let proxy: TestProxy;
const alice = { name: 'alice', password: 'alice-secret' };

before(async () => {
  dovecot = await startDovecot();
  proxy = await startProxy({ imapPort: dovecot.imapPort, logLevel: 'info' });
}, { timeout: 120_000 });

after(async () => {
  await proxy?.close();
  await dovecot?.stop();
}, { timeout: 60_000 });

beforeEach(async () => {
  await emptyMailbox(dovecot, alice);
}, { timeout: 60_000 });

const withImap = <T>(run: (imap: ImapFlow) => Promise<T>) => withMailbox(dovecot, alice, run);
const loginAlice = (port: number) => RawPop3.login(port, alice.name, alice.password);

async function quit(c: RawPop3): Promise<void> {
  assert.match(await c.command('QUIT'), /^\+OK/);
  await c.waitClose();
}

/** Whether each message, by UID order, carries \Deleted. */
async function deletedFlags(): Promise<boolean[]> {
  return withImap(async (imap) => {
    const all = await imap.fetchAll('1:*', { uid: true, flags: true });
    return all.sort((a, b) => a.uid - b.uid).map((m) => m.flags?.has('\\Deleted') ?? false);
  });
}

/** The answers of both servers to the same listing commands. */
async function listings(): Promise<{ native: string; proxied: string }> {
  const answers: string[] = [];
  for (const port of [dovecot.pop3Port, proxy.port]) {
    const c = await loginAlice(port);
    // Status texts differ between servers; the numbers must not.
    let text = await c.command('STAT');
    for (const command of ['LIST', 'UIDL']) {
      assert.match(await c.command(command), /^\+OK/);
      text += `\n${(await c.readMultiline()).toString('latin1')}`;
    }
    await quit(c);
    answers.push(text);
  }
  return { native: answers[0]!, proxied: answers[1]! };
}


test('a mailbox changed between sessions is listed afresh: new, expunged and re-flagged messages', { timeout: 120_000 }, async () => {
  for (let i = 1; i <= 6; i++) await dovecot.deliver('alice', `Subject: m${i}\n\n${'body\n'.repeat(i)}`);
  // The first session leaves the listing behind for the next.
  let r = await listings();
  assert.equal(r.proxied, r.native);
  await withImap(async (imap) => {
    // Sequence numbers: message 2 goes, message 3 gets the flag.
    await imap.messageDelete('2');
    await imap.messageFlagsAdd('3', ['\\Deleted']);
  });
  await dovecot.deliver('alice', 'Subject: m7\n\nnew\n');
  r = await listings();
  assert.equal(r.proxied, r.native);
  assert.match(r.proxied, /^\+OK 6 /);
});

test('a \\Deleted flag another client set since the last session is not taken away by our abandoned DELE', { timeout: 120_000 }, async () => {
  for (let i = 1; i <= 3; i++) await dovecot.deliver('alice', `Subject: m${i}\n\nbody\n`);
  await quit(await loginAlice(proxy.port));
  // Only a flag changes: the message count and UIDNEXT stay as the proxy saw them.
  await withImap((imap) => imap.messageFlagsAdd('1', ['\\Deleted']));
  const c = await loginAlice(proxy.port);
  assert.match(await c.command('DELE 1'), /^\+OK/);
  assert.match(await c.command('DELE 2'), /^\+OK/);
  c.destroy();
  await settled(proxy);
  assert.deepEqual(await deletedFlags(), [true, false, false]);
});

test('a \\Deleted flag another client removed since the last session is taken back after our abandoned DELE', { timeout: 120_000 }, async () => {
  for (let i = 1; i <= 3; i++) await dovecot.deliver('alice', `Subject: m${i}\n\nbody\n`);
  await withImap((imap) => imap.messageFlagsAdd('2', ['\\Deleted']));
  await quit(await loginAlice(proxy.port));
  await withImap((imap) => imap.messageFlagsRemove('2', ['\\Deleted']));
  const c = await loginAlice(proxy.port);
  assert.match(await c.command('DELE 2'), /^\+OK/);
  c.destroy();
  await settled(proxy);
  assert.deepEqual(await deletedFlags(), [false, false, false]);
});

/** Small messages around a few large ones, so that batches break at the large ones. */
async function fillMixed(): Promise<number> {
  const sizes = [2_000, 300, 60_000, 400_000, 5_000, 250_000, 270_000, 800, 1_200_000, 40_000];
  let count = 0;
  for (let round = 0; round < 3; round++) {
    for (const size of sizes) await dovecot.deliver('alice', mimeMessage(count++, size));
  }
  for (const m of corpus().filter((c) => c.data.length < 100_000)) {
    await dovecot.deliver('alice', m.data);
    count++;
  }
  return count;
}

/** Sends every command in one write and reads the multi-line bodies, still stuffed. */
async function pipelinedRetr(port: number, order: number[]): Promise<Buffer[]> {
  const c = await loginAlice(port);
  c.write(order.map((n) => `RETR ${n}\r\n`).join(''));
  const bodies: Buffer[] = [];
  for (const n of order) {
    assert.match(await c.readLine(), /^\+OK/, `RETR ${n}`);
    bodies.push(await c.readMultiline());
  }
  await quit(c);
  return bodies;
}

test('pipelined RETRs in order, in reverse and shuffled return the bytes Dovecot\'s POP3 returns', { timeout: 120_000 }, async () => {
  const count = await fillMixed();
  const inOrder = Array.from({ length: count }, (_, i) => i + 1);
  const shuffled = [...inOrder].sort((a, b) => ((a * 7919) % 101) - ((b * 7919) % 101));
  const walks = [inOrder, [...inOrder].reverse(), shuffled, [1, 2, 3, 2, 1, 5, 6, 7, 6, 9, 10, 11]];
  for (const order of walks) {
    const native = await pipelinedRetr(dovecot.pop3Port, order);
    const proxied = await pipelinedRetr(proxy.port, order);
    order.forEach((n, i) => assert.ok(proxied[i]!.equals(native[i]!), `RETR ${n} differs (walk starting ${order.slice(0, 4).join(',')})`));
  }
});

test('messages deleted in the session or expunged by another client while the client walks the mailbox', { timeout: 120_000 }, async () => {
  for (let i = 1; i <= 40; i++) await dovecot.deliver('alice', `Subject: m${i}\n\n${`line ${i}\n`.repeat(i * 10)}`);
  const native = await pipelinedRetr(dovecot.pop3Port, [1, 2, 3, 4, 5, 6, 10, 20, 30, 40]);
  const c = await loginAlice(proxy.port);
  assert.match(await c.command('RETR 1'), /^\+OK/);
  await c.readMultiline();
  assert.match(await c.command('DELE 3'), /^\+OK/);
  await withImap((imap) => imap.messageDelete('5'));
  c.write('RETR 2\r\nRETR 3\r\nRETR 4\r\nRETR 5\r\nRETR 6\r\nRETR 10\r\nRETR 20\r\nRETR 30\r\nRETR 40\r\n');
  const expect = async (i: number) => {
    assert.match(await c.readLine(), /^\+OK/);
    assert.ok((await c.readMultiline()).equals(native[i]!));
  };
  await expect(1);
  assert.match(await c.readLine(), /^-ERR .*deleted/i);
  await expect(3);
  // The server may still deliver a message expunged under this session; if not, it is refused.
  const status = await c.readLine();
  if (status.startsWith('+OK')) assert.ok((await c.readMultiline()).equals(native[4]!));
  else assert.match(status, /^-ERR .*removed/i);
  for (const i of [5, 6, 7, 8, 9]) await expect(i);
  await c.command('RSET');
  await quit(c);
});

test('backend connection cut while messages are read ahead: what arrives whole is exact, then the connection closes', { timeout: 120_000 }, async () => {
  for (let i = 0; i < 200; i++) await dovecot.deliver('alice', mimeMessage(i, 20_000));
  const native = await pipelinedRetr(dovecot.pop3Port, Array.from({ length: 200 }, (_, i) => i + 1));
  const relay = await startRelay(dovecot.imapPort);
  const cut = await startProxy({ imapPort: relay.port, logLevel: 'info' });
  try {
    const c = await loginAlice(cut.port);
    assert.match(await c.command('DELE 1'), /^\+OK/);
    relay.cutAfter(1_500_000);
    c.write(Array.from({ length: 199 }, (_, i) => `RETR ${i + 2}\r\n`).join(''));
    let whole = 0;
    for (;;) {
      const status = await c.readLine().catch(() => undefined);
      if (status === undefined || !status.startsWith('+OK')) break;
      const body = await c.readMultiline().catch(() => undefined);
      if (body === undefined) break;
      assert.ok(body.equals(native[whole + 1]!), `message ${whole + 2} arrived whole and exact`);
      whole++;
    }
    assert.ok(whole > 10 && whole < 199, `some messages arrived before the cut (${whole})`);
    await c.waitClose(30_000);
    await settled(cut);
  } finally {
    await cut.close();
    await relay.close();
  }
  const flags = await deletedFlags();
  assert.equal(flags.length, 200);
  assert.ok(flags.every((f) => !f), 'nothing deleted, no flag left');
});
