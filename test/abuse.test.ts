/**
 * The abuse limits, each on a proxy where it is set small: connections in all and per address,
 * failed logins per connection, the growing delay before a failed login is answered (per
 * address), protocol errors per connection, and the time a connection has to log in.
 *
 * Linux routes all of 127.0.0.0/8 to the loopback interface, so a client bound to 127.0.0.2 is
 * "another address" for the proxy.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import type { AbuseLimits } from '../src/config/options.js';
import { NO_LOGIN_PENALTY, startDovecot, type Dovecot, type TestUser } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { startProxy, type TestProxy } from './support/proxy.js';

const alice: TestUser = { name: 'alice', password: 'alice-abuse-pw' };
const bob: TestUser = { name: 'bob', password: 'bob-abuse-pw' };
const OTHER_ADDRESS = '127.0.0.2';

let dovecot: Dovecot;
const proxies: TestProxy[] = [];

before(async () => {
  dovecot = await startDovecot({
    users: [alice, bob],
    extraConfig: NO_LOGIN_PENALTY,
  });
  await dovecot.deliver('alice', 'Subject: one\r\nMessage-ID: <1@abuse>\r\n\r\nbody\r\n');
  await dovecot.deliver('bob', 'Subject: one\r\nMessage-ID: <2@abuse>\r\n\r\nbody\r\n');
}, { timeout: 120_000 });

after(async () => {
  for (const p of proxies) await p.close();
  await dovecot?.stop();
}, { timeout: 60_000 });

async function proxyWith(limits: Partial<AbuseLimits>, idleTimeoutMs?: number): Promise<TestProxy> {
  const p = await startProxy({ imapPort: dovecot.imapPort, limits, logLevel: 'info', ...(idleTimeoutMs ? { idleTimeoutMs } : {}) });
  proxies.push(p);
  return p;
}

/** Connects from `localAddress` and reads the first line (a greeting, or a refusal). */
function connectFrom(port: number, localAddress: string): Promise<RawPop3> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress });
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.off('error', reject);
      const client = new (RawPop3 as unknown as new (s: net.Socket) => RawPop3)(socket);
      client.readLine().then((line) => {
        client.greeting = line;
        resolve(client);
      }, reject);
    });
  });
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Connects until the greeting is +OK (the server may need a moment to see a close). */
async function connectWhenAdmitted(port: number, localAddress = '127.0.0.1', timeoutMs = 5000): Promise<RawPop3> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const c = await connectFrom(port, localAddress);
    if (c.greeting.startsWith('+OK')) return c;
    c.destroy();
    if (Date.now() > deadline) throw new Error(`still refused after ${timeoutMs} ms: ${c.greeting}`);
    await sleep(50);
  }
}

async function assertRefusedAndClosed(c: RawPop3, what: string): Promise<void> {
  assert.match(c.greeting, /^-ERR \[SYS\/TEMP\] /, what);
  await c.waitClose(5000);
  assert.equal(c.unread().length, 0, `${what}: nothing after the refusal`);
}

async function login(c: RawPop3, u: TestUser): Promise<void> {
  assert.match(await c.command(`USER ${u.name}`), /^\+OK/);
  assert.match(await c.command(`PASS ${u.password}`, 30_000), /^\+OK/);
}

/** Milliseconds until a wrong password is answered (asserting it is refused). */
async function timedFailure(c: RawPop3, u: TestUser, guess: string): Promise<number> {
  assert.match(await c.command(`USER ${u.name}`), /^\+OK/);
  const started = Date.now();
  assert.match(await c.command(`PASS ${guess}`, 30_000), /^-ERR \[AUTH\]/);
  return Date.now() - started;
}

// ---------------------------------------------------------------------------------------------
// Connection counts

