/**
 * Mailbox locks shared by every proxy replica, in Redis. A lock is a key set only if absent,
 * holding a random token, with a time to live that the holder keeps renewing. A replica that
 * dies without releasing its locks loses them when the time runs out; release and renewal
 * only touch a key that still holds the holder's own token.
 */
import { createHash, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Logger } from 'winston';
import type { LockLease, LockRegistry } from './lock-registry.js';

const PREFIX = 'pop3-imap-proxy:lock:';

/** Deletes the key only if it still holds our token. */
const RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";
/** Extends the key's life only if it still holds our token. */
const RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";

export interface RedisLockOptions {
  readonly url: string;
  /** How long a lock outlives its holder's last renewal. */
  readonly ttlMs: number;
  /** Longest wait for Redis on any one command. */
  readonly timeoutMs: number;
}

export class RedisLockRegistry implements LockRegistry {
  private readonly redis: Redis;

  constructor(
    private readonly options: RedisLockOptions,
    private readonly logger: Logger,
  ) {
    this.redis = new Redis(options.url, {
      // A login waits for the lock: fail it quickly ([SYS/TEMP]) rather than queue it while Redis is away.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: options.timeoutMs,
      lazyConnect: false,
    });
    this.redis.on('error', (err: Error) => this.logger.warn(`Lock registry (Redis): ${err.message}`));
  }

  async acquire(key: string): Promise<LockLease | undefined> {
    // Hashed: the key names a user, which Redis (and whoever reads it) need not see.
    const redisKey = PREFIX + createHash('sha256').update(key).digest('hex');
    const token = randomUUID();
    const taken = await this.redis.set(redisKey, token, 'PX', this.options.ttlMs, 'NX');
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
          await this.redis.eval(RELEASE, 1, redisKey, token);
        } catch (err) {
          // The lock then ends with its time to live.
          this.logger.warn(`Releasing a mailbox lock failed; it expires in ${this.options.ttlMs / 1000} s: ${(err as Error).message}`);
        }
      },
    };
  }

  async close(): Promise<void> {
    await this.redis.quit().catch(() => this.redis.disconnect());
  }

  private async renew(redisKey: string, token: string): Promise<void> {
    try {
      const renewed = await this.redis.eval(RENEW, 1, redisKey, token, String(this.options.ttlMs));
      if (renewed !== 1) this.logger.error('A mailbox lock expired while its session ran: another session may have the mailbox too');
    } catch (err) {
      this.logger.warn(`Renewing a mailbox lock failed (will retry): ${(err as Error).message}`);
    }
  }
}
