/**
 * The kept mailbox listings shared by replicas in Redis (src/shared/listing-store.ts), against a
 * real Redis and a real Dovecot:
 * - the store: a listing written by one replica is read by another, under a hashed key that
 *   expires; the byte cap deletes the least recently used listings (reads count as use) and
 *   keeps its count right, also over listings that expired by themselves; what is over the
 *   message limit or the whole cap is not written; a late or absent Redis is a miss, at once
 *   or within the deadline, and a late one is not taken for an absent one;
 * - through two proxies sharing one Redis (their locks in one process, so that logins go on
 *   while Redis is away): the second proxy's first login starts from the first's listing (no
 *   `FETCH 1:*`), a mailbox changed in between is listed right from it, the true sizes one
 *   learned from an Exchange-like server reach the other, and with Redis away or holding
 *   garbage the listings come from the backend, still byte for byte what Dovecot's POP3 says.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import type { Redis } from 'ioredis';
import { mailboxKeyOf } from '../src/imap/imap-maildrop.js';
import type { CachedMailbox } from '../src/imap/snapshot-cache.js';
import { MemoryLockRegistry } from '../src/lock/memory-lock-registry.js';
import { createLogger } from '../src/logging/logger.js';
import { decodeListing, encodeListing } from '../src/shared/listing-codec.js';
import { ENTRY_OVERHEAD, INDEX_KEY, listingKey, RedisListings, SIZES_KEY, TOTAL_KEY, type RedisListingsOptions } from '../src/shared/listing-store.js';
import { KEY_PREFIX, RedisLink } from '../src/shared/redis-link.js';
import { FULL_FETCH, startCommandRelay, type CommandRelay } from './support/command-relay.js';
import { startDovecot, withMailbox, type Dovecot } from './support/dovecot.js';
import { estimateSize, startExchangeRelay, type ExchangeRelay } from './support/exchange-relay.js';
import { RawPop3 } from './support/pop3-client.js';
import { startProxy, type TestProxy } from './support/proxy.js';
import { startRedis, type TestRedis } from './support/redis.js';
import { listenRelay, type RelayServer } from './support/tcp-relay.js';

let redis: TestRedis;
const links: RedisLink[] = [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const quiet = () =>
  createLogger({
    level: 'warn',
    format: 'text',
    stream: new Writable({
      write(_chunk, _enc, done) {
        done();
      },
    }),
  });

function link(url = redis.url, commandTimeoutMs = 2000): RedisLink {
  const made = new RedisLink({ url, commandTimeoutMs }, quiet());
  links.push(made);
  return made;
}

async function ready(l: RedisLink): Promise<void> {
  for (let i = 0; i < 100 && !l.status.isUp; i++) await sleep(20);
  assert.ok(l.status.isUp, 'Redis link up');
}

/** A replica's link to the test Redis, once connected. */
async function upLink(): Promise<RedisLink> {
  const made = link();
  await ready(made);
  return made;
}

const DEFAULTS: RedisListingsOptions = { maxMessages: 100_000, ttlMs: 7 * 24 * 3600 * 1000, maxBytes: 256 * 1024 * 1024, readDeadlineMs: 200 };

function listing(count: number, first = 1, sizeBase = 1000): CachedMailbox {
  const uids = Uint32Array.from({ length: count }, (_, i) => first + i);
  return {
    state: { uidValidity: 1234n, uidNext: first + count, exists: count, highestModseq: 77n },
    uids,
    sizes: Float64Array.from(uids, (uid) => sizeBase + uid),
    deleted: new Set([first]),
  };
}

const sizeOf = (l: CachedMailbox) => encodeListing(l)!.length + ENTRY_OVERHEAD;

let admin: Redis;

before(async () => {
  redis = await startRedis();
  const l = link();
  await ready(l);
  admin = l.client;
}, { timeout: 120_000 });

after(async () => {
  for (const l of links) await l.close();
  await redis?.stop();
}, { timeout: 60_000 });

