/**
 * The session's backend connection, from its login to its logout. A login gets a connection
 * kept from an earlier session of the very same credentials (backend-pool.ts) or logs in anew;
 * a kept connection the server closed meanwhile is replaced by a new login when the mailbox is
 * opened; and once the session is over, a connection it left clean goes back to the pool,
 * any other is logged out.
 *
 * "Clean" is decided here: no command failed or was cut short (`interrupted`), no \Deleted
 * flag of the session's left on the server, and nothing running on it any more. A connection
 * in the middle of something would hand its leftovers to the next session.
 */
import type { ImapFlow } from 'imapflow';
import type { Logger } from 'winston';
import type { ClientInfo, Credentials } from '../maildrop/maildrop.js';
import type { BackendPool, LoginStamp } from './backend-pool.js';
import type { StepConnection } from './backend-step.js';
import { connectionBusy, fastPaths, type FastPaths } from './fast-paths.js';
import { adoptConnection, connectImap, withTimeout, type ImapSettings } from './imap-client.js';

export interface ConnectionOptions extends ImapSettings {
  /** Logged-in connections kept between sessions of the same login (--backend-reuse). */
  readonly pool?: BackendPool;
  /** Which hooks into imapflow's internals are on; by default what fits the installed imapflow. */
  readonly fastPaths?: FastPaths;
  /** Told how long each backend step took (for metrics). */
  readonly onStep?: (step: string, seconds: number) => void;
}

/** Who logs in, to which mailbox. */
export interface Login {
  readonly credentials: Credentials;
  readonly from: ClientInfo;
  /** The mailbox the connection serves (mailboxKeyOf): the pool keeps connections under it. */
  readonly mailboxKey: string;
}

/** What a connection is made of; see BackendConnection. */
export interface ConnectionParts {
  readonly client: ImapFlow;
  /** Logs in anew with the session's credentials (as the first login, without its throttle hook). */
  readonly relogin: () => Promise<ImapFlow>;
  readonly mailboxKey: string;
  /** The mailbox to open on a new connection that only takes flags back. */
  readonly mailbox: string;
  readonly timeoutMs: number;
  readonly pool: BackendPool | undefined;
  readonly paths: FastPaths;
  /** When and with what the connection logged in: set when it may be kept after the session. */
  readonly stamp: LoginStamp | undefined;
  /** The connection served an earlier session (it came from the pool). */
  readonly reused: boolean;
}

/**
 * A logged-in connection for this login: one kept from an earlier session of it if the pool
 * has one for these very credentials, else a new login (its time told as the step 'login';
 * a throttling server's suggested back-off goes to `onThrottle`).
 */
export async function openConnection(
  options: ConnectionOptions,
  login: Login,
  logger: Logger,
  onThrottle: (backoffMs: number) => void,
): Promise<BackendConnection> {
  const paths = options.fastPaths ?? fastPaths();
  const relogin = () => connectImap(options, login.credentials, login.from, logger, { loginDiet: paths['login-diet'] });
  const { mailbox, timeoutMs, pool: keeping } = options;
  const connection = (client: ImapFlow, stamp: LoginStamp | undefined, reused: boolean) =>
    new BackendConnection(
      { client, relogin, mailboxKey: login.mailboxKey, mailbox, timeoutMs, pool: keeping, paths, stamp, reused },
      logger,
    );
  // Only a connection logged in with these very credentials is handed out (see BackendPool).
  const pool = options.pool?.enabled ? options.pool : undefined;
  const tag = pool?.tag(login.credentials);
  const kept = tag === undefined ? undefined : pool!.take(login.mailboxKey, tag);
  if (kept !== undefined) {
    adoptConnection(kept.client, login.from.sessionId);
    logger.debug('Reusing a kept backend connection of this login');
    return connection(kept.client, kept.stamp, true);
  }
  const started = performance.now();
  const hooks = { onThrottle, loginDiet: paths['login-diet'] };
  const client = await connectImap(options, login.credentials, login.from, logger, hooks).finally(() =>
    options.onStep?.('login', (performance.now() - started) / 1000),
  );
  return connection(client, tag === undefined ? undefined : { tag, at: started }, false);
}

export class BackendConnection implements StepConnection {
  private current: ImapFlow;
  private stamp: LoginStamp | undefined;
  private reused: boolean;
  /**
   * A backend command failed or a message stream was cut short: the connection may be in the
   * middle of something, and is never kept for another session.
   */
  private interrupted = false;

  constructor(
    private readonly parts: ConnectionParts,
    private readonly logger: Logger,
  ) {
    this.current = parts.client;
    this.stamp = parts.stamp;
    this.reused = parts.reused;
  }

  /** The connection the session works on now (a new login in open() replaces a kept one that is gone). */
  get client(): ImapFlow {
    return this.current;
  }

  get mailboxKey(): string {
    return this.parts.mailboxKey;
  }

  /** Which hooks into imapflow's internals this connection may use. */
  get paths(): FastPaths {
    return this.parts.paths;
  }

  interrupt(): void {
    this.interrupted = true;
  }

  /**
   * Runs `select` (opening the mailbox). On a kept connection that is also the check that it
   * still works: if the server closed it meanwhile, the session logs in afresh and runs it again.
   */
  async open<T>(select: () => Promise<T>): Promise<T> {
    try {
      return await select();
    } catch (err) {
      if (!this.reused || this.current.usable) throw err;
      this.logger.debug(`The kept backend connection is gone (${(err as Error).message}); logging in again`);
      this.current.close();
      this.reused = false;
      this.interrupted = false;
      const started = performance.now();
      this.current = await this.parts.relogin();
      if (this.stamp !== undefined) this.stamp = { tag: this.stamp.tag, at: started };
      return select();
    }
  }

  /**
   * Runs `work` over a new connection of its own, mailbox open, logged out afterwards: for
   * taking flags back when the session's connection is broken.
   */
  async withFresh<T>(work: (client: ImapFlow) => Promise<T>): Promise<T> {
    const fresh = await this.parts.relogin();
    try {
      const opening = fresh.mailboxOpen(this.parts.mailbox, { readOnly: false });
      await withTimeout(opening, this.parts.timeoutMs, 'opening the mailbox');
      return await work(fresh);
    } finally {
      await logout(fresh, this.parts.timeoutMs);
    }
  }

  /**
   * The session is over: the connection is kept for the next session of this login if the
   * session left it clean (`clean`: no flag of the session's left on the server; no command
   * cut short; nothing running once `settled` resolves), else logged out.
   */
  async letGo(clean: boolean, settled: () => Promise<void>): Promise<void> {
    const client = this.current;
    const pool = this.parts.pool;
    if (pool?.enabled && this.stamp !== undefined && !this.interrupted && clean && client.usable) {
      await settled();
      const busy = connectionBusy(client, this.paths);
      if (!this.interrupted && !busy && pool.release(this.parts.mailboxKey, this.stamp, client)) return;
    }
    await logout(client, this.parts.timeoutMs);
  }
}

/** LOGOUT where the connection still works (within the backend timeout), then closed either way. */
export async function logout(client: ImapFlow, timeoutMs: number): Promise<void> {
  try {
    if (client.usable) await withTimeout(client.logout(), timeoutMs, 'logout');
  } catch {
    // The session is over either way.
  } finally {
    client.close();
  }
}
