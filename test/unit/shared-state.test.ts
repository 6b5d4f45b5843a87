/**
 * The pure parts of the state replicas share: the failed-login throttle and LOGIN-DELAY over a
 * store with times to live (here an in-memory one on a fake clock), their fallback to the
 * process's own records, the hand-over of answers to the session's synchronous questions, the
 * once-per-change log of Redis coming and going, and the --redis / --lock-redis flags.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseConfig } from '../../src/config/options.js';
import { AuthThrottle, failureDelay, FORGET_AFTER_MS } from '../../src/limits/auth-throttle.js';
import { LoginChecks } from '../../src/limits/login-checks.js';
import { LoginDelay } from '../../src/limits/login-delay.js';
import { SharedAuthThrottle } from '../../src/limits/shared-auth-throttle.js';
import { SharedLoginDelay } from '../../src/limits/shared-login-delay.js';
import { MaildropError } from '../../src/maildrop/errors.js';
import type { Credentials, Maildrop, MaildropProvider } from '../../src/maildrop/maildrop.js';
import type { ExpiringStore } from '../../src/shared/expiring-store.js';
import { describeRedisUrl, LinkStatus } from '../../src/shared/link-status.js';
import { sharedKey } from '../../src/shared/redis-link.js';

function clock(start = 1_000_000) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

/** Redis as these modules use it: counters and marks that expire, on the fake clock. */
class FakeStore implements ExpiringStore {
  broken = false;
  private readonly keys = new Map<string, { value: number; expires: number }>();

  constructor(private readonly now: () => number) {}

  async increment(name: string, ttlMs: number): Promise<number> {
    this.check();
    const value = (this.live(name)?.value ?? 0) + 1;
    this.keys.set(name, { value, expires: this.now() + ttlMs });
    return value;
  }

  async mark(name: string, ttlMs: number): Promise<void> {
    this.check();
    this.keys.set(name, { value: 1, expires: this.now() + ttlMs });
  }

  async remaining(name: string): Promise<number> {
    this.check();
    const entry = this.live(name);
    return entry ? entry.expires - this.now() : 0;
  }

  flush(): void {
    this.keys.clear();
  }

  private live(name: string) {
    const entry = this.keys.get(name);
    return entry && entry.expires > this.now() ? entry : undefined;
  }

  private check(): void {
    if (this.broken) throw new Error('connect ECONNREFUSED');
  }
}

test('failure delays: 0.25 s doubling per recent failure, capped', { timeout: 30_000 }, () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 100].map((n) => failureDelay(n, 8000)), [250, 500, 1000, 2000, 4000, 8000, 8000, 8000]);
  assert.equal(failureDelay(3, 0), 0);
  assert.equal(failureDelay(0, 8000), 250);
});

test('three replicas sharing one store slow a guesser spread over them as one replica would', { timeout: 30_000 }, async () => {
  const c = clock();
  const store = new FakeStore(c.now);
  const replicas = [0, 1, 2].map(() => new SharedAuthThrottle(store, new AuthThrottle(8000, c.now), 8000));
  const shared: number[] = [];
  const local: number[] = [];
  for (let i = 0; i < 9; i++) {
    const noted = replicas[i % 3]!.failed('192.0.2.1');
    local.push(noted.local);
    shared.push(await noted.shared);
    c.advance(shared.at(-1)!);
  }
  assert.deepEqual(shared, [250, 500, 1000, 2000, 4000, 8000, 8000, 8000, 8000]);
  // What each replica alone would have said: a third of the failures, a third of the growth.
  assert.deepEqual(local, [250, 250, 250, 500, 500, 500, 1000, 1000, 1000]);
  // Another address is not slowed by it.
  assert.equal(await replicas[0]!.failed('192.0.2.2').shared, 250);
  // After 15 quiet minutes the record is gone everywhere.
  c.advance(FORGET_AFTER_MS);
  assert.equal(await replicas[1]!.failed('192.0.2.1').shared, 250);
});

