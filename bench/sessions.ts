/**
 * The POP3 sessions the workloads are made of, each timed from connect; the same code runs
 * against Dovecot's own POP3 and against the proxy.
 */
import { FastPop3 } from './fast-pop3.js';
import type { TestUser } from '../test/support/dovecot.js';

export interface Pop3Target {
  readonly port: number;
  /** Commands allowed in flight at once: 1 unless the server announces PIPELINING. */
  readonly window: number;
}

export interface DownloadResult {
  readonly ms: number;
  /** Every byte the server sent (greeting, replies, dot-stuffed messages). */
  readonly bytes: number;
  readonly messages: number;
  readonly retrieved: number;
  readonly firstError: string | undefined;
  /** CPU time this (client) process used meanwhile: near `ms` would mean the client is the limit. */
  readonly clientCpuMs: number;
}

export function cpuMs(usage: NodeJS.CpuUsage): number {
  return (usage.user + usage.system) / 1000;
}

export interface DownloadHooks {
  /** Called just before the RETR commands are sent and just after the last reply arrived. */
  beforeRetr?(): void;
  afterRetr?(): void;
}

/** Login (USER/PASS), STAT, UIDL, RETR of every message (pipelined), QUIT. */
export async function downloadAll(target: Pop3Target, user: TestUser, hooks: DownloadHooks = {}): Promise<DownloadResult> {
  const started = performance.now();
  const cpu = process.cpuUsage();
  const client = await FastPop3.connect(target.port);
  try {
    await client.login(user.name, user.password);
    const { count } = await client.stat();
    const uidl = await client.command('UIDL', true);
    if (!uidl.ok) throw new Error(`UIDL: ${uidl.status}`);
    hooks.beforeRetr?.();
    const retr = await client.pipeline(count, (i) => `RETR ${i + 1}`, true, target.window);
    hooks.afterRetr?.();
    const quit = await client.quit();
    const ms = performance.now() - started;
    const firstError = retr.firstError ?? (quit.ok ? undefined : `QUIT: ${quit.status}`);
    return { ms, bytes: client.received, messages: count, retrieved: retr.ok, firstError, clientCpuMs: cpuMs(process.cpuUsage(cpu)) };
  } finally {
    client.destroy();
  }
}

/** Milliseconds from connect until the STAT reply, or the end of the UIDL listing; then QUIT. */
export async function timeToListing(target: Pop3Target, user: TestUser, until: 'stat' | 'uidl'): Promise<number> {
  const started = performance.now();
  const client = await FastPop3.connect(target.port);
  try {
    await client.login(user.name, user.password);
    if (until === 'stat') {
      await client.stat();
    } else {
      const uidl = await client.command('UIDL', true);
      if (!uidl.ok) throw new Error(`UIDL: ${uidl.status}`);
    }
    const ms = performance.now() - started;
    // Waiting for the close too: the next session of this user must not find the mailbox in use.
    const quit = await client.quit();
    if (!quit.ok) throw new Error(`QUIT: ${quit.status}`);
    return ms;
  } finally {
    client.destroy();
  }
}

export interface ConcurrentResult {
  readonly ms: number;
  readonly sessions: number;
  readonly errors: number;
  readonly errorSamples: string[];
}

/** One session per user, all at once: login, STAT, RETR of every message (pipelined), QUIT. */
export async function concurrentSessions(target: Pop3Target, users: readonly TestUser[]): Promise<ConcurrentResult> {
  const errorSamples: string[] = [];
  let errors = 0;
  const session = async (user: TestUser) => {
    const client = await FastPop3.connect(target.port);
    try {
      await client.login(user.name, user.password);
      const { count } = await client.stat();
      const retr = await client.pipeline(count, (i) => `RETR ${i + 1}`, true, target.window);
      if (retr.failed > 0) throw new Error(`${retr.failed} RETR failed, first: ${retr.firstError}`);
      const quit = await client.quit();
      if (!quit.ok) throw new Error(`QUIT: ${quit.status}`);
    } finally {
      client.destroy();
    }
  };
  const started = performance.now();
  await Promise.all(users.map((u) => session(u).catch((err: Error) => {
    errors += 1;
    if (errorSamples.length < 5) errorSamples.push(`${u.name}: ${err.message}`);
  })));
  return { ms: performance.now() - started, sessions: users.length, errors, errorSamples };
}

export interface IdleSessions {
  readonly clients: FastPop3[];
  readonly errors: number;
  readonly errorSamples: string[];
  /** QUITs every session and waits until all are closed. */
  close(): Promise<void>;
}

/**
 * Opens one authenticated session per user (USER/PASS done, then nothing), `concurrency`
 * logins at a time so that the logins themselves do not overload the server.
 */
export async function openIdleSessions(target: Pop3Target, users: readonly TestUser[], concurrency = 50): Promise<IdleSessions> {
  const clients: FastPop3[] = [];
  const errorSamples: string[] = [];
  let errors = 0;
  let next = 0;
  const worker = async () => {
    while (next < users.length) {
      const user = users[next++] as TestUser;
      try {
        // No inactivity timeout: these sessions are meant to sit idle. A small read buffer,
        // as a thousand of them are open at once.
        const client = await FastPop3.connect(target.port, { timeoutMs: 0, readBufferSize: 16 * 1024 });
        clients.push(client);
        await client.login(user.name, user.password);
      } catch (err) {
        errors += 1;
        if (errorSamples.length < 5) errorSamples.push(`${user.name}: ${(err as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return {
    clients,
    errors,
    errorSamples,
    async close() {
      await Promise.all(clients.map(async (c) => {
        try {
          await c.quit();
        } catch {
          c.destroy();
        }
      }));
    },
  };
}

export interface RetrieveResult {
  readonly ms: number;
  readonly messages: number;
  readonly retrieved: number;
  /** Body octets of the RETR replies (dot-stuffed, terminators included): equal on every path. */
  readonly bodyBytes: number;
  readonly firstError: string | undefined;
}

/**
 * One session as a legacy application runs it: USER, PASS, STAT, RETR of every message and
 * QUIT, with up to `window` RETRs in flight (1: one command, wait, the next).
 */
export async function retrieveSession(target: Pop3Target, user: TestUser, window: number): Promise<RetrieveResult> {
  const started = performance.now();
  const client = await FastPop3.connect(target.port);
  try {
    await client.login(user.name, user.password);
    const { count } = await client.stat();
    const retr = await client.pipeline(count, (i) => `RETR ${i + 1}`, true, window);
    const quit = await client.quit();
    const ms = performance.now() - started;
    const firstError = retr.firstError ?? (quit.ok ? undefined : `QUIT: ${quit.status}`);
    return { ms, messages: count, retrieved: retr.ok, bodyBytes: retr.bytes, firstError };
  } finally {
    client.destroy();
  }
}