async function flush(): Promise<void> {
  await admin.flushdb();
}

/** What the index says, checked against the listings really in Redis. */
async function indexState(): Promise<{ members: string[]; total: number }> {
  const members = await admin.zrange(INDEX_KEY, '0', '-1');
  const total = Number((await admin.get(TOTAL_KEY)) ?? 0);
  let counted = 0;
  for (const member of members) {
    const value = await admin.getBuffer(member);
    assert.ok(value, `indexed listing ${member} exists`);
    assert.equal(Number(await admin.hget(SIZES_KEY, member)), value.length + ENTRY_OVERHEAD);
    counted += value.length + ENTRY_OVERHEAD;
  }
  assert.equal(total, counted, 'the total is the sum of the listings indexed');
  return { members, total };
}

test('a listing written by one replica is read by another, under a hashed key that expires, with no user name in Redis', { timeout: 120_000 }, async () => {
  await flush();
  const one = new RedisListings(await upLink(), DEFAULTS);
  const other = new RedisListings(await upLink(), DEFAULTS);
  const key = 'imap://mail.example.com:993/alice%40example.com/INBOX';
  assert.equal(await other.get(key), undefined, 'a miss');
  const kept = listing(500);
  assert.equal(await one.write(key, kept), 0);
  assert.deepEqual(await other.get(key), kept);
  const keys = (await admin.keys(`${KEY_PREFIX}*`)).sort();
  assert.deepEqual(keys, [INDEX_KEY, SIZES_KEY, TOTAL_KEY, listingKey(key)].sort());
  assert.match(listingKey(key), /^pop3-imap-proxy:listing:[0-9a-f]{64}$/);
  for (const k of keys) {
    const ttl = await admin.pttl(k);
    assert.ok(ttl > DEFAULTS.ttlMs - 60_000 && ttl <= DEFAULTS.ttlMs, `${k} expires by itself (${ttl} ms)`);
  }
  const dump = Buffer.concat(await Promise.all([admin.getBuffer(listingKey(key)), admin.getBuffer(TOTAL_KEY)]).then((v) => v.filter((b): b is Buffer => b !== null)));
  assert.ok(!dump.includes('alice') && !keys.join().includes('alice'));
  // fire and forget: set never rejects, and the next get sees it.
  const changed = listing(501);
  one.set(key, changed);
  for (let i = 0; i < 50 && (await other.get(key))?.uids.length !== 501; i++) await sleep(20);
  assert.deepEqual(await other.get(key), changed);
  await indexState();
});

test('bounded: past the byte cap the least recently used listings go (a read counts as use), and the count stays right', { timeout: 120_000 }, async () => {
  await flush();
  const each = sizeOf(listing(100));
  const store = new RedisListings(await upLink(), { ...DEFAULTS, maxBytes: 3 * each + 10 });
  // Redis's clock has millisecond steps: a pause between uses keeps their order strict.
  for (const name of ['m1', 'm2', 'm3']) {
    assert.equal(await store.write(name, listing(100)), 0);
    await sleep(5);
  }
  assert.equal((await indexState()).total, 3 * each);
  assert.ok(await store.get('m1'), 'm1 read: now the most recently used');
  await sleep(5);
  assert.equal(await store.write('m4', listing(100)), 1, 'one listing deleted to make room');
  assert.equal(await store.get('m2'), undefined, 'the least recently used went');
  for (const name of ['m1', 'm3', 'm4']) assert.ok(await store.get(name), `${name} kept`);
  let state = await indexState();
  assert.equal(state.members.length, 3);
  assert.equal(state.total, 3 * each);
  // Rewritten larger: room is made, and its old size is not counted twice.
  await sleep(5);
  const bigger = listing(200);
  assert.equal(await store.write('m4', bigger), 1);
  state = await indexState();
  assert.ok(state.total <= 3 * each + 10, `${state.total} within the cap`);
  assert.deepEqual(await store.get('m4'), bigger);
  // Larger than the whole cap: not written, and the older listing under its key is gone too.
  assert.equal(await store.write('m4', listing(2000)), -1);
  assert.equal(await store.get('m4'), undefined);
  await indexState();
  // More messages than the process keeps: not written at all.
  const small = new RedisListings(await upLink(), { ...DEFAULTS, maxMessages: 50 });
  assert.equal(await small.write('m5', listing(51)), undefined);
  assert.equal(await admin.exists(listingKey('m5')), 0);
});