test('the throttle falls back to the process while the store fails, and never forgives what the process saw', { timeout: 30_000 }, async () => {
  const c = clock();
  const store = new FakeStore(c.now);
  let fallbacks = 0;
  const throttle = new SharedAuthThrottle(store, new AuthThrottle(8000, c.now), 8000, () => fallbacks++);
  assert.equal(await throttle.failed('a').shared, 250);
  store.broken = true;
  assert.equal(await throttle.failed('a').shared, 500, "the process's own second failure");
  assert.equal(await throttle.failed('a').shared, 1000);
  assert.equal(fallbacks, 2);
  // Redis is back, but restarted empty: the larger of the two counts holds.
  store.broken = false;
  store.flush();
  assert.equal(await throttle.failed('a').shared, 2000);
  assert.equal(fallbacks, 2);
});

test('LOGIN-DELAY holds on every replica sharing the store, and expires with its time to live', { timeout: 30_000 }, async () => {
  const c = clock();
  const store = new FakeStore(c.now);
  const a = new SharedLoginDelay(store, new LoginDelay(30_000, c.now), 30_000);
  const b = new SharedLoginDelay(store, new LoginDelay(30_000, c.now), 30_000);
  assert.equal(await b.wait('alice'), 0);
  a.loggedIn('alice');
  await Promise.resolve();
  c.advance(10_500);
  assert.equal(await b.wait('alice'), 20, 'on the other replica: 19.5 s left, rounded up');
  assert.equal(await a.wait('alice'), 20);
  assert.equal(await b.wait('bob'), 0, 'other mailboxes are not affected');
  c.advance(19_500);
  assert.equal(await b.wait('alice'), 0);
});

test('LOGIN-DELAY falls back to the process while the store fails', { timeout: 30_000 }, async () => {
  const c = clock();
  const store = new FakeStore(c.now);
  const fallbacks: number[] = [];
  const a = new SharedLoginDelay(store, new LoginDelay(30_000, c.now), 30_000, () => fallbacks.push(c.now()));
  store.broken = true;
  a.loggedIn('alice');
  assert.equal(await a.wait('alice'), 30, 'its own record');
  await new Promise((r) => setImmediate(r));
  assert.equal(fallbacks.length, 2, 'the mark and the check that could not reach the store');
});

/** A provider that refuses every password but "right", for mailboxes named after the user. */
function fakeProvider(): MaildropProvider {
  return {
    authenticate: async (credentials: Credentials) => {
      if (!('password' in credentials) || credentials.password !== 'right') throw new MaildropError('credentials', 'wrong password');
      return { mailboxKey: `mbox:${credentials.user}` } as Maildrop;
    },
  };
}

/** What a session does with the provider and the policy (src/pop3/commands/authorization.ts). */
async function login(checks: LoginChecks, provider: MaildropProvider, password: string, address = '192.0.2.1') {
  try {
    const maildrop = await provider.authenticate({ user: 'alice', password }, { address, port: 1 });
    const wait = await checks.loginWait(maildrop.mailboxKey);
    if (wait > 0) return `wait ${wait}`;
    checks.loggedIn(maildrop.mailboxKey);
    return 'ok';
  } catch {
    return `delay ${await checks.authFailed(address)}`;
  }
}

test('the session\'s questions get the answers the replicas share', { timeout: 30_000 }, async () => {
  const c = clock();
  const failures = new FakeStore(c.now);
  const logins = new FakeStore(c.now);
  const replicas = [0, 1, 2].map(() => {
    const checks = new LoginChecks({ authFailDelayMs: 8000, loginDelayMs: 60_000, shared: { failures, logins }, now: c.now });
    return { checks, provider: fakeProvider() };
  });
  const answers: string[] = [];
  for (let i = 0; i < 6; i++) answers.push(await login(replicas[i % 3]!.checks, replicas[i % 3]!.provider, 'wrong'));
  assert.deepEqual(answers, ['delay 250', 'delay 500', 'delay 1000', 'delay 2000', 'delay 4000', 'delay 8000']);
  assert.equal(await login(replicas[0]!.checks, replicas[0]!.provider, 'right'), 'ok');
  c.advance(1000);
  await Promise.resolve();
  assert.equal(await login(replicas[1]!.checks, replicas[1]!.provider, 'right'), 'wait 59');
  assert.equal(await login(replicas[2]!.checks, replicas[2]!.provider, 'right'), 'wait 59');
  c.advance(59_000);
  assert.equal(await login(replicas[2]!.checks, replicas[2]!.provider, 'right'), 'ok');
});

