/**
 * The abuse limits and timeouts, each set small, over loopback sockets to a real Pop3Server
 * wired to the memory store: protocol errors in a row, failed logins per connection and the
 * delay before their answer, the time to log in (also with a login still at the store), the
 * idle timeout (also in the middle of a message), connection counts, and a shutdown.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { RawPop3 } from '../support/pop3-client.js';
import { MemoryStore } from '../support/memory-maildrop.js';
import { allSessionsOver, startMemoryProxy, type MemoryProxy, type MemoryProxyOptions } from '../support/memory-proxy.js';

const T = { timeout: 30_000 };
const proxies: MemoryProxy[] = [];
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

after(async () => {
  for (const p of proxies) await p.close();
});

async function proxyWith(options: MemoryProxyOptions): Promise<MemoryProxy> {
  const store = new MemoryStore({ chunkSize: 16 }).addUser('alice', 'alice-pw').addUser('bob', 'bob-pw');
  store.deliver('alice', `Subject: big\n\n${'0123456789abcdef\n'.repeat(100)}`);
  store.deliver('bob', 'Subject: b\n\nb\n');
  const p = await startMemoryProxy({ store, ...options });
  proxies.push(p);
  return p;
}

const lastLine = (c: RawPop3) => c.received().toString('latin1').trimEnd().split('\r\n').pop() ?? '';

test('maxErrors 3, pipelined: exactly three -ERR, the last saying why, then the connection closes', T, async () => {
  const p = await proxyWith({ limits: { maxErrors: 3 } });
  const c = await RawPop3.connect(p.port);
  c.write('FOO\r\nBAR 1\r\nBAZ\r\nQUX\r\nNOOP\r\nDELE 1\r\nCAPA\r\n');
  await c.waitClose();
  const lines = c.unread().toString('latin1').split('\r\n').filter((l) => l !== '');
  assert.deepEqual(lines, ['-ERR Unknown command: FOO', '-ERR Unknown command: BAR', '-ERR Unknown command: BAZ Too many errors, closing connection.']);
  assert.deepEqual(p.events.commands, []);
});

test('maxAuthFailures 2: the second failure is answered and the connection closed; a new one logs in', T, async () => {
  const p = await proxyWith({ limits: { maxAuthFailures: 2 } });
  const c = await RawPop3.connect(p.port);
  await c.command('USER alice');
  assert.equal(await c.command('PASS x'), '-ERR [AUTH] Authentication failed.');
  await c.command('USER alice');
  assert.equal(await c.command('PASS y'), '-ERR [AUTH] Authentication failed; too many failures, closing connection.');
  await c.waitClose();
  const ok = await RawPop3.login(p.port, 'alice', 'alice-pw');
  ok.destroy();
});

test('authFailDelayMs: a failed login is answered late, later again for the same address, up to the limit', T, async () => {
  const p = await proxyWith({ limits: { authFailDelayMs: 400 } });
  const times: number[] = [];
  for (let i = 0; i < 3; i++) {
    const c = await RawPop3.connect(p.port);
    await c.command('USER alice');
    const started = Date.now();
    assert.match(await c.command('PASS wrong'), /^-ERR \[AUTH\]/);
    times.push(Date.now() - started);
    c.destroy();
  }
  assert.ok(times[0]! >= 230 && times[1]! >= 380 && times[2]! >= 380, `delays ${times.join(', ')} ms`);
  assert.ok(times.every((t) => t < 1500), `capped at 400 ms: ${times.join(', ')} ms`);
});

test('authTimeoutMs 300: idle, dripping and chatty connections that never log in are closed with -ERR', T, async () => {
  const p = await proxyWith({ limits: { authTimeoutMs: 300 } });
  const started = Date.now();
  const [idle, partial, chatty, fast] = await Promise.all([0, 1, 2, 3].map(() => RawPop3.connect(p.port)));
  const drip = setInterval(() => partial!.closed || partial!.write('U'), 40);
  const chat = setInterval(() => chatty!.closed || chatty!.write('CAPA\r\n'), 50);
  try {
    await fast!.command('USER bob');
    assert.match(await fast!.command('PASS bob-pw'), /^\+OK/);
    const closedAfter = await Promise.all([idle!, partial!, chatty!].map((c) => c.waitClose(3000).then(() => Date.now() - started)));
    for (const ms of closedAfter) assert.ok(ms >= 250 && ms < 2000, `closed after ${closedAfter.join(', ')} ms`);
  } finally {
    clearInterval(drip);
    clearInterval(chat);
  }
  for (const c of [idle!, partial!, chatty!]) assert.equal(lastLine(c), '-ERR Too slow to log in, closing connection.');
  await sleep(400);
  assert.match(await fast!.command('STAT'), /^\+OK 1 /, 'a session logged in in time outlives the deadline');
  fast!.destroy();
});

test('authTimeoutMs 300 with a login still at the store: a final -ERR at once; the login is let go of later', T, async () => {
  const p = await proxyWith({ limits: { authTimeoutMs: 300 } });
  p.store.hooks.authenticateDelayMs = 800;
  const c = await RawPop3.connect(p.port);
  const started = Date.now();
  await c.command('USER alice');
  c.send('PASS alice-pw');
  await c.waitClose(3000);
  assert.ok(Date.now() - started < 700, `closed after ${Date.now() - started} ms, before the store answered`);
  assert.equal(lastLine(c), '-ERR Too slow to log in, closing connection.');
  assert.ok(await allSessionsOver(p));
  assert.deepEqual(p.events.ended, ['auth-timeout']);
  p.store.hooks.authenticateDelayMs = 0;
  const again = await RawPop3.login(p.port, 'alice', 'alice-pw');
  again.destroy();
});

test('idleTimeoutMs 200: a silent session is ended with -ERR, nothing removed; a busy one lives on', T, async () => {
  const p = await proxyWith({ idleTimeoutMs: 200 });
  const silent = await RawPop3.login(p.port, 'alice', 'alice-pw');
  assert.match(await silent.command('DELE 1'), /^\+OK/);
  const busy = await RawPop3.login(p.port, 'bob', 'bob-pw');
  for (let i = 0; i < 6; i++) {
    await sleep(80);
    assert.equal(await busy.command('NOOP'), '+OK');
  }
  await silent.waitClose(2000);
  assert.equal(lastLine(silent), '-ERR Disconnected for inactivity.');
  assert.equal(p.store.messages('alice').length, 1);
  await busy.waitClose(2000);
  assert.equal(lastLine(busy), '-ERR Disconnected for inactivity.');
  assert.ok(await allSessionsOver(p));
  assert.deepEqual(p.events.ended, ['idle-timeout', 'idle-timeout']);
});

test('idle timeout while a message is held up at the store: the connection is cut, never a -ERR inside it', T, async () => {
  const p = await proxyWith({ idleTimeoutMs: 200 });
  let resume!: () => void;
  p.store.hooks.readFault = () => ({ pauseAfter: 40, resume: new Promise<void>((r) => (resume = r)) });
  const c = await RawPop3.login(p.port, 'alice', 'alice-pw');
  c.send('RETR 1');
  await c.waitClose(2000);
  resume();
  const reply = c.received().toString('latin1').split('+OK Logged in, 1 message.\r\n')[1]!;
  assert.ok(reply.startsWith('+OK Message follows.\r\nSubject: big'), JSON.stringify(reply));
  assert.ok(!reply.includes('-ERR') && !reply.endsWith('\r\n.\r\n'), JSON.stringify(reply.slice(-40)));
  assert.ok(await allSessionsOver(p));
});

test('maxConnectionsPerIp 2: the third is refused with [SYS/TEMP]; a freed slot is taken again', T, async () => {
  const p = await proxyWith({ limits: { maxConnectionsPerIp: 2 } });
  const a = await RawPop3.connect(p.port);
  const b = await RawPop3.connect(p.port);
  const third = await RawPop3.connect(p.port);
  assert.equal(third.greeting, '-ERR [SYS/TEMP] Too many connections from your address, try again later.');
  await third.waitClose();
  a.destroy();
  for (let i = 0; i < 100; i++) {
    const again = await RawPop3.connect(p.port);
    const admitted = again.greeting.startsWith('+OK');
    again.destroy();
    if (admitted) break;
    assert.ok(i < 99, 'the slot was never freed');
    await sleep(10);
  }
  assert.deepEqual(p.events.refused.slice(0, 1), ['per-ip']);
  b.destroy();
});

test('a shutdown ends every session with [SYS/TEMP] and removes nothing', T, async () => {
  const p = await proxyWith({});
  const c = await RawPop3.login(p.port, 'alice', 'alice-pw');
  assert.match(await c.command('DELE 1'), /^\+OK/);
  const idle = await RawPop3.connect(p.port);
  await p.close();
  await c.waitClose();
  await idle.waitClose();
  for (const x of [c, idle]) assert.equal(lastLine(x), '-ERR [SYS/TEMP] Server is shutting down, try again later.');
  assert.equal(p.store.messages('alice').length, 1);
});
