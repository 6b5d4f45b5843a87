/**
 * The one connection to Redis that every piece of shared state goes through: the mailbox locks,
 * the failed-login throttle, the LOGIN-DELAY record and the kept mailbox listings. Commands
 * never queue while Redis is away (they fail at once, and each caller falls back or refuses);
 * the client reconnects by itself, at most 2 s apart; whether Redis answers is kept in a
 * LinkStatus (logged once per change, shown in /readyz and the metrics).
 */
import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Logger } from 'winston';
import { describeRedisUrl, LinkStatus } from './link-status.js';

/** Every key the proxy writes starts with this. */
export const KEY_PREFIX = 'pop3-imap-proxy:';

/**
 * The Redis key for `name` in a namespace (lock, auth-failures, login, ...). Hashed: the names
 * are user names and client addresses, which Redis (and whoever reads it) need not see.
 */
export function sharedKey(namespace: string, name: string): string {
  return `${KEY_PREFIX}${namespace}:${createHash('sha256').update(name).digest('hex')}`;
}

export interface RedisLinkOptions {
  /** redis:// or rediss:// */
  readonly url: string;
  /** Longest wait for any one command (and for the connection). */
  readonly commandTimeoutMs: number;
}

/** Longest wait between two attempts to reconnect. */
const MAX_RECONNECT_DELAY_MS = 2000;
/** Longest wait for PING when /readyz asks. */
const READY_PING_MS = 2000;
/** A failure Redis itself answered (out of memory, a script error) is logged at most this often. */
const REPLY_ERROR_LOG_INTERVAL_MS = 60_000;

export class RedisLink {
  readonly client: Redis;
  readonly status: LinkStatus;
  private closing = false;
  private replyErrorLogged = -Infinity;

  constructor(
    private readonly options: RedisLinkOptions,
    private readonly logger: Logger,
    onChange: (up: boolean) => void = () => undefined,
  ) {
    this.status = new LinkStatus(describeRedisUrl(options.url), logger, onChange);
    onChange(false);
    this.client = new Redis(options.url, {
      // A login waits on these commands: fail it quickly rather than queue it while Redis is away.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: options.commandTimeoutMs,
      connectTimeout: options.commandTimeoutMs,
      retryStrategy: (times: number) => Math.min(100 * 2 ** Math.min(times - 1, 10), MAX_RECONNECT_DELAY_MS),
    });
    this.client.on('ready', () => this.status.up());
    this.client.on('error', (err: Error) => {
      if (!this.closing) this.status.down(err.message);
    });
    this.client.on('close', () => {
      if (!this.closing) this.status.down('connection closed');
    });
  }

  /**
   * Runs one command within `deadlineMs` (at most the client's own command timeout). A failure
   * that says Redis is away marks it down; an answer marks it up. With `slowIsDown` false, a
   * deadline shorter than Redis is ever expected to need (a listing wanted within 200 ms) only
   * fails the command: a slow answer is no sign that Redis is away.
   */
  async run<T>(
    command: (client: Redis) => Promise<T>,
    deadlineMs = this.options.commandTimeoutMs,
    slowIsDown = true,
  ): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    let late = false;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        late = true;
        reject(new Error(`Redis did not answer within ${deadlineMs} ms`));
      }, deadlineMs);
    });
    try {
      const result = await Promise.race([command(this.client), deadline]);
      if (this.client.status === 'ready') this.status.up();
      return result;
    } catch (err) {
      if (!late || slowIsDown) this.failed(err as Error);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** For /readyz: resolves when Redis answers a PING now. */
  async ready(): Promise<void> {
    if (!this.status.isUp) throw new Error(this.status.reason);
    await this.run((c) => c.ping(), READY_PING_MS);
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.client.quit().catch(() => this.client.disconnect());
  }

  private failed(err: Error): void {
    if (this.closing) return;
    // Redis answered, with an error (out of memory, a script error): it is there, but the
    // command failed; each caller falls back or refuses, and the log says why now and then.
    if (err.name === 'ReplyError') {
      const now = Date.now();
      if (now - this.replyErrorLogged < REPLY_ERROR_LOG_INTERVAL_MS) return;
      this.replyErrorLogged = now;
      this.logger.warn(
        `Redis refused a command (${err.message}); shared state falls back as when Redis is unreachable ` +
          '(logged at most once a minute)',
      );
      return;
    }
    this.status.down(err.message);
  }
}
