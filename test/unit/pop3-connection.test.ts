/**
 * The connection as a client sees it, over a loopback socket to a real Pop3Server wired to the
 * memory store (no other server): pipelined commands answered in order and nothing after QUIT,
 * a client that does not read, lines at and over the limit, a line that never ends, long SASL
 * continuation lines, and a client that goes away.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { RawPop3 } from '../support/pop3-client.js';
import { MemoryStore } from '../support/memory-maildrop.js';
import { allSessionsOver, startMemoryProxy, type MemoryProxy, type MemoryProxyOptions } from '../support/memory-proxy.js';

const T = { timeout: 30_000 };
const proxies: MemoryProxy[] = [];

after(async () => {
  for (const p of proxies) await p.close();
});

async function proxyWith(options: MemoryProxyOptions = {}): Promise<MemoryProxy> {
  const store = new MemoryStore().addUser('alice', 'alice-pw').addUser('long', `L${'0123456789abcdef'.repeat(250)}`);
  for (let i = 1; i <= 3; i++) store.deliver('alice', `Subject: m${i}\n\n.body ${i}\n`);
  store.deliver('long', 'Subject: long\n\nx\n');
  const p = await startMemoryProxy({ store, ...options });
  proxies.push(p);
  return p;
}

test('pipelined commands are answered in order, multi-line replies included', T, async () => {
  const p = await proxyWith();
  const c = await RawPop3.connect(p.port);
  c.write('USER alice\r\nPASS alice-pw\r\nSTAT\r\nLIST 1\r\nRETR 2\r\nNOOP\r\nUIDL\r\nBOGUS\r\nDELE 3\r\nLAST\r\nQUIT\r\n');
  assert.equal(await c.readLine(), '+OK Send your password.');
  assert.equal(await c.readLine(), '+OK Logged in, 3 messages.');
  assert.match(await c.readLine(), /^\+OK 3 \d+$/);
  assert.match(await c.readLine(), /^\+OK 1 \d+$/);
  assert.equal(await c.readLine(), '+OK Message follows.');
  assert.equal((await c.readMultiline()).toString('latin1'), 'Subject: m2\r\n\r\n..body 2\r\n');
  assert.equal(await c.readLine(), '+OK');
  assert.equal(await c.readLine(), '+OK Unique-ID listing follows');
  assert.equal((await c.readMultiline()).toString('latin1').split('\r\n').length, 4);
  assert.equal(await c.readLine(), '-ERR Unknown command: BOGUS');
  assert.equal(await c.readLine(), '+OK Message 3 deleted.');
  assert.equal(await c.readLine(), '+OK 2');
  assert.equal(await c.readLine(), '+OK Bye (1 message deleted).');
  await c.waitClose();
  assert.equal(p.store.messages('alice').length, 2);
});

test('nothing pipelined behind QUIT is answered or run', T, async () => {
  const p = await proxyWith();
  const c = await RawPop3.connect(p.port);
  c.write('USER alice\r\nPASS alice-pw\r\nDELE 1\r\nQUIT\r\nDELE 2\r\nQUIT\r\n');
  for (let i = 0; i < 4; i++) await c.readLine();
  await c.waitClose();
  assert.equal(c.unread().length, 0);
  assert.deepEqual(p.store.eventsOf('commit').map((e) => e.indexes), [[0]]);
});

test('2000 pipelined RETRs from a client that reads only later: all answered, in order, whole', T, async () => {
  const p = await proxyWith();
  const c = await RawPop3.login(p.port, 'alice', 'alice-pw');
  c.write(Buffer.from('RETR 1\r\nRETR 2\r\nRETR 3\r\nNOOP\r\n'.repeat(500)));
  await new Promise((r) => setTimeout(r, 50));
  for (let i = 0; i < 500; i++) {
    for (const n of [1, 2, 3]) {
      assert.equal(await c.readLine(), '+OK Message follows.');
      assert.equal((await c.readMultiline()).toString('latin1'), `Subject: m${n}\r\n\r\n..body ${n}\r\n`);
    }
    assert.equal(await c.readLine(), '+OK');
  }
  assert.match(await c.command('QUIT'), /^\+OK/);
});

test('a line of 512 octets with its CRLF is taken; one octet more is "too long", and the session goes on', T, async () => {
  const p = await proxyWith();
  const c = await RawPop3.connect(p.port);
  assert.equal(await c.command(`USER ${'u'.repeat(512 - 7)}`), '+OK Send your password.');
  assert.equal(await c.command(`USER ${'u'.repeat(512 - 6)}`), '-ERR Line too long (limit 512 octets).');
  assert.equal(await c.command(`NOOP ${'x'.repeat(5000)}`), '-ERR Line too long (limit 512 octets).');
  assert.match(await c.command('CAPA'), /^\+OK/);
  await c.readMultiline();
  c.destroy();
});

test('after three overlong lines the fourth closes the connection', T, async () => {
  const p = await proxyWith();
  const c = await RawPop3.connect(p.port);
  c.write(`${'y'.repeat(600)}\r\n`.repeat(5));
  for (let i = 0; i < 3; i++) assert.equal(await c.readLine(), '-ERR Line too long (limit 512 octets).');
  assert.equal(await c.readLine(), '-ERR Too many overlong lines, closing connection.');
  await c.waitClose();
  assert.equal(c.unread().length, 0);
});

test('a line that never ends is cut at the limit: one -ERR, its rest thrown away up to its LF', T, async () => {
  const p = await proxyWith();
  const c = await RawPop3.connect(p.port);
  for (let i = 0; i < 50; i++) c.write('z'.repeat(10_000));
  assert.equal(await c.readLine(), '-ERR Line too long (limit 512 octets).');
  c.write('still the same line\r\nNOOP\r\n');
  assert.equal(await c.readLine(), '-ERR NOOP is not allowed in the AUTHORIZATION state.');
  c.destroy();
});

test('a SASL response of about 4000 octets is accepted; outside an exchange the limit holds', T, async () => {
  const p = await proxyWith();
  const password = `L${'0123456789abcdef'.repeat(250)}`;
  const response = Buffer.from(`\0long\0${password}`).toString('base64');
  assert.ok(response.length > 5000);
  const c = await RawPop3.connect(p.port);
  assert.equal(await c.command('AUTH PLAIN'), '+ ');
  assert.equal(await c.command(response), '+OK Logged in, 1 message.');
  assert.equal(await c.command(`NOOP ${'x'.repeat(4000)}`), '-ERR Line too long (limit 512 octets).');
  // Beyond what the connection holds at all (16 KiB), even a SASL response is too long.
  const d = await RawPop3.connect(p.port);
  assert.equal(await d.command('AUTH PLAIN'), '+ ');
  assert.equal(await d.command('QUFB'.repeat(5000)), '-ERR Line too long (limit 512 octets).');
  c.destroy();
  d.destroy();
});

test('bare CRs are data, LF alone ends a line, NUL and 8-bit bytes get -ERR', T, async () => {
  const p = await proxyWith();
  const c = await RawPop3.connect(p.port);
  c.write('NOOP\rNOOP\r\n');
  assert.equal(await c.readLine(), '-ERR Unknown command.');
  c.write('USER alice\nPASS alice-pw\n');
  assert.equal(await c.readLine(), '+OK Send your password.');
  assert.equal(await c.readLine(), '+OK Logged in, 3 messages.');
  c.write(Buffer.from([0xff, 0xfe, 0x80, 0x20, 0xe9, 0x0d, 0x0a]));
  assert.equal(await c.readLine(), '-ERR Unknown command.');
  c.write(Buffer.from('RETR \u00e9\r\n', 'utf8'));
  assert.match(await c.readLine(), /^-ERR Invalid message number/);
  assert.equal(await c.command('NOOP'), '+OK');
  c.destroy();
});

test('a client that goes away mid-session: nothing removed, marks given back, the mailbox free again', T, async () => {
  const p = await proxyWith();
  const c = await RawPop3.login(p.port, 'alice', 'alice-pw');
  assert.match(await c.command('DELE 1'), /^\+OK/);
  c.destroy();
  assert.ok(await allSessionsOver(p));
  assert.deepEqual(p.events.ended, ['client-closed']);
  assert.equal(p.store.messages('alice').length, 3);
  assert.equal(p.store.eventsOf('abandon').length, 1);
  const again = await RawPop3.login(p.port, 'alice', 'alice-pw');
  assert.match(await again.command('STAT'), /^\+OK 3 /);
  again.destroy();
});

test('a client that goes away during a slow login: the login completes and is let go of', T, async () => {
  const p = await proxyWith();
  p.store.hooks.authenticateDelayMs = 150;
  const c = await RawPop3.connect(p.port);
  await c.command('USER alice');
  c.send('PASS alice-pw');
  await new Promise((r) => setTimeout(r, 30));
  c.destroy();
  assert.ok(await allSessionsOver(p));
  p.store.hooks.authenticateDelayMs = 0;
  const again = await RawPop3.login(p.port, 'alice', 'alice-pw');
  again.destroy();
});
