/**
 * Backend connections kept between sessions (--backend-reuse), against a real Dovecot: only
 * the same user with the same password gets one, a wrong password still gets [AUTH], two users
 * never share, a changed password takes effect within the reuse time, a kept connection serves
 * the very bytes Dovecot's POP3 serves and carries no \Deleted flag of the session that left
 * it, and 0 turns it all off. Backend connections are counted in a relay in front of Dovecot.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { mailboxState, NO_LOGIN_PENALTY, startDovecot, type Dovecot } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { settled, startProxy, type TestProxy, type TestProxyOptions } from './support/proxy.js';
import { startRelay, type TcpRelay } from './support/tcp-relay.js';

const alice = { name: 'alice', password: 'alice-secret' };
const bob = { name: 'bob', password: 'bob-secret' };
const carol = { name: 'carol', password: 'carol-secret' };

let dovecot: Dovecot;
let relay: TcpRelay;

before(async () => {
  dovecot = await startDovecot({ users: [alice, bob, carol], extraConfig: NO_LOGIN_PENALTY });
  for (let i = 0; i < 5; i++) {
    await dovecot.deliver('alice', `Subject: alice ${i}\r\n\r\n${'.line\r\n'.repeat(i + 1)}alice body ${i}\r\n`);
    await dovecot.deliver('bob', `Subject: bob ${i}\r\n\r\nbob body ${i}\r\n`);
    await dovecot.deliver('carol', `Subject: carol ${i}\r\n\r\ncarol body ${i}\r\n`);
  }
  relay = await startRelay(dovecot.imapPort);
}, { timeout: 120_000 });

after(async () => {
  await relay?.close();
  await dovecot?.stop();
}, { timeout: 60_000 });

async function withProxy(options: Partial<TestProxyOptions>, run: (proxy: TestProxy) => Promise<void>): Promise<void> {
  const proxy = await startProxy({ imapPort: relay.port, backendReuseMs: 30_000, logLevel: 'info', ...options });
  try {
    await run(proxy);
  } finally {
    await proxy.close();
  }
}

/** The value of one series of the proxy's metrics, 0 when absent. */
async function metric(proxy: TestProxy, name: string, label: string): Promise<number> {
  const text = await proxy.server.metrics.registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${label}}`));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

const hits = (proxy: TestProxy) => metric(proxy, 'pop3proxy_backend_reuse_total', 'result="hit"');
const misses = (proxy: TestProxy) => metric(proxy, 'pop3proxy_backend_reuse_total', 'result="miss"');

/** Logs in, reads every message and UIDL, QUITs; returns what it read. */
async function session(port: number, user: { name: string; password: string }, before?: (c: RawPop3) => Promise<void>): Promise<{ uidl: string; bodies: Buffer[] }> {
  const c = await RawPop3.connect(port);
  try {
    assert.match(await c.command(`USER ${user.name}`), /^\+OK/);
    assert.match(await c.command(`PASS ${user.password}`), /^\+OK/);
    await before?.(c);
    const uidl = (await c.multiline('UIDL')).body.toString('latin1');
    const count = Number(/^\+OK (\d+)/.exec(await c.command('STAT'))![1]);
    const bodies: Buffer[] = [];
    for (let i = 1; i <= count; i++) {
      const r = await c.multiline(`RETR ${i}`);
      if (r.status.startsWith('+OK')) bodies.push(r.body);
    }
    assert.match(await c.command('QUIT'), /^\+OK/);
    return { uidl, bodies };
  } finally {
    c.destroy();
  }
}

/** The same through Dovecot's own POP3: the reference. */
async function native(user: { name: string; password: string }): Promise<{ uidl: string; bodies: Buffer[] }> {
  return session(dovecot.pop3Port, user);
}

/** Waits until the proxy's sessions are over (the connection is kept once the teardown ran). */
async function idle(proxy: TestProxy): Promise<void> {
  for (let i = 0; i < 200 && proxy.server.activeSessions > 0; i++) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 50));
}

test('the next session of the same login is served by the kept connection, byte for byte as Dovecot serves it', { timeout: 120_000 }, async () => {
  await withProxy({}, async (proxy) => {
    const reference = await native(alice);
    const first = relay.connections;
    const a = await session(proxy.port, alice);
    await idle(proxy);
    const b = await session(proxy.port, alice);
    await idle(proxy);
    const c = await session(proxy.port, alice);
    assert.equal(relay.connections - first, 1, 'one backend connection for three sessions');
    assert.equal(await hits(proxy), 2);
    assert.equal(await misses(proxy), 1);
    for (const got of [a, b, c]) {
      assert.equal(got.uidl, reference.uidl);
      assert.deepEqual(got.bodies, reference.bodies);
    }
  });
});

test('a kept connection sees what the last session removed, and mail that arrived since', { timeout: 120_000 }, async () => {
  await withProxy({}, async (proxy) => {
    await settled(proxy, carol.name, carol.password);
    await idle(proxy);
    const c = await RawPop3.connect(proxy.port);
    await c.command(`USER ${carol.name}`);
    assert.match(await c.command(`PASS ${carol.password}`), /^\+OK Logged in, 5 messages/);
    assert.match(await c.command('DELE 1'), /^\+OK/);
    assert.match(await c.command('QUIT'), /^\+OK/);
    c.destroy();
    await idle(proxy);
    await dovecot.deliver('carol', 'Subject: carol new\r\n\r\nnew\r\n');
    const before = await hits(proxy);
    const again = await session(proxy.port, carol);
    assert.equal(await hits(proxy), before + 1);
    assert.equal(again.bodies.length, 5);
    assert.deepEqual(again, await native(carol));
    const state = await mailboxState(dovecot, carol);
    assert.equal(state.length, 5);
    assert.ok(state.every((m) => !m.deleted));
  });
});

test('a wrong password after a good session gets [AUTH] and never the kept connection', { timeout: 120_000 }, async () => {
  await withProxy({}, async (proxy) => {
    await session(proxy.port, alice);
    await idle(proxy);
    const before = relay.connections;
    const hitsBefore = await hits(proxy);
    const c = await RawPop3.connect(proxy.port);
    await c.command(`USER ${alice.name}`);
    assert.match(await c.command('PASS alice-wrong'), /^-ERR \[AUTH\]/);
    // The wrong password went to the server on a connection of its own.
    assert.equal(relay.connections, before + 1);
    assert.equal(await hits(proxy), hitsBefore);
    c.destroy();
    // The right password still gets the kept connection.
    await session(proxy.port, alice);
    assert.equal(await hits(proxy), hitsBefore + 1);
  });
});

test('two users never share a connection: each gets only what was logged in as them', { timeout: 120_000 }, async () => {
  await withProxy({}, async (proxy) => {
    await session(proxy.port, alice);
    await idle(proxy);
    const before = relay.connections;
    const hitsBefore = await hits(proxy);
    const got = await session(proxy.port, bob);
    assert.equal(relay.connections, before + 1, 'bob logs in on a connection of his own');
    assert.equal(await hits(proxy), hitsBefore);
    assert.deepEqual(got, await native(bob));
    await idle(proxy);
    const aliceAgain = await session(proxy.port, alice);
    assert.deepEqual(aliceAgain, await native(alice));
    assert.equal(await hits(proxy), hitsBefore + 1, 'alice gets her own kept connection back');
  });
});

test('a password changed on the server is honoured once the reuse time since the last login is over', { timeout: 120_000 }, async () => {
  const reuseMs = 1500;
  await withProxy({ backendReuseMs: reuseMs }, async (proxy) => {
    const passwd = join(dovecot.dir, 'passwd');
    const write = (users: { name: string; password: string }[]) => writeFile(passwd, users.map((u) => `${u.name}:{PLAIN}${u.password}::::::\n`).join(''));
    try {
      await session(proxy.port, carol);
      await idle(proxy);
      await write([alice, bob, { name: 'carol', password: 'carol-new' }]);
      // Within the reuse time, the kept connection still serves the old password (documented).
      await session(proxy.port, carol);
      await idle(proxy);
      await new Promise((r) => setTimeout(r, reuseMs + 200));
      const c = await RawPop3.connect(proxy.port);
      await c.command(`USER ${carol.name}`);
      assert.match(await c.command(`PASS ${carol.password}`), /^-ERR \[AUTH\]/);
      c.destroy();
      await session(proxy.port, { name: 'carol', password: 'carol-new' });
    } finally {
      await write([alice, bob, carol]);
    }
  });
});

test('a session that ends abnormally after DELE leaves no \\Deleted flag on the connection it leaves behind', { timeout: 120_000 }, async () => {
  await withProxy({ policy: { flagOnDele: true } }, async (proxy) => {
    await session(proxy.port, bob);
    await idle(proxy);
    const c = await RawPop3.connect(proxy.port);
    await c.command(`USER ${bob.name}`);
    assert.match(await c.command(`PASS ${bob.password}`), /^\+OK/);
    assert.match(await c.command('DELE 2'), /^\+OK/);
    assert.ok((await mailboxState(dovecot, bob)).some((m) => m.deleted), '--flag-on-dele stored the flag');
    c.destroy();
    await idle(proxy);
    assert.ok((await mailboxState(dovecot, bob)).every((m) => !m.deleted), 'the flag was taken back');
    const hitsBefore = await hits(proxy);
    const got = await session(proxy.port, bob);
    assert.equal(await hits(proxy), hitsBefore + 1, 'the clean connection was kept');
    assert.deepEqual(got, await native(bob));
    assert.ok((await mailboxState(dovecot, bob)).every((m) => !m.deleted));
  });
});

test('--backend-reuse 0: every session logs in on a new connection', { timeout: 120_000 }, async () => {
  await withProxy({ backendReuseMs: 0 }, async (proxy) => {
    const before = relay.connections;
    await session(proxy.port, alice);
    await idle(proxy);
    await session(proxy.port, alice);
    assert.equal(relay.connections - before, 2);
    assert.equal(await hits(proxy), 0);
    assert.equal(await misses(proxy), 0);
  });
});

test('a kept connection the server closed meanwhile is replaced by a new login, unnoticed by the client', { timeout: 120_000 }, async () => {
  await withProxy({}, async (proxy) => {
    await session(proxy.port, alice);
    await idle(proxy);
    relay.cutAll();
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(await session(proxy.port, alice), await native(alice));
  });
});
