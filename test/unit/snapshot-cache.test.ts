import assert from 'node:assert/strict';
import { test } from 'node:test';
import { learnSize, sameFlags, sameMessages, SnapshotCache, type CachedMailbox, type MailboxState } from '../../src/imap/snapshot-cache.js';

const state = (over: Partial<MailboxState> = {}): MailboxState => ({ uidValidity: 7n, uidNext: 6, exists: 5, highestModseq: 40n, ...over });

test('a mailbox whose UIDVALIDITY, UIDNEXT and EXISTS are all the same holds the same messages', { timeout: 30_000 }, () => {
  assert.equal(sameMessages(state(), state()), true);
  assert.equal(sameMessages(state(), state({ uidNext: 7 })), false, 'an append raises UIDNEXT');
  assert.equal(sameMessages(state(), state({ exists: 4 })), false, 'an expunge lowers EXISTS');
  assert.equal(sameMessages(state(), state({ uidValidity: 8n })), false);
});

test('without UIDNEXT (Courier-IMAP) nothing proves the messages unchanged: an expunge plus an append keeps EXISTS', { timeout: 30_000 }, () => {
  // Session 1 saw 5 messages; one was expunged at its QUIT and one new arrived: EXISTS is 5 again.
  assert.equal(sameMessages(state({ uidNext: undefined }), state({ uidNext: undefined })), false);
  assert.equal(sameMessages(state({ uidNext: 6 }), state({ uidNext: undefined })), false);
  assert.equal(sameMessages(state({ uidNext: undefined }), state({ uidNext: 6 })), false);
  // imapflow could report a missing or broken UIDNEXT as 0: UIDs start at 1, so 0 says nothing either.
  assert.equal(sameMessages(state({ uidNext: 0 }), state({ uidNext: 0 })), false);
});

test('flags count as unchanged only with the same HIGHESTMODSEQ from both sessions (CONDSTORE)', { timeout: 30_000 }, () => {
  assert.equal(sameFlags(state(), state()), true);
  assert.equal(sameFlags(state(), state({ highestModseq: 41n })), false);
  // Exchange Online and Courier lack CONDSTORE.
  assert.equal(sameFlags(state({ highestModseq: undefined }), state({ highestModseq: undefined })), false);
  assert.equal(sameFlags(state({ uidNext: undefined }), state({ uidNext: undefined })), false);
});

const mailbox = (uids: number[], sizes: number[], over: Partial<MailboxState> = {}): CachedMailbox => ({
  state: state(over),
  uids: Uint32Array.from(uids),
  sizes: Float64Array.from(sizes),
  deleted: new Set(),
});

test('learnSize replaces the reported size of one message with the counted one, for that UIDVALIDITY only', { timeout: 30_000 }, () => {
  const cache = new SnapshotCache(100);
  cache.set('k', mailbox([3, 5, 9], [103, 105, 109]));
  cache.learnSize('k', 7n, 5, 100);
  assert.deepEqual([...cache.get('k')!.sizes], [103, 100, 109]);
  cache.learnSize('k', 8n, 9, 1);
  cache.learnSize('k', 7n, 4, 1);
  cache.learnSize('other', 7n, 3, 1);
  assert.deepEqual([...cache.get('k')!.sizes], [103, 100, 109], 'another UIDVALIDITY, an unknown UID or mailbox change nothing');
});

test('learnSize on a listing says whether it changed anything, so that a session shares only sizes it really learned', { timeout: 30_000 }, () => {
  const entry = mailbox([3, 5, 9], [103, 105, 109]);
  assert.equal(learnSize(entry, 7n, 5, 100), true);
  assert.equal(learnSize(entry, 7n, 5, 100), false, 'already known');
  assert.equal(learnSize(entry, 7n, 4, 1), false, 'no such UID');
  assert.equal(learnSize(entry, 8n, 9, 1), false, 'another UIDVALIDITY');
  assert.equal(learnSize(entry, 7n, 9, Number.NaN), false);
  assert.deepEqual([...entry.sizes], [103, 100, 109]);
});
