/**
 * The kept listings' binary form in Redis (src/shared/listing-codec.ts): what goes in comes
 * back, unknown fields stay unknown, and anything that does not read back exactly is no
 * listing at all.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { CachedMailbox, MailboxState } from '../../src/imap/snapshot-cache.js';
import { decodeListing, encodeListing, LISTING_FORMAT } from '../../src/shared/listing-codec.js';

const state = (over: Partial<MailboxState> = {}): MailboxState => ({ uidValidity: 1_700_000_123n, uidNext: 20_001, exists: 20_000, highestModseq: 987_654_321_012n, ...over });

function listing(count: number, over: Partial<CachedMailbox> = {}, seed = 1): CachedMailbox {
  let x = seed;
  const random = () => ((x = (x * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31);
  const uids = new Uint32Array(count);
  const sizes = new Float64Array(count);
  let uid = 0;
  for (let i = 0; i < count; i++) {
    // Mostly consecutive UIDs with gaps where messages were expunged.
    uid += random() < 0.9 ? 1 : 1 + Math.floor(random() * 500);
    uids[i] = uid;
    sizes[i] = Math.floor(500 + random() ** 3 * 200_000);
  }
  return { state: state({ uidNext: uid + 1, exists: count }), uids, sizes, deleted: new Set([uids[3]!, uids[1]!, uids[count - 1]!].filter((u) => u !== undefined)), ...over };
}

function same(a: CachedMailbox | undefined, b: CachedMailbox): void {
  assert.ok(a, 'decoded');
  assert.deepEqual(a.state, b.state);
  assert.deepEqual([...a.uids], [...b.uids]);
  assert.deepEqual([...a.sizes], [...b.sizes]);
  assert.deepEqual(a.deleted === undefined ? undefined : [...a.deleted].sort((x, y) => x - y), b.deleted === undefined ? undefined : [...b.deleted].sort((x, y) => x - y));
}

test('a listing comes back as it went in: state, UIDs, sizes and \\Deleted flags', { timeout: 30_000 }, () => {
  for (const count of [1, 2, 7, 1000]) {
    const original = listing(count);
    same(decodeListing(encodeListing(original)!), original);
  }
  const empty: CachedMailbox = { state: state({ exists: 0 }), uids: new Uint32Array(0), sizes: new Float64Array(0), deleted: new Set() };
  same(decodeListing(encodeListing(empty)!), empty);
});

test('the extremes of every field survive: 64-bit UIDVALIDITY and HIGHESTMODSEQ, UID 2^32-1, sizes to 2^53-1', { timeout: 30_000 }, () => {
  const original: CachedMailbox = {
    state: { uidValidity: 2n ** 64n - 1n, uidNext: 2 ** 32 - 1, exists: 2 ** 32 - 1, highestModseq: 2n ** 63n - 1n },
    uids: Uint32Array.from([1, 2 ** 31, 2 ** 32 - 2, 2 ** 32 - 1]),
    sizes: Float64Array.from([0, 127, 128, Number.MAX_SAFE_INTEGER]),
    deleted: new Set([2 ** 32 - 1, 1]),
  };
  same(decodeListing(encodeListing(original)!), original);
});

test('unknown fields stay unknown: no UIDNEXT (Courier), no HIGHESTMODSEQ (Exchange), flags not asked', { timeout: 30_000 }, () => {
  const original = listing(50, { state: state({ uidNext: undefined, highestModseq: undefined }), deleted: undefined });
  const back = decodeListing(encodeListing(original)!)!;
  same(back, original);
  assert.equal(back.state.uidNext, undefined);
  assert.equal(back.state.highestModseq, undefined);
  assert.equal(back.deleted, undefined, 'unknown, not "none flagged"');
  // Known to carry no flag is not the same as unknown.
  assert.deepEqual(decodeListing(encodeListing(listing(5, { deleted: new Set() }))!)!.deleted, new Set());
  // A UIDNEXT or HIGHESTMODSEQ of 0 proves nothing either (snapshot-cache's rule): it reads back as unknown.
  const zero = decodeListing(encodeListing(listing(3, { state: state({ uidNext: 0, highestModseq: 0n }) }))!)!;
  assert.equal(zero.state.uidNext, undefined);
  assert.equal(zero.state.highestModseq, undefined);
});

test('20,000 messages of a few KB to 200 KB take about 3 to 4 octets each', { timeout: 30_000 }, () => {
  const big = listing(20_000);
  const octets = encodeListing(big)!.length;
  assert.ok(octets / 20_000 <= 4.5, `${(octets / 20_000).toFixed(2)} octets a message`);
  // The test suite's small messages: consecutive UIDs, sizes under 16 KB: 3 octets.
  const small = listing(20_000, {}, 7);
  small.sizes.fill(2000);
  small.uids.forEach((_, i) => (small.uids[i] = i + 1));
  assert.ok(encodeListing({ ...small, deleted: new Set() })!.length <= 20_000 * 3 + 40);
});

test('what cannot be written faithfully is not written', { timeout: 30_000 }, () => {
  const base = listing(5);
  assert.equal(encodeListing({ ...base, uids: Uint32Array.from([1, 3, 3, 4, 5]) }), undefined, 'UIDs not strictly ascending');
  assert.equal(encodeListing({ ...base, uids: Uint32Array.from([0, 3, 4, 5, 6]) }), undefined, 'UID 0');
  assert.equal(encodeListing({ ...base, sizes: Float64Array.from([1, 2, Number.NaN, 4, 5]) }), undefined, 'a size that is no number');
  assert.equal(encodeListing({ ...base, sizes: Float64Array.from([1, 2, 3.5, 4, 5]) }), undefined);
  assert.equal(encodeListing({ ...base, sizes: Float64Array.from([1, 2, -1, 4, 5]) }), undefined);
  assert.equal(encodeListing({ ...base, sizes: Float64Array.from([1, 2, 3, 4]) }), undefined, 'fewer sizes than UIDs');
  assert.equal(encodeListing({ ...base, state: state({ uidValidity: 2n ** 64n }) }), undefined);
  assert.equal(encodeListing({ ...base, state: state({ uidNext: 2 ** 32 }) }), undefined);
  assert.equal(encodeListing({ ...base, deleted: new Set([0]) }), undefined);
});

test('corrupt input is no listing: another version, truncated, trailing, overlong, out of order, absurd counts', { timeout: 30_000 }, () => {
  const good = encodeListing(listing(100))!;
  assert.ok(decodeListing(good));
  assert.equal(good[0], LISTING_FORMAT);
  const changed = (at: number, value: number) => {
    const copy = Buffer.from(good);
    copy[at] = value;
    return copy;
  };
  assert.equal(decodeListing(changed(0, LISTING_FORMAT + 1)), undefined, 'another version');
  assert.equal(decodeListing(Buffer.alloc(0)), undefined);
  for (const cut of [1, 9, 24, 25, 26, good.length - 1]) assert.equal(decodeListing(good.subarray(0, cut)), undefined, `cut at ${cut}`);
  assert.equal(decodeListing(Buffer.concat([good, Buffer.from([0])])), undefined, 'trailing octets');
  // The message count (offset 25) claims far more than the string holds: refused before any allocation.
  const header = good.subarray(0, 25);
  assert.equal(decodeListing(Buffer.concat([header, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])])), undefined);
  // A zero UID step: two messages with one UID.
  const twoSame = encodeListing({ state: state(), uids: Uint32Array.from([5, 6]), sizes: Float64Array.from([10, 20]), deleted: undefined })!;
  const broken = Buffer.from(twoSame);
  broken[27] = 0;
  assert.equal(decodeListing(broken), undefined);
  // Varints spelled longer than needed, or past 2^53.
  const tiny = (tail: number[]) => Buffer.concat([header, Buffer.from(tail)]);
  assert.ok(decodeListing(tiny([1, 5, 10, 0])), 'one message, UID 5, 10 octets, flags unknown');
  assert.equal(decodeListing(tiny([1, 0x85, 0x00, 10, 0])), undefined, 'an overlong varint');
  assert.equal(decodeListing(tiny([1, 5, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0])), undefined, 'a size past 2^53');
  assert.equal(decodeListing(tiny([1, 5, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0])), undefined, 'a varint past 8 octets');
  assert.equal(decodeListing(tiny([1, 0xff, 0xff, 0xff, 0xff, 0x1f, 10, 0])), undefined, 'a UID past 2^32-1');
  assert.equal(decodeListing(tiny([1, 5, 10, 3, 5, 0])), undefined, 'flagged UIDs not strictly ascending');
  assert.equal(decodeListing(tiny([1, 5, 10, 9, 5])), undefined, 'more flagged UIDs than the string holds');
  // Random damage never throws, and never yields a listing out of order.
  let x = 42;
  for (let i = 0; i < 2000; i++) {
    x = (x * 1_103_515_245 + 12_345) % 2 ** 31;
    const copy = Buffer.from(good);
    copy[26 + (x % (good.length - 26))] ^= 1 + (x >> 8) % 255;
    const back = decodeListing(copy);
    if (back === undefined) continue;
    for (let j = 1; j < back.uids.length; j++) assert.ok(back.uids[j]! > back.uids[j - 1]!);
    assert.equal(back.uids.length, back.sizes.length);
  }
});