test('maxConnections 3: the fourth connection gets -ERR [SYS/TEMP] and is closed; a freed slot is reused', { timeout: 120_000 }, async () => {
  const p = await proxyWith({ maxConnections: 3 });
  const open = [await RawPop3.connect(p.port), await RawPop3.connect(p.port), await connectFrom(p.port, OTHER_ADDRESS)];
  for (const c of open) assert.match(c.greeting, /^\+OK/);
  const fourth = await connectFrom(p.port, OTHER_ADDRESS);
  await assertRefusedAndClosed(fourth, 'fourth connection');
  const fifth = await RawPop3.connect(p.port);
  await assertRefusedAndClosed(fifth, 'fifth connection');
  // The admitted ones are unaffected.
  for (const c of open) assert.match(await c.command('NOOP'), /^-ERR/);
  await login(open[0]!, alice);
  assert.match(await open[0]!.command('STAT'), /^\+OK 1 /);

  open[1]!.destroy();
  const again = await connectWhenAdmitted(p.port);
  assert.match(again.greeting, /^\+OK/);
  await login(again, bob);
  assert.match(await again.command('QUIT'), /^\+OK/);
  assert.match(await open[0]!.command('QUIT'), /^\+OK/);
  for (const c of [open[2]!, again]) c.destroy();
});

test('maxConnectionsPerIp 2: a third from 127.0.0.1 is refused, one from 127.0.0.2 is admitted', { timeout: 120_000 }, async () => {
  const p = await proxyWith({ maxConnectionsPerIp: 2 });
  const a = [await RawPop3.connect(p.port), await RawPop3.connect(p.port)];
  const third = await RawPop3.connect(p.port);
  await assertRefusedAndClosed(third, 'third from 127.0.0.1');
  const other = await connectFrom(p.port, OTHER_ADDRESS);
  assert.match(other.greeting, /^\+OK/, 'from 127.0.0.2');
  await login(other, alice);
  assert.match(await other.command('STAT'), /^\+OK 1 /);
  assert.match(await other.command('QUIT'), /^\+OK/);
  // A slot freed on 127.0.0.1 can be taken again.
  a[0]!.destroy();
  const again = await connectWhenAdmitted(p.port);
  assert.match(await again.command('CAPA'), /^\+OK/);
  for (const c of [a[1]!, other, again]) c.destroy();
});

// ---------------------------------------------------------------------------------------------
// Failed logins

test('maxAuthFailures 2: the second failed login is answered, then the connection is closed', { timeout: 120_000 }, async () => {
  const p = await proxyWith({ maxAuthFailures: 2, authFailDelayMs: 0 });
  const c = await RawPop3.connect(p.port);
  await timedFailure(c, alice, 'wrong-1');
  assert.match(await c.command('CAPA'), /^\+OK/, 'open after one failure');
  await c.readMultiline();
  await timedFailure(c, alice, 'wrong-2');
  await c.waitClose(5000);
  assert.equal(c.unread().length, 0);

  // SASL failures count the same way.
  const s = await RawPop3.connect(p.port);
  const plain = (pw: string) => Buffer.from(`\0${alice.name}\0${pw}`).toString('base64');
  assert.match(await s.command(`AUTH PLAIN ${plain('wrong-3')}`, 30_000), /^-ERR \[AUTH\]/);
  assert.match(await s.command(`USER ${alice.name}`), /^\+OK/);
  assert.match(await s.command('PASS wrong-4', 30_000), /^-ERR \[AUTH\]/);
  await s.waitClose(5000);

  // Nobody is locked out: the right password on a new connection works at once.
  const ok = await RawPop3.connect(p.port);
  await login(ok, alice);
  assert.match(await ok.command('QUIT'), /^\+OK/);
  ok.destroy();
});

