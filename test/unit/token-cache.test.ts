import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TokenCache, type AccessToken } from '../../src/oauth/token-cache.js';

const MINUTE = 60_000;

/** A token source that counts its calls and answers when told to. */
function source(clock: { now: number }, lifeMs = 60 * MINUTE) {
  let calls = 0;
  const waiting: Array<() => void> = [];
  return {
    get calls() {
      return calls;
    },
    release: () => waiting.splice(0).forEach((go) => go()),
    fetch: (key: string): Promise<AccessToken> => {
      calls++;
      const token = { value: `${key}-${calls}`, expiresAt: clock.now + lifeMs };
      return new Promise((resolve) => waiting.push(() => resolve(token)));
    },
  };
}

test('fifty concurrent asks for one key make one fetch, and all get its token', { timeout: 30_000 }, async () => {
  const clock = { now: 0 };
  const s = source(clock);
  const cache = new TokenCache(s.fetch, () => clock.now);
  const asked = Array.from({ length: 50 }, () => cache.get('a@example.com'));
  s.release();
  const tokens = await Promise.all(asked);
  assert.equal(s.calls, 1);
  assert.deepEqual(new Set(tokens), new Set(['a@example.com-1']));
});

test('a token is kept until 5 minutes before it expires, then fetched again', { timeout: 30_000 }, async () => {
  const clock = { now: 0 };
  const s = source(clock);
  const cache = new TokenCache(s.fetch, () => clock.now);
  const first = cache.get('k');
  s.release();
  assert.equal(await first, 'k-1');
  clock.now = 55 * MINUTE - 1;
  assert.equal(await cache.get('k'), 'k-1');
  clock.now = 55 * MINUTE;
  const renewed = cache.get('k');
  s.release();
  assert.equal(await renewed, 'k-2');
  assert.equal(s.calls, 2);
});

test('a short-lived token is renewed halfway through its life', { timeout: 30_000 }, async () => {
  const clock = { now: 0 };
  const s = source(clock, 4 * MINUTE);
  const cache = new TokenCache(s.fetch, () => clock.now);
  const first = cache.get('k');
  s.release();
  await first;
  clock.now = 2 * MINUTE - 1;
  assert.equal(await cache.get('k'), 'k-1');
  clock.now = 2 * MINUTE;
  const again = cache.get('k');
  s.release();
  assert.equal(await again, 'k-2');
});

test('invalidate drops the refused token, but not a newer one', { timeout: 30_000 }, async () => {
  const clock = { now: 0 };
  const s = source(clock);
  const cache = new TokenCache(s.fetch, () => clock.now);
  let got = cache.get('k');
  s.release();
  const old = await got;
  cache.invalidate('k', old);
  got = cache.get('k');
  s.release();
  const fresh = await got;
  assert.equal(fresh, 'k-2');
  cache.invalidate('k', old);
  assert.equal(await cache.get('k'), 'k-2', 'a late invalidate of the old token keeps the new one');
  assert.equal(s.calls, 2);
});

test('a failed fetch is not kept: the next ask tries again', { timeout: 30_000 }, async () => {
  let calls = 0;
  const cache = new TokenCache(async () => {
    calls++;
    if (calls === 1) throw new Error('token endpoint down');
    return { value: 'ok', expiresAt: 60 * MINUTE };
  }, () => 0);
  await assert.rejects(cache.get('k'), /token endpoint down/);
  assert.equal(await cache.get('k'), 'ok');
  assert.equal(calls, 2);
});

test('keys are independent, and expired tokens of other keys are dropped', { timeout: 30_000 }, async () => {
  const clock = { now: 0 };
  const s = source(clock, 10 * MINUTE);
  const cache = new TokenCache(s.fetch, () => clock.now);
  const a = cache.get('a');
  s.release();
  await a;
  clock.now = 11 * MINUTE;
  const b = cache.get('b');
  s.release();
  assert.equal(await b, 'b-2');
  assert.equal(cache.size, 1);
});
