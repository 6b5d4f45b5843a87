/**
 * A backend connection that dies while bodies are on their way fails exactly the session on it:
 * the process goes on serving everyone else, the client never gets a final "." for a message
 * it did not get whole, and the store keeps every message, unflagged. The backend is the real
 * Dovecot behind a slow relay (so that a read-ahead FETCH is still streaming when it is cut)
 * and, for Exchange's throttle answer, the Exchange relay in front of that.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, beforeEach, test } from 'node:test';
import { emptyMailbox, mailboxState, startDovecot, type Dovecot } from './support/dovecot.js';
import { startExchangeRelay } from './support/exchange-relay.js';
import { RawPop3 } from './support/pop3-client.js';
import { settled, startProxy } from './support/proxy.js';
import { startRelay } from './support/tcp-relay.js';

const TEST = { timeout: 120_000 };
const alice = { name: 'alice', password: 'alice-secret' };
const bob = { name: 'bob', password: 'bob-secret' };
let dovecot: Dovecot;

/** Messages of about 100 KB: twenty of them fill one read-ahead FETCH still streaming on a slow link. */
const message = (i: number) => `Subject: message ${i}\nMessage-ID: <f${i}@faults>\n\n${`line ${i} `.padEnd(76, 'x').concat('\n').repeat(1300)}`;
const COUNT = 20;

before(async () => {
  dovecot = await startDovecot();
}, { timeout: 60_000 });

after(async () => {
  await dovecot?.stop();
}, { timeout: 60_000 });

beforeEach(async () => {
  for (const user of [alice, bob]) await emptyMailbox(dovecot, user);
  for (let i = 1; i <= COUNT; i++) await dovecot.deliver('alice', message(i));
  await dovecot.deliver('bob', message(1));
});

/** Reads one whole message; fails unless it ends with the terminating line. */
async function retrieve(c: RawPop3, n: number): Promise<string> {
  const { status, body } = await c.multiline(`RETR ${n}`, 30_000);
  assert.match(status, /^\+OK/);
  return body.toString('latin1');
}

/** RETR n, n+1, ... until the session ends: every message that ends with "." must be whole. */
async function retrieveUntilCut(c: RawPop3, from: number): Promise<number> {
  let whole = 0;
  for (let n = from; n <= COUNT; n++) {
    const reply = await c.multiline(`RETR ${n}`, 30_000).catch(() => undefined);
    if (reply === undefined || !reply.status.startsWith('+OK')) break;
    assert.equal(reply.body.toString('latin1'), message(n).replaceAll('\n', '\r\n'), `message ${n} is whole`);
    whole++;
  }
  return whole;
}

test('the backend connection cut while bodies are still read ahead: no final "." for a partial message, the process serves on, nothing deleted', TEST, async () => {
  // About 1.6 MB/s: the first FETCH reads twenty messages ahead for over a second.
  const slow = await startRelay(dovecot.imapPort, { throttle: { bytesPerTick: 16 * 1024, tickMs: 10 } });
  const proxy = await startProxy({ imapPort: slow.port, logLevel: 'info' });
  try {
    const c = await RawPop3.login(proxy.port, alice.name, alice.password);
    assert.match(await c.command('DELE 20'), /^\+OK/);
    assert.match(await retrieve(c, 1), /Subject: message 1\r\n/);
    // Bodies of messages 2 on are on their way, and nobody reads them yet.
    slow.cutAll();
    const whole = await retrieveUntilCut(c, 2);
    await c.waitClose(30_000);
    assert.ok(whole < COUNT - 2, `the session ended after ${whole} more whole messages`);
    const tail = c.received().toString('latin1');
    assert.equal(tail.endsWith('\r\n.\r\n') && !tail.endsWith(`${message(whole + 1).slice(-20).replaceAll('\n', '\r\n')}.\r\n`), false, 'no terminating line after a partial message');
    // The process still serves.
    const other = await RawPop3.login(proxy.port, bob.name, bob.password);
    assert.match(await retrieve(other, 1), /Subject: message 1\r\n/);
    assert.match(await other.command('QUIT'), /^\+OK/);
    await settled(proxy);
  } finally {
    await proxy.close();
    await slow.close();
  }
  const state = await mailboxState(dovecot, alice);
  assert.equal(state.length, COUNT);
  assert.equal(state.some((m) => m.deleted), false, 'no \\Deleted flag left behind');
});