test('authFailDelayMs 2000: failures from one address are answered later and later, up to the limit; other addresses are not slowed', { timeout: 120_000 }, async (t) => {
  const p = await proxyWith({ authFailDelayMs: 2000, maxAuthFailures: 100 });
  const times: number[] = [];
  // One connection per failure: the delay belongs to the address, not to the connection.
  for (let i = 1; i <= 4; i++) {
    const c = await RawPop3.connect(p.port);
    times.push(await timedFailure(c, alice, `wrong-${i}`));
    c.destroy();
  }
  assert.ok(Math.max(times[1]!, times[2]!) > times[0]! + 200, `later failures are slower: ${times.join(', ')} ms`);
  assert.ok(times[3]! > times[0]! + 200, `later failures are slower: ${times.join(', ')} ms`);
  for (const t of times) assert.ok(t < 2000 + 2500, `no failure waits much past 2 s: ${times.join(', ')} ms`);

  // While 127.0.0.1 waits for its next answer, 127.0.0.2 logs in without delay.
  const slow = await RawPop3.connect(p.port);
  const slowFailure = timedFailure(slow, alice, 'wrong-5');
  const other = await connectFrom(p.port, OTHER_ADDRESS);
  const started = Date.now();
  await login(other, bob);
  const took = Date.now() - started;
  const fifth = await slowFailure;
  t.diagnostic(`failures from 127.0.0.1: ${[...times, fifth].join(', ')} ms; login from ${OTHER_ADDRESS}: ${took} ms`);
  assert.ok(fifth < 2000 + 2500, `capped: ${fifth} ms`);
  assert.ok(took < 1500, `login from ${OTHER_ADDRESS} took ${took} ms while 127.0.0.1 was being slowed (${fifth} ms)`);
  // Its own first failure gets the short delay, not 127.0.0.1's.
  const otherFailure = await connectFrom(p.port, OTHER_ADDRESS);
  const own = await timedFailure(otherFailure, alice, 'wrong-other');
  assert.ok(own < fifth, `first failure from ${OTHER_ADDRESS}: ${own} ms, fifth from 127.0.0.1: ${fifth} ms`);
  assert.match(await other.command('QUIT'), /^\+OK/);
  for (const c of [slow, other, otherFailure]) c.destroy();
});

// ---------------------------------------------------------------------------------------------
// Protocol errors

test('maxErrors 3: after three protocol errors in a row the connection is closed with a final -ERR', { timeout: 120_000 }, async () => {
  const p = await proxyWith({ maxErrors: 3 });
  const c = await RawPop3.connect(p.port);
  assert.match(await c.command('XYZZY'), /^-ERR/);
  // A good command ends the run: the count starts again.
  assert.match(await c.command('CAPA'), /^\+OK/);
  await c.readMultiline();
  assert.match(await c.command('USER'), /^-ERR Wrong number/);
  assert.match(await c.command('STAT'), /^-ERR STAT is not allowed/);
  assert.match(await c.command('RETR 1'), /^-ERR .*Too many errors, closing connection\.$/);
  await c.waitClose(5000);
  assert.equal(c.unread().length, 0, 'the final -ERR is the last thing sent');

  // Pipelined errors: the same limit, and nothing answered after the final -ERR.
  const d = await RawPop3.connect(p.port);
  d.write('FOO\r\nBAR 1\r\nBAZ\r\nQUX\r\nNOOP\r\nDELE 1\r\nCAPA\r\n');
  await d.waitClose(5000);
  const lines = d.unread().toString('latin1').split('\r\n').filter((l) => l.length > 0);
  assert.equal(lines.length, 3, JSON.stringify(lines));
  for (const l of lines) assert.match(l, /^-ERR/);
  assert.match(lines[2]!, /Too many errors/);
});

test('maxErrors 3: unknown and refused commands between good ones never close the connection', { timeout: 120_000 }, async () => {
  const p = await proxyWith({ maxErrors: 3 });
  const c = await RawPop3.connect(p.port);
  await login(c, alice);
  // As old clients do: an RFC 1725 command or an extension the server lacks, before each good one.
  for (let i = 1; i <= 12; i++) {
    assert.match(await c.command('XTND XMIT'), /^-ERR Unknown command/);
    assert.match(await c.command('RETR 999'), /^-ERR No such message/);
    assert.match(await c.command('NOOP'), /^\+OK/);
  }
  assert.match(await c.command('LAST'), /^\+OK 0$/);
  assert.match(await c.command('QUIT'), /^\+OK/);
  await c.waitClose(5000);
});

