/**
 * A session whose shared mailbox lock is lost ends, as Dovecot's does when its lock refresh
 * fails: at once if idle, with -ERR [SYS/TEMP]; it commits nothing and releases nothing it no
 * longer holds. A lock simply gone from a Redis that restarted empty, while renewals kept
 * succeeding, is taken again and the session goes on. Real Redis, real Dovecot; the store is
 * read straight from Dovecot.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, beforeEach, test } from 'node:test';
import { Redis } from 'ioredis';
import { mailboxKeyOf } from '../src/imap/imap-maildrop.js';
import { sharedKey } from '../src/shared/redis-link.js';
import { emptyMailbox, mailboxState, startDovecot, type Dovecot } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { settled, startProxy, type TestProxy } from './support/proxy.js';
import { startRedis, type TestRedis } from './support/redis.js';

const TEST = { timeout: 90_000 };
const HOOK = { timeout: 60_000 };
const alice = { name: 'alice', password: 'alice-secret' };
let dovecot: Dovecot;
let redis: TestRedis;

before(async () => {
  dovecot = await startDovecot();
  redis = await startRedis();
}, HOOK);

after(async () => {
  await redis?.stop();
  await dovecot?.stop();
}, HOOK);

beforeEach(async () => {
  await emptyMailbox(dovecot, alice);
  for (let i = 1; i <= 3; i++) await dovecot.deliver('alice', `Subject: message ${i}\nMessage-ID: <l${i}@locks>\n\nbody ${i}\n`);
}, HOOK);

const lockKey = () => sharedKey('lock', mailboxKeyOf({ host: '127.0.0.1', port: dovecot.imapPort, mailbox: 'INBOX' }, alice.name));

async function withProxy(ttlMs: number, run: (proxy: TestProxy) => Promise<void>): Promise<void> {
  const proxy = await startProxy({ imapPort: dovecot.imapPort, logLevel: 'info', metrics: true, lockRedis: { url: redis.url, ttlMs } });
  try {
    await run(proxy);
    await settled(proxy);
  } finally {
    await proxy.close();
  }
}

async function metric(proxy: TestProxy, series: string): Promise<number | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${proxy.server.metricsAddress!.port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

async function storeIsIntact(): Promise<void> {
  const state = await mailboxState(dovecot, alice);
  assert.deepEqual(state.map((m) => m.subject), ['message 1', 'message 2', 'message 3'], 'nothing removed');
  assert.equal(state.some((m) => m.deleted), false, 'nothing flagged \\Deleted');
}

test('the lock found held by another session: the next command gets [SYS/TEMP], nothing is committed, the other holder keeps its lock', TEST, async () => {
  const direct = new Redis(redis.url);
  try {
    await withProxy(1500, async (proxy) => {
      const c = await RawPop3.login(proxy.port, alice.name, alice.password);
      assert.match(await c.command('DELE 1'), /^\+OK/);
      // Another session's token, as when the key expired during a partition and was taken.
      assert.equal(await direct.set(lockKey(), 'another-holder', 'PX', 60_000), 'OK');
      // The next renewal (every 500 ms) finds it: the session ends at once, being idle.
      await sleep(1200);
      const reply = await c.command('QUIT', 10_000).catch((err: Error) => err.message);
      assert.match(c.received().toString('latin1'), /-ERR \[SYS\/TEMP\] The mailbox lock was lost; nothing was changed\. Log in again\.\r\n$/);
      assert.doesNotMatch(String(reply), /^\+OK/);
      await c.waitClose(10_000);
      assert.equal(await direct.get(lockKey()), 'another-holder', 'a lock no longer ours is not released');
      assert.equal(await metric(proxy, 'pop3proxy_locks_lost_total{cause="taken"}'), 1);
      assert.match(proxy.log(), /The mailbox lock was lost: another session holds it now/);
      await direct.del(lockKey());
    });
    await storeIsIntact();
  } finally {
    direct.disconnect();
  }
});

test('Redis away for longer than --lock-ttl: the idle session is ended within the TTL, commits nothing', TEST, async () => {
  await withProxy(2000, async (proxy) => {
    const c = await RawPop3.login(proxy.port, alice.name, alice.password);
    assert.match(await c.command('DELE 2'), /^\+OK/);
    const port = redis.port;
    await redis.stop();
    const stoppedAt = performance.now();
    try {
      await c.waitClose(10_000);
      const after = performance.now() - stoppedAt;
      assert.match(c.received().toString('latin1'), /-ERR \[SYS\/TEMP\] The mailbox lock was lost; nothing was changed\. Log in again\.\r\n$/);
      // Renewed every 667 ms: lost between TTL - 667 ms and TTL after the last renewal.
      assert.ok(after >= 1200 && after <= 3000, `ended ${Math.round(after)} ms after Redis stopped`);
      assert.equal(await metric(proxy, 'pop3proxy_locks_lost_total{cause="expired"}'), 1);
    } finally {
      redis = await startRedis(port);
    }
  });
  await storeIsIntact();
});

test('Redis restarted empty within the TTL: the lock is taken again and the session goes on, still exclusive', TEST, async () => {
  await withProxy(8000, async (proxy) => {
    const c = await RawPop3.login(proxy.port, alice.name, alice.password);
    assert.match(await c.command('DELE 3'), /^\+OK/);
    const port = redis.port;
    await redis.stop();
    redis = await startRedis(port);
    const deadline = Date.now() + 8000;
    while (!proxy.log().includes('taken again') && Date.now() < deadline) await sleep(100);
    assert.match(proxy.log(), /A mailbox lock was gone from Redis .*: taken again/);
    const second = await RawPop3.connect(proxy.port);
    await second.command(`USER ${alice.name}`);
    assert.match(await second.command(`PASS ${alice.password}`, 30_000), /^-ERR \[IN-USE\] /);
    second.destroy();
    assert.match(await c.command('STAT'), /^\+OK 2 /);
    assert.match(await c.command('QUIT'), /^\+OK/);
    await c.waitClose();
    assert.equal(await metric(proxy, 'pop3proxy_locks_lost_total{cause="expired"}'), undefined);
  });
  const state = await mailboxState(dovecot, alice);
  assert.deepEqual(state.map((m) => m.subject), ['message 1', 'message 2'], 'the QUIT committed');
});
