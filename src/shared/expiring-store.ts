/**
 * Small records that end by themselves: counters and marks with a time to live. The failed-login
 * throttle and the LOGIN-DELAY record are made of them, so that they need no clock shared by the
 * replicas (Redis keeps the time) and no clean-up (every key expires).
 */
import { RedisLink, sharedKey } from './redis-link.js';

export interface ExpiringStore {
  /** Adds one to the counter `name` and gives it `ttlMs` more to live; resolves to the new count. */
  increment(name: string, ttlMs: number): Promise<number>;
  /** Sets the mark `name` for `ttlMs`. */
  mark(name: string, ttlMs: number): Promise<void>;
  /** Milliseconds the mark or counter `name` has left to live; 0 when there is none. */
  remaining(name: string): Promise<number>;
}

/** INCR and PEXPIRE in one step, so a counter can never be left without its time to live. */
const INCREMENT = "local n = redis.call('incr', KEYS[1]) redis.call('pexpire', KEYS[1], ARGV[1]) return n";

/** An ExpiringStore in Redis, under one namespace of keys; each command within `deadlineMs`. */
export class RedisExpiringStore implements ExpiringStore {
  constructor(
    private readonly link: RedisLink,
    private readonly namespace: string,
    private readonly deadlineMs: number,
  ) {}

  async increment(name: string, ttlMs: number): Promise<number> {
    const count = await this.link.run(
      (c) => c.eval(INCREMENT, 1, this.key(name), String(Math.max(1, Math.round(ttlMs)))),
      this.deadlineMs,
    );
    return Number(count);
  }

  async mark(name: string, ttlMs: number): Promise<void> {
    await this.link.run((c) => c.set(this.key(name), '1', 'PX', Math.max(1, Math.round(ttlMs))), this.deadlineMs);
  }

  async remaining(name: string): Promise<number> {
    const ms = await this.link.run((c) => c.pttl(this.key(name)), this.deadlineMs);
    // -2: no such key; -1: a key without expiry, which this store never writes.
    return ms > 0 ? ms : 0;
  }

  private key(name: string): string {
    return sharedKey(this.namespace, name);
  }
}
