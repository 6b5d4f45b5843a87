/**
 * The session's listing (src/imap/listing-sync.ts): a kept listing, the process's own or the
 * replicas' shared one, serves only as far as the state SELECT reports proves it; only new
 * messages' sizes are fetched; what changed is written back for the next session, what was
 * taken unchanged from the replicas is not.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { MailboxObject } from 'imapflow';
import winston from 'winston';
import { BackendSteps } from '../../src/imap/backend-step.js';
import type { SharedListings } from '../../src/imap/listing-store.js';
import { ListingSync, selectedState } from '../../src/imap/listing-sync.js';
import { SnapshotCache, type CachedMailbox } from '../../src/imap/snapshot-cache.js';
import { MaildropError } from '../../src/maildrop/errors.js';
import { FakeImap, stepConnection } from './fake-imap.js';

const T = { timeout: 30_000 };
const quiet = winston.createLogger({ silent: true });
const KEY = 'imap://host:993/alice/INBOX';

/** The replicas' listings, in memory. */
class Shared implements SharedListings {
  readonly kept = new Map<string, CachedMailbox>();
  writes = 0;
  async get(key: string) {
    return this.kept.get(key);
  }
  set(key: string, listing: CachedMailbox) {
    this.writes++;
    this.kept.set(key, listing);
  }
}

function sync(imap: FakeImap, cache: SnapshotCache, shared?: Shared) {
  const steps = new BackendSteps({ timeoutMs: 1000 }, stepConnection(imap.client));
  return new ListingSync({ client: imap.client }, steps, cache, shared, KEY, quiet);
}

async function login(imap: FakeImap, cache: SnapshotCache, shared?: Shared) {
  const listing = sync(imap, cache, shared);
  imap.calls.length = 0;
  const state = selectedState(await imap.mailboxOpen('INBOX'), 'INBOX');
  imap.calls.length = 0;
  return { listing, kept: await listing.load(state) };
}

const sizes = (listing: CachedMailbox) => [...listing.sizes];
const uids = (listing: CachedMailbox) => [...listing.uids];

test('SELECT\'s state: a read-only mailbox or one without UIDVALIDITY cannot be served', T, () => {
  const select = (over: Partial<MailboxObject>) =>
    ({ path: 'INBOX', uidValidity: 5n, uidNext: 9, exists: 3, ...over }) as MailboxObject;
  assert.deepEqual(selectedState(select({ highestModseq: 12n }), 'INBOX'), {
    uidValidity: 5n,
    uidNext: 9,
    exists: 3,
    highestModseq: 12n,
  });
  const permanent = (e: unknown) => e instanceof MaildropError && e.kind === 'permanent';
  assert.throws(() => selectedState(select({ readOnly: true }), 'INBOX'), permanent);
  const noValidity = select({ uidValidity: undefined as unknown as bigint });
  assert.throws(() => selectedState(noValidity, 'Box'), /the mail server sent no UIDVALIDITY for Box/);
  // Courier sends no UIDNEXT: unknown, and so it proves nothing.
  assert.equal(selectedState(select({ uidNext: undefined as unknown as number }), 'INBOX').uidNext, undefined);
  assert.equal(selectedState(select({ uidNext: 0 }), 'INBOX').uidNext, undefined);
  assert.equal(selectedState(select({ exists: undefined as unknown as number }), 'INBOX').exists, 0);
});

test('the first login lists everything with the flags, kept in the process and for the replicas', T, async () => {
  const imap = new FakeImap({ highestModseq: 30n });
  imap.add(10, 20, 30);
  imap.messages[1]!.flags.add('\\Deleted');
  const cache = new SnapshotCache(100);
  const shared = new Shared();
  const { kept } = await login(imap, cache, shared);
  assert.deepEqual(imap.calls, ['FETCH 1:* uid size flags']);
  assert.deepEqual(uids(kept), [1, 2, 3]);
  assert.deepEqual(sizes(kept), [10, 20, 30]);
  assert.deepEqual([...kept.deleted!], [2]);
  assert.equal(cache.get(KEY), kept);
  assert.equal(shared.writes, 1);
});

