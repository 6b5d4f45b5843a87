/**
 * Mailbox locks shared by every proxy replica, in Redis. A lock is a key set only if absent,
 * holding a random token, with a time to live that the holder keeps renewing. A replica that
 * dies without releasing its locks loses them when the time runs out; release and renewal
 * only touch a key that still holds the holder's own token.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'winston';
import { sharedKey, type RedisLink } from '../shared/redis-link.js';
import type { LockLease, LockRegistry } from './lock-registry.js';

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
    const taken = await this.link.run((c) => c.set(redisKey, token, 'PX', this.options.ttlMs, 'NX'));
    if (taken !== 'OK') return undefined;
    const renewal = setInterval(() => void this.renew(redisKey, token), Math.max(100, this.options.ttlMs / 3));
    renewal.unref();
    let released = false;
    return {
      release: async () => {
        if (released) return;
        released = true;
        clearInterval(renewal);
        try {
          await this.link.run((c) => c.eval(RELEASE, 1, redisKey, token));
        } catch (err) {
          // The lock then ends with its time to live. Redis being away was logged once already.
          const level = this.link.status.isUp ? 'warn' : 'debug';
          this.logger.log(level, `Releasing a mailbox lock failed; it expires in ${this.options.ttlMs / 1000} s: ${(err as Error).message}`);
        }
      },
    };
  }

  private async renew(redisKey: string, token: string): Promise<void> {
    try {
      const renewed = await this.link.run((c) => c.eval(RENEW, 1, redisKey, token, String(this.options.ttlMs)));
      if (renewed === 2) this.logger.warn('A mailbox lock was gone from Redis while its session ran (Redis restarted empty, or was out of reach for longer than --lock-ttl): taken again');
      else if (renewed !== 1) this.logger.error('A mailbox lock expired while its session ran and another session took it: two sessions may have the mailbox');
    } catch (err) {
      const level = this.link.status.isUp ? 'warn' : 'debug';
      this.logger.log(level, `Renewing a mailbox lock failed (will retry): ${(err as Error).message}`);
    }
  }
}