test('throttled (BAD + BYE) at the first window of a large message, after two small ones: [SYS/TEMP] for that session alone, the process serves on, nothing deleted', TEST, async () => {
  await emptyMailbox(dovecot, alice);
  for (const i of [1, 2]) await dovecot.deliver('alice', message(i));
  // Over the read-ahead's 256 KiB: read in windows of its own.
  const large = `Subject: large\nMessage-ID: <large@faults>\n\n${'y'.repeat(76).concat('\n').repeat(5000)}`;
  await dovecot.deliver('alice', large);
  await dovecot.deliver('alice', message(4));
  const exchange = await startExchangeRelay(dovecot.imapPort, { reportSize: (n) => n });
  const proxy = await startProxy({ imapPort: exchange.port, logLevel: 'info' });
  try {
    const other = await RawPop3.login(proxy.port, bob.name, bob.password);
    const c = await RawPop3.login(proxy.port, alice.name, alice.password);
    assert.match(await c.command('DELE 4'), /^\+OK/);
    assert.match(await retrieve(c, 1), /Subject: message 1\r\n/);
    assert.match(await retrieve(c, 2), /Subject: message 2\r\n/);
    exchange.throttleNext(/FETCH .*BODY\.PEEK\[\]/i, 500);
    assert.match(await c.command('RETR 3', 30_000), /^-ERR \[SYS\/TEMP\] /);
    await c.waitClose(30_000);
    assert.equal(c.received().toString('latin1').includes('Subject: large'), false, 'nothing of the large message');
    // Every other session goes on, on the same process.
    assert.match(await retrieve(other, 1), /Subject: message 1\r\n/);
    assert.match(await other.command('QUIT'), /^\+OK/);
    await sleep(600);
    const again = await RawPop3.login(proxy.port, alice.name, alice.password);
    assert.match(await again.command('STAT'), /^\+OK 4 /);
    assert.equal((await again.multiline('RETR 3', 30_000)).body.toString('latin1'), large.replaceAll('\n', '\r\n'));
    assert.match(await again.command('QUIT'), /^\+OK/);
    await settled(proxy);
  } finally {
    await proxy.close();
    await exchange.close();
  }
  const state = await mailboxState(dovecot, alice);
  assert.equal(state.length, 4);
  assert.equal(state.some((m) => m.deleted), false, 'no \\Deleted flag left behind');
});

test('the backend cut after it ran UID EXPUNGE, before QUIT heard so: the store is asked, and QUIT says +OK for what is gone', TEST, async () => {
  const relay = await startRelay(dovecot.imapPort);
  const proxy = await startProxy({ imapPort: relay.port, logLevel: 'info' });
  try {
    const c = await RawPop3.login(proxy.port, alice.name, alice.password);
    assert.match(await c.command('DELE 1'), /^\+OK/);
    assert.match(await c.command('DELE 2'), /^\+OK/);
    relay.cutAfterCommand(/UID EXPUNGE/i);
    // Before the fix: "-ERR [SYS/TEMP] Deleted messages were not removed. Nothing was deleted" of mail that was gone.
    assert.match(await c.command('QUIT', 30_000), /^\+OK Bye \(2 messages deleted\)/);
    assert.match(proxy.log(), /The removal failed \(.*\), yet 2 of the 2 messages are gone/);
    await settled(proxy);
  } finally {
    await proxy.close();
    await relay.close();
  }
  const state = await mailboxState(dovecot, alice);
  assert.equal(state.length, COUNT - 2);
  assert.equal(state.some((m) => m.deleted), false);
});