test('without shared state the process answers', { timeout: 30_000 }, async () => {
  const c = clock();
  const checks = new LoginChecks({ authFailDelayMs: 8000, loginDelayMs: undefined, now: c.now });
  const provider = fakeProvider();
  assert.deepEqual([await login(checks, provider, 'x'), await login(checks, provider, 'x')], ['delay 250', 'delay 500']);
  assert.equal(await login(checks, provider, 'right'), 'ok');
  assert.equal(await login(checks, provider, 'right'), 'ok');
});

test('Redis going away and coming back is logged once each way, however often it fails in between', { timeout: 30_000 }, () => {
  const c = clock();
  const lines: string[] = [];
  const changes: boolean[] = [];
  const status = new LinkStatus('redis://cache:6379/0', { info: (m) => lines.push(`info ${m}`), warn: (m) => lines.push(`warn ${m}`) }, (up) => changes.push(up), c.now);
  assert.equal(status.state, 'connecting');
  status.up();
  status.up();
  for (let i = 0; i < 50; i++) status.down(`connect ECONNREFUSED (attempt ${i})`);
  assert.equal(status.reason, 'connect ECONNREFUSED (attempt 49)');
  c.advance(12_340);
  status.up();
  assert.deepEqual(changes, [true, false, true]);
  assert.equal(lines.length, 3, lines.join('\n'));
  assert.match(lines[0]!, /^info Shared state .* in Redis at redis:\/\/cache:6379\/0/);
  assert.match(lines[1]!, /^warn Redis at redis:\/\/cache:6379\/0 is unreachable \(connect ECONNREFUSED \(attempt 0\)\): logins are refused with \[SYS\/TEMP\]/);
  assert.match(lines[2]!, /^info Redis at .* is reachable again after 12\.3 s/);
});

test('a Redis URL is logged without its password; keys hide names', { timeout: 30_000 }, () => {
  assert.equal(describeRedisUrl('redis://:s3cret@cache.example:6380/2'), 'redis://cache.example:6380/2');
  assert.equal(describeRedisUrl('rediss://user:pw@cache'), 'rediss://cache');
  assert.doesNotMatch(describeRedisUrl('not a url :s3cret@'), /s3cret/);
  const key = sharedKey('lock', 'imap://h:993/alice/INBOX');
  assert.match(key, /^pop3-imap-proxy:lock:[0-9a-f]{64}$/);
  assert.doesNotMatch(key, /alice/);
});

test('--redis, and --lock-redis as its old name: one URL for all shared state; two different ones are refused', { timeout: 30_000 }, async () => {
  const base = ['--imap-host', 'h'];
  assert.equal((await parseConfig(base))!.redis, undefined);
  assert.deepEqual((await parseConfig([...base, '--redis', 'redis://r:6379/0']))!.redis, { url: 'redis://r:6379/0', lockTtlMs: 60_000 });
  assert.deepEqual((await parseConfig([...base, '--lock-redis', 'redis://r:6379/0', '--lock-ttl', '5']))!.redis, { url: 'redis://r:6379/0', lockTtlMs: 5000 });
  assert.deepEqual((await parseConfig([...base, '--redis', 'redis://r/0', '--lock-redis', 'redis://r/0']))!.redis, { url: 'redis://r/0', lockTtlMs: 60_000 });
  await assert.rejects(parseConfig([...base, '--redis', 'redis://a/0', '--lock-redis', 'redis://b/0']), /--redis and --lock-redis \(its old name\) differ/);
  await assert.rejects(parseConfig([...base, '--redis', 'http://a']), /--redis: http:\/\/a is not a redis:\/\/ or rediss:\/\/ URL/);
  await assert.rejects(parseConfig([...base, '--lock-redis', 'nope']), /--lock-redis: nope is not/);
});
