import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BackoffError, BackoffRegistry, MAX_BACKOFF_MS } from '../../src/imap/backoff.js';
import { MaildropError } from '../../src/maildrop/errors.js';

function clock(start = 1_000_000) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

test('a mailbox backs off for the suggested time, then may be tried again', { timeout: 30_000 }, () => {
  const c = clock();
  const registry = new BackoffRegistry(c.now);
  assert.equal(registry.remaining('a'), 0);
  registry.backOff('a', 5000);
  assert.equal(registry.remaining('a'), 5000);
  assert.equal(registry.remaining('b'), 0, 'other mailboxes are not affected');
  c.advance(4999);
  assert.equal(registry.remaining('a'), 1);
  assert.equal(registry.retryAt('a'), 1_005_000);
  c.advance(1);
  assert.equal(registry.remaining('a'), 0);
  assert.equal(registry.retryAt('a'), undefined);
  assert.equal(registry.size, 0, 'an expired entry is dropped');
});

test('a shorter suggestion does not cut a longer back-off short; a longer one extends it', { timeout: 30_000 }, () => {
  const c = clock();
  const registry = new BackoffRegistry(c.now);
  registry.backOff('a', 10_000);
  registry.backOff('a', 1000);
  assert.equal(registry.remaining('a'), 10_000);
  c.advance(5000);
  registry.backOff('a', 8000);
  assert.equal(registry.remaining('a'), 8000);
});

test('a huge or nonsensical suggestion is capped or ignored', { timeout: 30_000 }, () => {
  const c = clock();
  const registry = new BackoffRegistry(c.now);
  registry.backOff('a', 7 * 24 * 3600 * 1000);
  assert.equal(registry.remaining('a'), MAX_BACKOFF_MS);
  for (const bad of [0, -5, Number.NaN]) registry.backOff('b', bad);
  assert.equal(registry.remaining('b'), 0);
});

test('the registry stays bounded: expired entries go first, then the oldest', { timeout: 30_000 }, () => {
  const c = clock();
  const registry = new BackoffRegistry(c.now, MAX_BACKOFF_MS, 3);
  registry.backOff('old', 10);
  registry.backOff('a', 1000);
  registry.backOff('b', 1000);
  c.advance(20);
  registry.backOff('c', 1000);
  assert.equal(registry.size, 3);
  assert.equal(registry.remaining('old'), 0);
  registry.backOff('d', 1000);
  assert.equal(registry.size, 3);
  assert.equal(registry.remaining('a'), 0, 'the oldest live entry went');
  assert.ok(registry.remaining('d') > 0);
});

test('BackoffError is a temporary MaildropError that says when to retry', { timeout: 30_000 }, () => {
  const err = new BackoffError(12_500, Date.UTC(2025, 0, 1));
  assert.ok(err instanceof MaildropError);
  assert.equal(err.kind, 'temporary');
  assert.equal(err.retryAfterMs, 12_500);
  assert.equal(err.retryAt, Date.UTC(2025, 0, 1) + 12_500);
  assert.match(err.message, /2025-01-01T00:00:12\.500Z \(in 13 s\)/);
});