// ---------------------------------------------------------------------------------------------
// Time to log in

test('authTimeoutMs 1000: a connection that does not log in is closed after about a second', { timeout: 120_000 }, async () => {
  const p = await proxyWith({ authTimeoutMs: 1000 }, 60_000);
  const started = Date.now();

  const idle = await RawPop3.connect(p.port);
  const partial = await RawPop3.connect(p.port);
  const chatty = await RawPop3.connect(p.port);
  const fast = await RawPop3.connect(p.port);
  // A line that never ends; then commands that are answered but never log in.
  const drip = setInterval(() => {
    if (!partial.closed) partial.write('U');
  }, 100);
  const chat = setInterval(() => {
    if (!chatty.closed) chatty.write('CAPA\r\n');
  }, 150);
  let closedAfter: number[];
  try {
    await login(fast, alice);
    closedAfter = await Promise.all([idle, partial, chatty].map((c) => c.waitClose(6000).then(() => Date.now() - started)));
  } finally {
    clearInterval(drip);
    clearInterval(chat);
  }
  for (const ms of closedAfter) assert.ok(ms >= 800, `closed after ${closedAfter.join(', ')} ms`);
  const lastLine = (c: RawPop3) => c.received().toString('latin1').trimEnd().split('\r\n').pop() ?? '';
  for (const [name, c] of [['idle', idle], ['partial line', partial], ['commands without login', chatty]] as const) {
    assert.match(lastLine(c), /^-ERR/, `${name}: ${JSON.stringify(c.received().toString('latin1').slice(-200))}`);
  }

  // The one that logged in in time is still there well after the deadline.
  await sleep(1500);
  assert.equal(fast.closed, false);
  assert.match(await fast.command('STAT'), /^\+OK 1 /);
  assert.match(await fast.command('QUIT'), /^\+OK/);
  fast.destroy();
});

test('authTimeoutMs 1000: a login still being checked at the deadline ends with a final -ERR, not a silent drop', { timeout: 120_000 }, async () => {
  // An IMAP server that greets and then never answers: the login is still in progress when the
  // authentication deadline passes.
  const backendSockets = new Set<net.Socket>();
  const silent = net.createServer((s) => {
    backendSockets.add(s);
    s.on('error', () => undefined);
    s.write('* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR AUTH=PLAIN] ready\r\n');
  });
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  const p = await startProxy({
    imapPort: (silent.address() as net.AddressInfo).port,
    limits: { authTimeoutMs: 1000 },
    backendTimeoutMs: 15_000,
    logLevel: 'info',
  });
  proxies.push(p);
  try {
    const c = await RawPop3.connect(p.port);
    const started = Date.now();
    assert.match(await c.command(`USER ${alice.name}`), /^\+OK/);
    c.send(`PASS ${alice.password}`);
    await c.waitClose(8000);
    const took = Date.now() - started;
    const received = c.received().toString('latin1');
    const last = received.trimEnd().split('\r\n').pop() ?? '';
    assert.ok(took < 6000, `closed after ${took} ms (the backend timeout is 15 s)`);
    assert.match(last, /^-ERR/, `the connection must end with a reason; received ${JSON.stringify(received)}`);
  } finally {
    for (const s of backendSockets) s.destroy();
    await new Promise<void>((r) => silent.close(() => r()));
  }
});

test('authTimeoutMs: a logged-in session is then subject to the idle timeout only', { timeout: 120_000 }, async () => {
  const p = await proxyWith({ authTimeoutMs: 1000 }, 2500);
  const c = await RawPop3.connect(p.port);
  await login(c, bob);
  // Kept busy past the auth deadline: not closed.
  for (let i = 0; i < 4; i++) {
    await sleep(500);
    assert.match(await c.command('NOOP'), /^\+OK/);
  }
  // Then silent: the idle timeout ends it.
  const silent = Date.now();
  await c.waitClose(8000);
  assert.ok(Date.now() - silent >= 2000, `closed after ${Date.now() - silent} ms of silence`);
});