test('listings that expired by themselves leave the index and the count', { timeout: 120_000 }, async () => {
  await flush();
  const store = new RedisListings(await upLink(), { ...DEFAULTS, ttlMs: 600 });
  await store.write('a', listing(10));
  await sleep(400);
  await store.write('b', listing(20));
  await sleep(400);
  // 'a' lived 600 ms from its write; 'b' and the index keys still live.
  assert.equal(await admin.exists(listingKey('a')), 0);
  await store.write('c', listing(30));
  const state = await indexState();
  assert.deepEqual(state.members.sort(), [listingKey('b'), listingKey('c')].sort());
  assert.equal(state.total, sizeOf(listing(20)) + sizeOf(listing(30)));
});

test('garbage under a listing key is a miss, and a good listing replaces it', { timeout: 120_000 }, async () => {
  await flush();
  const store = new RedisListings(await upLink(), DEFAULTS);
  await admin.set(listingKey('g'), Buffer.from([1, 2, 3, 4, 5]));
  assert.equal(await store.get('g'), undefined);
  await store.write('g', listing(3));
  assert.deepEqual(await store.get('g'), listing(3));
  await indexState();
});

/** A relay to Redis that can stop passing anything on, as a Redis that hangs. */
async function freezableRelay(port: number): Promise<{ relay: RelayServer; freeze(on: boolean): void }> {
  let frozen = false;
  const relay = await listenRelay(port, '127.0.0.1', (client, upstream) => {
    client.on('data', (d: Buffer) => {
      if (!frozen) upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      if (!frozen) client.write(d);
    });
  });
  return { relay, freeze: (on) => (frozen = on) };
}

test('a Redis that answers late is a miss within the deadline, and is not taken for a Redis that is away', { timeout: 120_000 }, async () => {
  await flush();
  const frozen = await freezableRelay(redis.port);
  try {
    const slow = link(`redis://127.0.0.1:${frozen.relay.port}/0`, 5000);
    await ready(slow);
    const store = new RedisListings(slow, DEFAULTS);
    await store.write('late', listing(10));
    // Answered in time while Redis is quick (a machine busy with other tests may miss once).
    let got: unknown;
    for (let i = 0; i < 5 && got === undefined; i++) got = await store.get('late');
    assert.ok(got, 'a quick Redis answers within the deadline');
    frozen.freeze(true);
    const started = performance.now();
    assert.equal(await store.get('late'), undefined);
    const waited = performance.now() - started;
    assert.ok(waited >= 190 && waited < 600, `gave up after ${Math.round(waited)} ms`);
    assert.equal(slow.status.state, 'up', 'a late answer does not mark Redis down');
    store.set('late', listing(11));
  } finally {
    await frozen.relay.close();
  }
});

test('a Redis that is away is a miss at once, and a write to it is dropped quietly', { timeout: 120_000 }, async () => {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  const away = link(`redis://127.0.0.1:${port}/0`);
  const store = new RedisListings(away, DEFAULTS);
  const started = performance.now();
  assert.equal(await store.get('k'), undefined);
  assert.ok(performance.now() - started < 150, 'no wait for a Redis that is not there');
  store.set('k', listing(5));
  await assert.rejects(store.write('k', listing(5)));
});

// ---------------------------------------------------------------------------------------------
// Through two proxies sharing one Redis.

let dovecot: Dovecot;
let relay: CommandRelay;
let exchange: ExchangeRelay;
const proxies: TestProxy[] = [];
const alice = { name: 'alice', password: 'alice-secret' };
const bob = { name: 'bob', password: 'bob-secret' };

