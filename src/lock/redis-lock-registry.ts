/**
 * Mailbox locks shared by every proxy replica, in Redis. A lock is a key set only if absent,
 * holding a random token, with a time to live that the holder keeps renewing. A replica that
 * dies without releasing its locks loses them when the time runs out; release and renewal
 * only touch a key that still holds the holder's own token.
 *
 * A lock not renewed within its time to live may have expired in Redis and been taken by
 * another session, and a lock found holding another token has been: either way it is lost,
 * and the lease says so at once (its `lost` signal), so that the session ends before it could
 * change a mailbox another session has. A key simply gone while renewals kept succeeding is a
 * Redis that restarted empty: nobody else can have had the lock, and it is taken again.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'winston';
import { sharedKey, type RedisLink } from '../shared/redis-link.js';
import type { LockLease, LockLossCause, LockRegistry } from './lock-registry.js';

/** Deletes the key only if it still holds our token. */
const RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";
/**
 * Extends the key's life if it still holds our token (1); takes it again if it is gone, as after
 * a Redis that restarted empty (2); 0 when another session has it.
 */
const RENEW = `local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
if not holder and redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return 2 end
return 0`;

export interface RedisLockOptions {
  /** How long a lock outlives its holder's last renewal. */
  readonly ttlMs: number;
}

export class RedisLockRegistry implements LockRegistry {
  constructor(
    /** The connection the replica's shared state goes through (it owns and closes it). */
    private readonly link: RedisLink,
    private readonly options: RedisLockOptions,
    private readonly logger: Logger,
  ) {}

  async acquire(key: string): Promise<LockLease | undefined> {
    // The same key as before the shared state had more than locks, so mixed versions agree.
    const redisKey = sharedKey('lock', key);
    const token = randomUUID();
    const sentAt = Date.now();
    const taken = await this.link.run((c) => c.set(redisKey, token, 'PX', this.options.ttlMs, 'NX'));
    if (taken !== 'OK') return undefined;
    return new RedisLease(this.link, redisKey, token, this.options.ttlMs, this.logger, sentAt);
  }
}

class RedisLease implements LockLease {
  private readonly lostController = new AbortController();
  private readonly renewal: NodeJS.Timeout;
  /**
   * Fires when the time to live has run out since the last renewal that succeeded, counted from
   * when that renewal was sent: Redis's own expiry is never earlier than this.
   */
  private expiry: NodeJS.Timeout | undefined;
  private released = false;

  constructor(
    private readonly link: RedisLink,
    private readonly key: string,
    private readonly token: string,
    private readonly ttlMs: number,
    private readonly logger: Logger,
    takenAt: number,
  ) {
    this.renewal = setInterval(() => void this.renew(), Math.max(100, ttlMs / 3));
    this.renewal.unref();
    this.arm(takenAt);
  }

  get lost(): AbortSignal {
    return this.lostController.signal;
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    this.stop();
    try {
      await this.link.run((c) => c.eval(RELEASE, 1, this.key, this.token));
    } catch (err) {
      // The lock then ends with its time to live. Redis being away was logged once already.
      const level = this.link.status.isUp ? 'warn' : 'debug';
      this.logger.log(
        level,
        `Releasing a mailbox lock failed; it expires in ${this.ttlMs / 1000} s: ${(err as Error).message}`,
      );
    }
  }

  private async renew(): Promise<void> {
    const sentAt = Date.now();
    let renewed: unknown;
    try {
      renewed = await this.link.run((c) => c.eval(RENEW, 1, this.key, this.token, String(this.ttlMs)));
    } catch (err) {
      // The expiry timer decides when failing renewals have cost the lock.
      const level = this.link.status.isUp ? 'warn' : 'debug';
      this.logger.log(
        level,
        `Renewing a mailbox lock failed (will retry until --lock-ttl runs out): ${(err as Error).message}`,
      );
      return;
    }
    if (this.released || this.lost.aborted) return;
    if (renewed === 0) return this.lose('taken');
    if (renewed === 2)
      this.logger.warn(
        'A mailbox lock was gone from Redis while its session ran and renewals kept succeeding ' +
          '(Redis restarted empty): taken again',
      );
    this.arm(sentAt);
  }

  /** The lock is ours for the time to live from `since` (when the command that set it was sent). */
  private arm(since: number): void {
    clearTimeout(this.expiry);
    this.expiry = setTimeout(() => this.lose('expired'), Math.max(0, since + this.ttlMs - Date.now()));
    this.expiry.unref();
  }

  private lose(cause: LockLossCause): void {
    if (this.released || this.lost.aborted) return;
    this.stop();
    const why =
      cause === 'taken'
        ? 'another session holds it now (it expired while Redis was out of reach)'
        : `it could not be renewed within --lock-ttl (${this.ttlMs / 1000} s)`;
    this.logger.error(`The mailbox lock was lost: ${why}; the session ends without changing the mailbox`, {
      event: 'lock-lost',
      cause,
    });
    this.lostController.abort(cause);
  }

  private stop(): void {
    clearInterval(this.renewal);
    clearTimeout(this.expiry);
  }
}