test('an unchanged mailbox: no command at all, the flags known from the kept listing', T, async () => {
  const imap = new FakeImap({ highestModseq: 30n });
  imap.add(10, 20, 30);
  const cache = new SnapshotCache(100);
  await login(imap, cache);
  const { kept } = await login(imap, cache);
  assert.deepEqual(imap.calls, []);
  assert.deepEqual(sizes(kept), [10, 20, 30]);
  assert.notEqual(kept.deleted, undefined);
});

test('new messages: every UID searched, only the new ones\' sizes fetched; kept flags prove nothing', T, async () => {
  const imap = new FakeImap({ capabilities: ['ESEARCH'], highestModseq: 30n });
  imap.add(10, 20, 30);
  const cache = new SnapshotCache(100);
  await login(imap, cache);
  imap.messages.shift();
  imap.add(40, 50);
  const { kept } = await login(imap, cache);
  assert.deepEqual(imap.calls, ['SEARCH {"all":true}', 'FETCH 4:5 uid size']);
  assert.deepEqual(uids(kept), [2, 3, 4, 5]);
  assert.deepEqual(sizes(kept), [20, 30, 40, 50]);
  assert.equal(kept.deleted, undefined, 'EXISTS and UIDNEXT changed: the kept flags prove nothing');
});

test('a message expunged between the search and the fetch is not part of the session', T, async () => {
  const imap = new FakeImap();
  imap.add(10, 20);
  const cache = new SnapshotCache(100);
  await login(imap, cache);
  imap.add(30, 40);
  const fetchAll = imap.fetchAll.bind(imap);
  imap.fetchAll = async (range, query) => {
    imap.messages.splice(2, 1);
    return fetchAll(range, query);
  };
  const { kept } = await login(imap, cache);
  assert.deepEqual(uids(kept), [1, 2, 4]);
  assert.deepEqual(sizes(kept), [10, 20, 40]);
});

test('the replicas\' listing serves a process that has none; taken unchanged, it is not written back', T, async () => {
  const imap = new FakeImap({ highestModseq: 30n });
  imap.add(10, 20, 30);
  const shared = new Shared();
  await login(imap, new SnapshotCache(100), shared);
  const { kept } = await login(imap, new SnapshotCache(100), shared);
  assert.deepEqual(imap.calls, []);
  assert.deepEqual(sizes(kept), [10, 20, 30]);
  assert.equal(shared.writes, 1);
  // Grown since: the new listing is written for the next replica.
  imap.add(40);
  await login(imap, new SnapshotCache(100), shared);
  assert.deepEqual(imap.calls, ['SEARCH {"all":true}', 'FETCH 4 uid size']);
  assert.equal(shared.writes, 2);
});

test('a kept listing of another UIDVALIDITY is never used', T, async () => {
  const shared = new Shared();
  const before = new FakeImap({ uidValidity: 1n });
  before.add(10, 20);
  await login(before, new SnapshotCache(100), shared);
  const after = new FakeImap({ uidValidity: 2n });
  after.add(11, 21);
  const { kept } = await login(after, new SnapshotCache(100), shared);
  assert.deepEqual(after.calls, ['FETCH 1:* uid size flags']);
  assert.deepEqual(sizes(kept), [11, 21]);
});

test('an empty mailbox is not listed and not shared', T, async () => {
  const imap = new FakeImap();
  const shared = new Shared();
  const { kept } = await login(imap, new SnapshotCache(100), shared);
  assert.deepEqual(imap.calls, []);
  assert.equal(kept.uids.length, 0);
  assert.equal(shared.writes, 0);
});

test('true sizes learned in the session are kept, and shared once when it ends', T, async () => {
  const imap = new FakeImap();
  imap.add(10, 20);
  const cache = new SnapshotCache(100);
  const shared = new Shared();
  const { listing } = await login(imap, cache, shared);
  listing.learnSize(2, 25);
  listing.learnSize(1, 10);
  assert.deepEqual(sizes(cache.get(KEY)!), [10, 25]);
  listing.share();
  listing.share();
  assert.equal(shared.writes, 2, 'once at login, once for the learned size');
  assert.deepEqual(sizes(shared.kept.get(KEY)!), [10, 25]);
  // Nothing learned: nothing written.
  const again = await login(imap, cache, shared);
  again.listing.learnSize(1, 10);
  again.listing.share();
  assert.equal(shared.writes, 3);
});