async function proxyOn(imapPort: number, locks: MemoryLockRegistry): Promise<TestProxy> {
  const proxy = await startProxy({ imapPort, lockRedis: { url: redis.url, ttlMs: 60_000 }, locks, logLevel: 'debug' });
  proxies.push(proxy);
  return proxy;
}

let a: TestProxy;
let b: TestProxy;

test('through two proxies: setup', { timeout: 120_000 }, async () => {
  await flush();
  dovecot = await startDovecot();
  relay = await startCommandRelay(dovecot.imapPort);
  exchange = await startExchangeRelay(dovecot.imapPort);
  // One lock registry for both, so that logins go on while Redis is away (locks are not tested here).
  const locks = new MemoryLockRegistry();
  a = await proxyOn(relay.port, locks);
  b = await proxyOn(relay.port, locks);
  for (let i = 1; i <= 40; i++) await dovecot.deliver('alice', `Subject: m${i}\n\n${'line\n'.repeat(i)}`);
});

after(async () => {
  for (const p of proxies) await p.close();
  await relay?.close();
  await exchange?.close();
  await dovecot?.stop();
}, { timeout: 60_000 });

/** STAT, LIST and UIDL of one session; QUIT. */
async function listed(port: number, user = alice): Promise<string> {
  const c = await RawPop3.login(port, user.name, user.password);
  let text = (await c.command('STAT')).split(' ').slice(0, 3).join(' ');
  for (const command of ['LIST', 'UIDL']) {
    assert.match(await c.command(command), /^\+OK/);
    text += `\n${(await c.readMultiline()).toString('latin1')}`;
  }
  assert.match(await c.command('QUIT'), /^\+OK/);
  await c.waitClose();
  return text;
}

/** One login through `proxy`, checked against Dovecot's own POP3; the commands it sent the backend. */
async function session(proxy: TestProxy): Promise<string[]> {
  const mark = relay.mark();
  const proxied = await listed(proxy.port);
  const sent = relay.since(mark);
  assert.equal(proxied, await listed(dovecot.pop3Port), 'the same as Dovecot\'s POP3');
  return sent;
}

const fullFetches = (lines: string[]) => lines.filter((l) => FULL_FETCH.test(l)).length;
const searches = (lines: string[]) => lines.filter((l) => / UID SEARCH /i.test(l)).length;
const sizeFetches = (lines: string[]) => lines.filter((l) => / UID FETCH \S+ \(UID RFC822\.SIZE\)/i.test(l));

test('the second proxy\'s first login starts from the first\'s listing; a mailbox changed since is listed right from it', { timeout: 120_000 }, async () => {
  const first = await session(a);
  assert.equal(fullFetches(first), 1, 'a cold login lists everything');
  const key = listingKey(mailboxKeyOf({ host: '127.0.0.1', port: relay.port, mailbox: 'INBOX' }, 'alice'));
  for (let i = 0; i < 50 && (await admin.exists(key)) === 0; i++) await sleep(20);
  const kept = decodeListing((await admin.getBuffer(key))!)!;
  assert.equal(kept.uids.length, 40);

  const second = await session(b);
  assert.equal(fullFetches(second), 0, 'no FETCH 1:* on the other proxy');
  assert.equal(searches(second), 0);
  assert.deepEqual(sizeFetches(second), []);
  assert.match(b.log(), /Listing from the listing kept in Redis, no message added or removed/);

  // Two new messages, one expunged, one flagged \Deleted.
  await dovecot.deliver('alice', 'Subject: new 1\n\nnew\n');
  await dovecot.deliver('alice', 'Subject: new 2\n\nnewer\n');
  await withMailbox(dovecot, alice, async (imap) => {
    await imap.messageDelete('5');
    await imap.messageFlagsAdd('7', ['\\Deleted']);
  });
  const third = await session(a);
  assert.equal(fullFetches(third), 0);
  assert.equal(sizeFetches(third).length, 1, 'only the new messages\' sizes');
  assert.match(sizeFetches(third)[0]!, / UID FETCH 41:42 /);
  // b's own listing is out of date, the one in Redis is not: nothing to ask but the SELECT.
  const fourth = await session(b);
  assert.equal(fullFetches(fourth) + searches(fourth) + sizeFetches(fourth).length, 0, fourth.join(' | '));
});

