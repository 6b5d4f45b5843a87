/**
 * The kept mailbox listings, shared by the replicas in Redis: a user who lands on another
 * replica starts from the listing the last one kept, as if it had been kept there.
 *
 * A listing is one compact binary string (listing-codec.ts) under a hash of the mailbox key, so
 * no user name is in Redis in clear. Whoever reads it checks it against the mailbox as SELECT
 * describes it, as with the process's own listings: Redis only saves work, it is never believed
 * about what the mailbox holds now.
 *
 * Bounded: each listing lives `ttlMs` from its last use; a listing of more messages than the
 * process keeps is not written; and the listings together take at most `maxBytes`, the least
 * recently used going first, kept so by scripts that run in Redis (an index of the listings by
 * last use, their sizes and their total). So listings never fill a Redis that must keep room
 * for the mailbox locks (maxmemory-policy noeviction).
 */
import type { SharedListings } from '../imap/listing-store.js';
import type { CachedMailbox } from '../imap/snapshot-cache.js';
import { decodeListing, encodeListing } from './listing-codec.js';
import { KEY_PREFIX, sharedKey, type RedisLink } from './redis-link.js';

export interface RedisListingsOptions {
  /** A listing of more messages than this is not written (the process's own cache limit). */
  readonly maxMessages: number;
  /** How long a listing lives after its last use (read or written). */
  readonly ttlMs: number;
  /** Octets all listings may take together, counted with ENTRY_OVERHEAD each. */
  readonly maxBytes: number;
  /** Longest wait for a listing at login; past it the login goes on without. */
  readonly readDeadlineMs: number;
}

/** Redis's own cost of one listing beyond its value: its key, and its entries in the index. */
export const ENTRY_OVERHEAD = 400;

const NAMESPACE = 'listing';
/** The listings by time of last use (a sorted set of their keys, in Redis's milliseconds). */
export const INDEX_KEY = `${KEY_PREFIX}listings:used`;
/** The octets counted for each listing (a hash by key). */
export const SIZES_KEY = `${KEY_PREFIX}listings:octets`;
/** The octets counted for all listings together. */
export const TOTAL_KEY = `${KEY_PREFIX}listings:total`;

/**
 * Shared by both scripts: Redis's own time, and the index keys living as long as the listings
 * they describe (every use of a listing gives them `ttl` more too, so they never expire first).
 * Keys: listing, index, sizes, total. The members of the index are listing keys.
 */
const PRELUDE = `
if redis.replicate_commands then redis.replicate_commands() end
local ttl = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function keepIndex(total)
  redis.call('SET', KEYS[4], total, 'PX', ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
`;

/**
 * GET, and the listing's use noted: its time to live renewed, its place in the index moved to
 * now (indexed afresh, with its size, if the index had lost it).
 */
const READ = `${PRELUDE}
local value = redis.call('GET', KEYS[1])
if not value then return false end
local total = tonumber(redis.call('GET', KEYS[4]) or '0')
if not redis.call('ZSCORE', KEYS[2], KEYS[1]) then
  local size = string.len(value) + tonumber(ARGV[2])
  redis.call('HSET', KEYS[3], KEYS[1], size)
  total = total + size
end
redis.call('ZADD', KEYS[2], now, KEYS[1])
redis.call('PEXPIRE', KEYS[1], ttl)
keepIndex(total)
return value
`;

/**
 * SET ... PX, within the byte cap: the listings whose time ran out (gone from Redis by
 * themselves) leave the index first, then the least recently used listings are deleted until
 * this one fits. A listing larger than the whole cap is not written (and an older one under
 * the same key is deleted). Answers the number of listings deleted to make room.
 * ARGV: ttl, overhead, value, cap.
 */
const WRITE = `${PRELUDE}
local overhead = tonumber(ARGV[2])
local cap = tonumber(ARGV[4])
local total = tonumber(redis.call('GET', KEYS[4]) or '0')
local function forget(member)
  local size = redis.call('HGET', KEYS[3], member)
  if size then total = total - tonumber(size) end
  redis.call('HDEL', KEYS[3], member)
  redis.call('ZREM', KEYS[2], member)
end
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl, 'LIMIT', 0, 1000)) do
  forget(member)
end
forget(KEYS[1])
local size = string.len(ARGV[3]) + overhead
local evicted = 0
if size > cap then
  redis.call('DEL', KEYS[1])
  keepIndex(math.max(total, 0))
  return -1
end
while total + size > cap do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not oldest then break end
  redis.call('DEL', oldest)
  forget(oldest)
  evicted = evicted + 1
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ttl)
redis.call('ZADD', KEYS[2], now, KEYS[1])
redis.call('HSET', KEYS[3], KEYS[1], size)
keepIndex(math.max(total + size, 0))
return evicted
`;

/** The Redis key of a mailbox's listing: a hash of the mailbox key. */
export function listingKey(mailboxKey: string): string {
  return sharedKey(NAMESPACE, mailboxKey);
}

export class RedisListings implements SharedListings {
  constructor(
    private readonly link: RedisLink,
    private readonly options: RedisListingsOptions,
  ) {}

  async get(mailboxKey: string): Promise<CachedMailbox | undefined> {
    try {
      const keys = [listingKey(mailboxKey), INDEX_KEY, SIZES_KEY, TOTAL_KEY];
      const value = await this.link.run(
        (c) => c.callBuffer('EVAL', [READ, keys.length, ...keys, String(this.options.ttlMs), String(ENTRY_OVERHEAD)]),
        this.options.readDeadlineMs,
        false,
      );
      return Buffer.isBuffer(value) ? decodeListing(value) : undefined;
    } catch {
      // Redis is away, late or refused: the login lists the mailbox from the backend.
      return undefined;
    }
  }

  set(mailboxKey: string, listing: CachedMailbox): void {
    void this.write(mailboxKey, listing).catch(() => undefined);
  }

  /** Resolves to the listings deleted to make room (-1: this one is over the cap), or undefined when not written. */
  async write(mailboxKey: string, listing: CachedMailbox): Promise<number | undefined> {
    if (listing.uids.length > this.options.maxMessages) return undefined;
    const value = encodeListing(listing);
    if (value === undefined) return undefined;
    const keys = [listingKey(mailboxKey), INDEX_KEY, SIZES_KEY, TOTAL_KEY];
    const args = [String(this.options.ttlMs), String(ENTRY_OVERHEAD), value, String(this.options.maxBytes)];
    return Number(await this.link.run((c) => c.eval(WRITE, keys.length, ...keys, ...args)));
  }
}
