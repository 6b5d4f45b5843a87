/**
 * The deletion ledger (src/imap/deletion-ledger.ts): a session takes back exactly the \Deleted
 * flags it set, never one another client set before it, and asks the server about a message's
 * earlier flag only when the listing did not tell, and only once.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DeletionLedger } from '../../src/imap/deletion-ledger.js';

const T = { timeout: 30_000 };

test('the listing told the flags: nothing is asked, and a flag set before is never ours', T, () => {
  const ledger = new DeletionLedger();
  ledger.listed([1, 2, 3, 4], new Set([2]));
  assert.deepEqual(ledger.unknown([1, 2, 3]), []);
  ledger.flagging([1, 2, 3]);
  assert.deepEqual(ledger.oursAmong([1, 2, 3, 4]), [1, 3]);
  assert.equal(ledger.size, 2);
});

test('the listing knew no message was flagged: every flag the session stores is its own', T, () => {
  const ledger = new DeletionLedger();
  ledger.listed([1, 2], new Set());
  assert.deepEqual(ledger.unknown([1, 2]), []);
  ledger.flagging([2]);
  assert.deepEqual(ledger.oursAmong([1, 2]), [2]);
});

test('the listing did not tell: each UID is asked about once, before its first flag', T, () => {
  const ledger = new DeletionLedger();
  ledger.listed([1, 2, 3, 4], undefined);
  assert.deepEqual(ledger.unknown([1, 2]), [1, 2]);
  // The server says UID 2 carried \Deleted already (another client flagged it).
  ledger.answered([1, 2], [2]);
  ledger.flagging([1, 2]);
  assert.deepEqual(ledger.oursAmong([1, 2]), [1]);
  // Asked already, ours already, or flagged before: none of them is asked again.
  assert.deepEqual(ledger.unknown([1, 2, 3]), [3]);
  ledger.answered([3], []);
  assert.deepEqual(ledger.unknown([3]), []);
});

test('a flag taken back at RSET is no longer ours; flagged again, it is ours again without asking', T, () => {
  const ledger = new DeletionLedger();
  ledger.listed([5, 6], undefined);
  ledger.answered(ledger.unknown([5, 6]), []);
  ledger.flagging([5, 6]);
  ledger.forget([5]);
  assert.deepEqual(ledger.oursAmong([5, 6]), [6]);
  assert.equal(ledger.size, 1);
  assert.deepEqual(ledger.unknown([5]), [], 'its earlier flag is known: it had none');
  ledger.flagging([5]);
  assert.deepEqual(ledger.oursAmong([5, 6]), [5, 6]);
});

test('takeAll hands over every flag of ours once; clear leaves none to take back', T, () => {
  const ledger = new DeletionLedger();
  ledger.listed([1, 2, 3], new Set([3]));
  ledger.flagging([1, 2, 3]);
  assert.deepEqual(ledger.takeAll().sort(), [1, 2]);
  assert.deepEqual(ledger.takeAll(), []);
  assert.equal(ledger.size, 0);
  ledger.flagging([1]);
  ledger.clear();
  assert.equal(ledger.size, 0);
  assert.deepEqual(ledger.oursAmong([1, 2, 3]), []);
});