test('the true sizes one proxy learned from an Exchange-like server reach the other at the end of the session', { timeout: 120_000 }, async () => {
  const c = await proxyOn(exchange.port, new MemoryLockRegistry());
  const d = await proxyOn(exchange.port, new MemoryLockRegistry());
  const bodies = ['Subject: b1\r\n\r\none\r\n', 'Subject: b2\r\n\r\ntwo two\r\n', 'Subject: b3\r\n\r\nthree three three\r\n'];
  for (const body of bodies) await dovecot.deliver('bob', body);
  const sizes = bodies.map((body) => Buffer.byteLength(body));

  const first = await RawPop3.login(c.port, bob.name, bob.password);
  assert.match(await first.command('LIST 2'), new RegExp(`^\\+OK 2 ${estimateSize(sizes[1]!)}$`));
  assert.match(await first.command('RETR 2'), /^\+OK/);
  await first.readMultiline();
  assert.match(await first.command('QUIT'), /^\+OK/);
  await first.waitClose();

  const mark = exchange.commands.length;
  const second = await RawPop3.login(d.port, bob.name, bob.password);
  assert.match(await second.command('LIST'), /^\+OK/);
  const list = (await second.readMultiline()).toString('latin1').trim().split('\r\n');
  assert.deepEqual(list, [`1 ${estimateSize(sizes[0]!)}`, `2 ${sizes[1]}`, `3 ${estimateSize(sizes[2]!)}`], 'the learned size on the other proxy');
  assert.match(await second.command('QUIT'), /^\+OK/);
  await second.waitClose();
  const sent = exchange.commands.slice(mark);
  assert.equal(fullFetches(sent), 0, sent.join(' | '));
});

test('Redis away, or holding garbage: the listings come from the process or the backend, still right, and are shared again once it is back', { timeout: 120_000 }, async () => {
  const key = listingKey(mailboxKeyOf({ host: '127.0.0.1', port: relay.port, mailbox: 'INBOX' }, 'alice'));
  await admin.set(key, Buffer.from('not a listing'));
  await dovecot.deliver('alice', 'Subject: after garbage\n\nx\n');
  const afterGarbage = await session(b);
  assert.equal(fullFetches(afterGarbage), 0, 'from b\'s own listing');
  for (let i = 0; i < 50 && decodeListing((await admin.getBuffer(key))!) === undefined; i++) await sleep(20);
  assert.ok(decodeListing((await admin.getBuffer(key))!), 'the garbage replaced by a listing');

  const port = redis.port;
  await redis.stop();
  try {
    await dovecot.deliver('alice', 'Subject: while away\n\ny\n');
    const started = performance.now();
    const local = await session(a);
    assert.equal(fullFetches(local), 0, 'from a\'s own listing');
    const fresh = await proxyOn(relay.port, new MemoryLockRegistry());
    const cold = await session(fresh);
    assert.equal(fullFetches(cold), 1, 'no listing anywhere: everything from the backend');
    assert.ok(performance.now() - started < 20_000);
  } finally {
    redis = await startRedis(port);
  }
  for (let i = 0; i < 300 && !/reachable again/.test(a.log()); i++) await sleep(50);
  assert.match(a.log(), /Redis at \S+ is reachable again/);
  await ready(links[0]!);
  await dovecot.deliver('alice', 'Subject: back\n\nz\n');
  const again = await session(a);
  assert.equal(fullFetches(again), 0);
  for (let i = 0; i < 50 && (await admin.exists(key)) === 0; i++) await sleep(20);
  assert.equal(await admin.exists(key), 1, 'written to the Redis that came back');
});
