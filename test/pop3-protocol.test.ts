/**
 * The POP3 side as a client sees it, with a real Dovecot behind the proxy: greeting, CAPA,
 * login, strict argument parsing, bounded lines, pipelining, idle timeout.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startDovecot, type Dovecot } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { startProxy, type TestProxy } from './support/proxy.js';
import { startRelay } from './support/tcp-relay.js';

let dovecot: Dovecot;
let proxy: TestProxy;

before(async () => {
  dovecot = await startDovecot();
  for (let i = 1; i <= 3; i++) await dovecot.deliver('alice', `Subject: m${i}\nMessage-ID: <m${i}@test>\n\nbody ${i}\n`);
  proxy = await startProxy({ imapPort: dovecot.imapPort });
}, { timeout: 120_000 });

after(async () => {
  await proxy?.close();
  await dovecot?.stop();
}, { timeout: 60_000 });

async function login(user = 'alice', password = 'alice-secret'): Promise<RawPop3> {
  const c = await RawPop3.connect(proxy.port);
  assert.match(await c.command(`USER ${user}`), /^\+OK/);
  assert.match(await c.command(`PASS ${password}`), /^\+OK/);
  return c;
}

test('the greeting is +OK and carries no APOP timestamp', { timeout: 120_000 }, async () => {
  const c = await RawPop3.connect(proxy.port);
  assert.match(c.greeting, /^\+OK /);
  assert.doesNotMatch(c.greeting, /<.*@.*>/);
  assert.match(await c.command('APOP alice 0123456789abcdef0123456789abcdef'), /^-ERR/);
  c.destroy();
});

test('CAPA lists the required capabilities in both states', { timeout: 120_000 }, async () => {
  const c = await RawPop3.connect(proxy.port);
  const before = await c.multiline('CAPA');
  const caps = before.body.toString().split('\r\n');
  for (const cap of ['TOP', 'USER', 'UIDL', 'RESP-CODES', 'AUTH-RESP-CODE', 'PIPELINING']) assert.ok(caps.includes(cap), cap);
  assert.ok(caps.some((l) => l.startsWith('IMPLEMENTATION ')));
  await c.command('USER alice');
  await c.command('PASS alice-secret');
  const inside = (await c.multiline('capa')).body.toString().split('\r\n');
  assert.ok(inside.includes('TOP') && inside.includes('UIDL') && inside.includes('PIPELINING'));
  await c.command('QUIT');
  c.destroy();
});

test('a wrong password and an unknown user get the same [AUTH] reply, and the session can try again', { timeout: 120_000 }, async () => {
  const c = await RawPop3.connect(proxy.port);
  await c.command('USER alice');
  const wrong = await c.command('PASS not-the-password', 30_000);
  await c.command('USER nobody-here');
  const unknown = await c.command('PASS whatever', 30_000);
  assert.match(wrong, /^-ERR \[AUTH\] /);
  assert.equal(unknown, wrong);
  await c.command('USER alice');
  assert.match(await c.command('PASS alice-secret', 30_000), /^\+OK/);
  assert.match(await c.command('STAT'), /^\+OK 3 \d+$/);
  await c.command('QUIT');
  c.destroy();
});

test('PASS without USER, and transaction commands before login, are refused', { timeout: 120_000 }, async () => {
  const c = await RawPop3.connect(proxy.port);
  assert.match(await c.command('PASS x'), /^-ERR/);
  assert.match(await c.command('STAT'), /^-ERR/);
  assert.match(await c.command('RETR 1'), /^-ERR/);
  assert.match(await c.command('USER'), /^-ERR/);
  c.destroy();
});

test('bad message numbers and arguments get -ERR and the session goes on', { timeout: 120_000 }, async () => {
  const c = await login();
  for (const cmd of ['RETR 0', 'RETR -1', 'RETR abc', 'RETR 99', 'RETR 1 2', 'RETR', 'LIST 00000000000000000001',
    'DELE 12345678901234567890', 'TOP 1', 'TOP 1 x', 'TOP 1 -1', 'UIDL 1 2', 'STAT 1', 'USER alice', 'XYZZY', 'RETR +1', 'RETR 1.0']) {
    assert.match(await c.command(cmd), /^-ERR /, cmd);
  }
  assert.match(await c.command('stat'), /^\+OK 3 \d+$/);
  assert.match(await c.command('LiSt 2'), /^\+OK 2 \d+$/);
  await c.command('QUIT');
  c.destroy();
});

test('NUL and 8-bit bytes in commands get -ERR, not a crash', { timeout: 120_000 }, async () => {
  const c = await login();
  c.write(Buffer.from([0x53, 0x54, 0x00, 0x41, 0x54, 0x0d, 0x0a]));
  assert.match(await c.readLine(), /^-ERR/);
  c.write(Buffer.from([0xff, 0xfe, 0x80, 0x20, 0xe9, 0x0d, 0x0a]));
  assert.match(await c.readLine(), /^-ERR/);
  c.write(Buffer.from('RETR \u00e9\r\n', 'utf8'));
  assert.match(await c.readLine(), /^-ERR/);
  assert.match(await c.command('NOOP'), /^\+OK/);
  await c.command('QUIT');
  c.destroy();
});

test('an overlong line gets -ERR, its rest is discarded, and repeated abuse closes the connection', { timeout: 120_000 }, async () => {
  const c = await RawPop3.connect(proxy.port);
  c.write('NOOP ' + 'x'.repeat(5000) + '\r\n');
  assert.match(await c.readLine(), /^-ERR .*too long/i);
  assert.match(await c.command('CAPA'), /^\+OK/);
  await c.readMultiline();
  for (let i = 0; i < 3; i++) c.write('y'.repeat(600) + '\r\n');
  for (let i = 0; i < 3; i++) assert.match(await c.readLine(), /^-ERR/);
  await c.waitClose();
});

test('a line that never ends does not grow without bound: it is cut at the limit', { timeout: 120_000 }, async () => {
  const c = await RawPop3.connect(proxy.port);
  for (let i = 0; i < 50; i++) c.write('z'.repeat(10_000));
  assert.match(await c.readLine(), /^-ERR .*too long/i);
  c.destroy();
});

test('pipelined commands are answered in order', { timeout: 120_000 }, async () => {
  const c = await RawPop3.connect(proxy.port);
  c.write('USER alice\r\nPASS alice-secret\r\nSTAT\r\nLIST 1\r\nNOOP\r\nUIDL 2\r\nBOGUS\r\nQUIT\r\n');
  const replies = [];
  for (let i = 0; i < 8; i++) replies.push(await c.readLine(30_000));
  assert.match(replies[0]!, /^\+OK/);
  assert.match(replies[1]!, /^\+OK/);
  assert.match(replies[2]!, /^\+OK 3 /);
  assert.match(replies[3]!, /^\+OK 1 \d+$/);
  assert.match(replies[4]!, /^\+OK/);
  assert.match(replies[5]!, /^\+OK 2 \S+$/);
  assert.match(replies[6]!, /^-ERR/);
  assert.match(replies[7]!, /^\+OK/);
  await c.waitClose();
});

test('10,000 pipelined RETRs from a client that does not read: the proxy stops fetching until it reads', { timeout: 120_000 }, async () => {
  await dovecot.deliver('bob', `Subject: big\nMessage-ID: <big@test>\n\n${'0123456789abcdef\n'.repeat(1200)}`);
  const relay = await startRelay(dovecot.imapPort);
  const behindRelay = await startProxy({ imapPort: relay.port });
  try {
    const c = await RawPop3.connect(behindRelay.port);
    await c.command('USER bob');
    await c.command('PASS bob-secret', 30_000);
    c.write(Buffer.from('RETR 1\r\n'.repeat(10_000)));
    // Nothing is read: once the socket buffers are full the proxy must stall.
    let stalledAt = -1;
    for (let i = 0; i < 40 && stalledAt !== relay.serverBytes; i++) {
      stalledAt = relay.serverBytes;
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal(relay.serverBytes, stalledAt, 'backend traffic stops while the client does not read');
    assert.ok(stalledAt < 20_000 * 10_000 / 4, `fetched ${stalledAt} bytes ahead of a client that read nothing`);
    for (let i = 0; i < 10_000; i++) {
      assert.match(await c.readLine(), /^\+OK/);
      await c.readMultiline();
    }
    assert.match(await c.command('QUIT'), /^\+OK/);
    c.destroy();
  } finally {
    await behindRelay.close();
    await relay.close();
  }
});

test('an idle session is ended with -ERR and the connection closed', { timeout: 120_000 }, async () => {
  const quick = await startProxy({ imapPort: dovecot.imapPort, idleTimeoutMs: 300 });
  try {
    const c = await RawPop3.connect(quick.port);
    assert.match(await c.readLine(5000), /^-ERR .*inactiv/i);
    await c.waitClose();
  } finally {
    await quick.close();
  }
});
