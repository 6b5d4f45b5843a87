/**
 * Three proxy replicas (the built program, as child processes) behind a real HAProxy (round
 * robin, PROXY protocol, /readyz health checks), sharing one Redis, in front of one Dovecot:
 * - a user alternating replicas gets the kept-listing speed on each: only the very first login
 *   lists the whole mailbox (`FETCH 1:*`, counted by a relay before Dovecot), the first login on
 *   each other replica starts from the listing kept in Redis;
 * - a password guesser spread over the three is slowed as one: the guesses it gets in a
 *   minute against the three are no more than against one replica alone (and a control: three
 *   replicas without Redis, which let it guess far more);
 * - one session per mailbox ([IN-USE]) and LOGIN-DELAY hold across replicas;
 * - a replica killed (SIGKILL) in the middle of a session loses nothing: the store is as it
 *   was, the lock expires with its time to live and the mailbox is served again through HAProxy;
 * - Redis going away: logged once, /readyz 503, pop3proxy_redis_up 0, logins refused with
 *   [SYS/TEMP], the throttle still slows guessers (in the process), a running session goes on
 *   and takes its lock again when Redis is back (empty); all of it recovers by itself.
 * The figures (guesses, first-login times) are printed as diagnostics. Every wait is bounded.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { mailboxKeyOf } from '../src/imap/imap-maildrop.js';
import { listingKey } from '../src/shared/listing-store.js';
import { FULL_FETCH, startCommandRelay, type CommandRelay } from './support/command-relay.js';
import { DEFAULT_USERS, mailboxState, NO_LOGIN_PENALTY, startDovecot, withMailbox, type Dovecot } from './support/dovecot.js';
import { startRedis, type TestRedis } from './support/redis.js';

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/cli.js');

/** The window the guessers get: the minute the issue asks about, not scaled down. */
const GUESS_WINDOW_MS = 60_000;
/** --auth-fail-delay: the default, 8 s. */
const AUTH_FAIL_DELAY_S = 8;
/** --login-delay, short so that the other parts of the test can log in again soon. */
const LOGIN_DELAY_S = 2;
/** --lock-ttl: a lock outlives its dead holder by 4 to 6 s (it is renewed every 2 s). */
const LOCK_TTL_S = 6;
/** Messages in dave's mailbox, for the first-login times (the issue's 20,000). */
const BIG_MAILBOX = 20_000;

const USERS = [...DEFAULT_USERS, { name: 'carol', password: 'carol-secret' }, { name: 'dave', password: 'dave-secret' }];
const password = (user: string) => USERS.find((u) => u.name === user)!.password;

interface Replica {
  readonly name: string;
  readonly port: number;
  readonly metricsPort: number;
  readonly child: ChildProcess;
  log(): string;
  readonly exited: Promise<void>;
}

let dovecot: Dovecot;
let redis: TestRedis;
let haproxy: ChildProcess | undefined;
/** Between the replicas sharing Redis and Dovecot: the commands they send, for counting. */
let backend: CommandRelay;
let work: string;
/** Sharing Redis, behind HAProxy's "shared" frontend. */
const replicas: Replica[] = [];
/** The control: the same without Redis, behind the "alone" frontend. */
const controls: Replica[] = [];
const frontends = { shared: 0, alone: 0 };

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer().once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every `everyMs` until it is true, for at most `limitMs`; says whether it became true. */
async function until(check: () => boolean | Promise<boolean>, limitMs: number, everyMs = 100): Promise<boolean> {
  const end = Date.now() + limitMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= end) return false;
    await sleep(everyMs);
  }
}

async function startReplica(name: string, withRedis: boolean): Promise<Replica> {
  const port = await freePort();
  const metricsPort = await freePort();
  // The replicas sharing Redis reach Dovecot through the counting relay, all at one address (one mailbox key).
  const imapPort = withRedis ? backend.port : dovecot.imapPort;
  const args = [cli, '--imap-host', '127.0.0.1', '--imap-port', String(imapPort), '--imap-tls', 'none',
    '--host', '127.0.0.1', '--port', String(port), '--metrics-host', '127.0.0.1', '--metrics-port', String(metricsPort),
    '--proxy-protocol', '--greeting', `replica ${name} ready.`, '--auth-fail-delay', String(AUTH_FAIL_DELAY_S),
    '--login-delay', String(LOGIN_DELAY_S), '--log-level', 'info'];
  if (withRedis) args.push('--redis', redis.url, '--lock-ttl', String(LOCK_TTL_S));
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const up = await until(() => stderr.includes('listening') && (!withRedis || stderr.includes('in Redis at')), 15_000, 50);
  if (!up) {
    child.kill('SIGKILL');
    throw new Error(`replica ${name} did not start: ${stderr}`);
  }
  return { name, port, metricsPort, child, log: () => stderr, exited };
}

before(async () => {
  dovecot = await startDovecot({ users: USERS, extraConfig: NO_LOGIN_PENALTY });
  await dovecot.deliver('alice', 'Subject: alice\n\nalice\n');
  for (let i = 1; i <= 3; i++) await dovecot.deliver('bob', `Subject: bob ${i}\n\n${'bob '.repeat(100 * i)}\n`);
  await dovecot.deliver('carol', 'Subject: carol\n\ncarol\n');
  for (let i = 0; i < BIG_MAILBOX; i += 500) {
    await Promise.all(Array.from({ length: Math.min(500, BIG_MAILBOX - i) }, (_, j) => dovecot.deliver('dave', `Subject: m${i + j}\n\nmessage ${i + j}\n`)));
  }
  // Dovecot indexes the new mail and caches its sizes once, so the times below are the proxy's.
  await withMailbox(dovecot, USERS[3]!, (imap) => imap.fetchAll('1:*', { uid: true, size: true }));
  redis = await startRedis();
  backend = await startCommandRelay(dovecot.imapPort);
  for (const name of ['r1', 'r2', 'r3']) replicas.push(await startReplica(name, true));
  for (const name of ['c1', 'c2', 'c3']) controls.push(await startReplica(name, false));

  work = await mkdtemp(path.join(os.tmpdir(), 'pop3-replicas-'));
  frontends.shared = await freePort();
  frontends.alone = await freePort();
  const config = path.join(work, 'haproxy.cfg');
  await writeFile(config, [
    'global', '  maxconn 500',
    'defaults', '  mode tcp', '  timeout connect 2s', '  timeout client 60s', '  timeout server 60s', '  retries 3', '  option redispatch',
    'frontend shared', `  bind 127.0.0.1:${frontends.shared}`, '  default_backend shared',
    'frontend alone', `  bind 127.0.0.1:${frontends.alone}`, '  default_backend alone',
    // The production setup: PROXY protocol to the replicas, /readyz on their metrics port as the health check.
    'backend shared', '  balance roundrobin', '  option httpchk GET /readyz', '  default-server send-proxy check inter 1s fall 2 rise 1',
    ...replicas.map((r) => `  server ${r.name} 127.0.0.1:${r.port} port ${r.metricsPort}`),
    'backend alone', '  balance roundrobin', '  default-server send-proxy',
    ...controls.map((r) => `  server ${r.name} 127.0.0.1:${r.port}`),
    '',
  ].join('\n'));
  haproxy = spawn('haproxy', ['-db', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let haproxyErr = '';
  haproxy.stderr!.on('data', (d: Buffer) => (haproxyErr += d.toString()));
  const routes = await until(async () => {
    const c = await connect(frontends.shared).catch(() => undefined);
    c?.destroy();
    return c?.greeting.startsWith('+OK') ?? false;
  }, 15_000);
  assert.ok(routes, `HAProxy does not route to the replicas: ${haproxyErr}`);
}, { timeout: 300_000 }); // 20,000 deliveries, then six proxies and HAProxy

after(async () => {
  haproxy?.kill('SIGTERM');
  for (const r of [...replicas, ...controls]) {
    r.child.kill('SIGTERM');
    await Promise.race([r.exited, sleep(10_000)]);
    r.child.kill('SIGKILL');
  }
  await redis?.stop();
  await backend?.close();
  await dovecot?.stop();
  if (work) await rm(work, { recursive: true, force: true });
}, { timeout: 120_000 });

// ---------------------------------------------------------------------------------------------
// A small POP3 client: a chosen source address, an optional PROXY header, bounded reads.

interface Conn {
  readonly greeting: string;
  /** The replica that greeted ("r1"), from its greeting. */
  readonly replica: string;
  command(line: string, timeoutMs?: number): Promise<string>;
  /** A multi-line reply's lines, after its status line. */
  lines(timeoutMs?: number): Promise<string[]>;
  destroy(): void;
}

interface ConnectOptions {
  /** Source address on loopback (127.x.y.z): the client address HAProxy announces. */
  localAddress?: string;
  /** The client address to announce in a PROXY v1 header, for a connection straight to a replica. */
  announce?: string;
  timeoutMs?: number;
}

function connect(port: number, options: ConnectOptions = {}): Promise<Conn> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress: options.localAddress });
    const queue: string[] = [];
    let buffer = '';
    let closed = false;
    let waiter: { resolve(line: string): void; reject(err: Error): void } | undefined;
    const pump = () => {
      if (!waiter) return;
      if (queue.length > 0) waiter.resolve(queue.shift()!);
      else if (closed) waiter.reject(new Error('connection closed'));
      else return;
      waiter = undefined;
    };
    socket.on('data', (d: Buffer) => {
      buffer += d.toString('latin1');
      for (let end = buffer.indexOf('\r\n'); end >= 0; end = buffer.indexOf('\r\n')) {
        queue.push(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
      pump();
    });
    socket.on('close', () => {
      closed = true;
      pump();
    });
    socket.on('error', (err) => {
      closed = true;
      if (!waiter) return;
      waiter.reject(err);
      waiter = undefined;
    });
    const next = (ms: number) =>
      new Promise<string>((res, rej) => {
        const timer = setTimeout(() => {
          waiter = undefined;
          rej(new Error(`no reply within ${ms} ms`));
        }, ms);
        waiter = {
          resolve: (line) => (clearTimeout(timer), res(line)),
          reject: (err) => (clearTimeout(timer), rej(err)),
        };
        pump();
      });
    socket.once('connect', () => {
      if (options.announce) socket.write(`PROXY TCP4 ${options.announce} 127.0.0.1 40000 110\r\n`);
      next(timeoutMs).then(
        (greeting) =>
          resolve({
            greeting,
            replica: /replica (\w+) ready/.exec(greeting)?.[1] ?? '?',
            command: (line, ms = 30_000) => {
              socket.write(`${line}\r\n`);
              return next(ms);
            },
            lines: async (ms = 30_000) => {
              const lines: string[] = [];
              for (let line = await next(ms); line !== '.'; line = await next(ms)) lines.push(line);
              return lines;
            },
            destroy: () => socket.destroy(),
          }),
        (err: Error) => {
          socket.destroy();
          reject(err);
        },
      );
    });
    socket.once('error', (err) => reject(err));
  });
}

/** USER and PASS on a new connection; the connection and the reply to PASS. */
async function attempt(port: number, user: string, pass: string, options: ConnectOptions = {}): Promise<{ conn: Conn; reply: string; ms: number }> {
  const conn = await connect(port, options);
  assert.match(await conn.command(`USER ${user}`), /^\+OK/);
  const started = performance.now();
  const reply = await conn.command(`PASS ${pass}`);
  return { conn, reply, ms: performance.now() - started };
}

async function quit(conn: Conn): Promise<void> {
  assert.match(await conn.command('QUIT'), /^\+OK/);
  conn.destroy();
}

/** The value of one series in a replica's /metrics. */
async function metric(replica: Replica, series: string): Promise<number | undefined> {
  const body = await (await fetch(`http://127.0.0.1:${replica.metricsPort}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
  const line = body.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

async function readyz(replica: Replica): Promise<{ status: number; body: string }> {
  const response = await fetch(`http://127.0.0.1:${replica.metricsPort}/readyz`, { signal: AbortSignal.timeout(10_000) });
  return { status: response.status, body: await response.text() };
}

/** Waits until LOGIN-DELAY lets the user in again after a login at `since` (performance.now()). */
async function afterLoginDelay(since: number): Promise<void> {
  await sleep(Math.max(0, since + LOGIN_DELAY_S * 1000 + 150 - performance.now()));
}

// ---------------------------------------------------------------------------------------------

test('a user alternating replicas gets the kept-listing speed on each: only the very first login lists the whole mailbox', { timeout: 300_000 }, async (t) => {
  const rounds: Array<Array<{ replica: string; ms: number; fullFetches: number }>> = [];
  let last = 0;
  for (let round = 0; round < 2; round++) {
    const times: Array<{ replica: string; ms: number; fullFetches: number }> = [];
    for (let i = 0; i < 3; i++) {
      await afterLoginDelay(last);
      const mark = backend.mark();
      const { conn, reply, ms } = await attempt(frontends.shared, 'dave', password('dave'));
      last = performance.now();
      assert.match(reply, new RegExp(`^\\+OK Logged in, ${BIG_MAILBOX} messages`));
      await quit(conn);
      times.push({ replica: conn.replica, ms: Math.round(ms), fullFetches: backend.since(mark).filter((l) => FULL_FETCH.test(l)).length });
    }
    assert.deepEqual(times.map((x) => x.replica).sort(), ['r1', 'r2', 'r3'], 'round robin: one login on each replica');
    rounds.push(times);
  }
  const show = (times: Array<{ replica: string; ms: number }>) => times.map((x) => `${x.replica} ${x.ms} ms`).join(', ');
  // The first login anywhere lists everything; every later one, on whichever replica, starts from a kept listing.
  assert.deepEqual(rounds.flat().map((x) => x.fullFetches), [1, 0, 0, 0, 0, 0], `FETCH 1:* per login: ${JSON.stringify(rounds)}`);
  const admin = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  let octets = 0;
  try {
    await admin.connect();
    octets = await admin.strlen(listingKey(mailboxKeyOf({ host: '127.0.0.1', port: backend.port, mailbox: 'INBOX' }, 'dave')));
  } finally {
    admin.disconnect();
  }
  assert.ok(octets > 0 && octets < BIG_MAILBOX * 5, `the listing in Redis: ${octets} octets`);
  t.diagnostic(`${BIG_MAILBOX} messages, PASS to +OK through HAProxy: first login on each replica: ${show(rounds[0]!)} (${rounds[0]![0]!.replica} cold, the others from the listing in Redis); second: ${show(rounds[1]!)}`);
  t.diagnostic(`the listing in Redis: ${octets} octets, ${(octets / BIG_MAILBOX).toFixed(2)} a message`);
});

test('[IN-USE] across replicas: a session on one replica keeps the mailbox from the others until it QUITs', { timeout: 300_000 }, async () => {
  const first = await attempt(frontends.shared, 'alice', password('alice'));
  assert.match(first.reply, /^\+OK/);
  const loggedIn = performance.now();
  await afterLoginDelay(loggedIn);
  const others = new Set<string>();
  for (let i = 0; i < 2; i++) {
    const other = await attempt(frontends.shared, 'alice', password('alice'));
    assert.match(other.reply, /^-ERR \[IN-USE\] /, `on ${other.conn.replica}`);
    others.add(other.conn.replica);
    other.conn.destroy();
  }
  assert.ok(!others.has(first.conn.replica) && others.size === 2, `refused by the two other replicas: ${[...others].join(', ')} (session on ${first.conn.replica})`);
  await quit(first.conn);
  const again = await attempt(frontends.shared, 'alice', password('alice'));
  assert.match(again.reply, /^\+OK/);
  await quit(again.conn);
});

test('LOGIN-DELAY holds across replicas: the next login is refused on the others too, until the delay is over', { timeout: 300_000 }, async (t) => {
  const first = await attempt(frontends.shared, 'carol', password('carol'));
  assert.match(first.reply, /^\+OK/);
  const loggedIn = performance.now();
  await quit(first.conn);
  const refusedOn: string[] = [];
  for (let i = 0; i < 2; i++) {
    const early = await attempt(frontends.shared, 'carol', password('carol'));
    assert.match(early.reply, new RegExp(`^-ERR \\[LOGIN-DELAY\\] Logged in too recently; try again in [12] seconds`), `on ${early.conn.replica}`);
    refusedOn.push(early.conn.replica);
    early.conn.destroy();
  }
  const refusedWithin = performance.now() - loggedIn;
  assert.ok(refusedWithin < LOGIN_DELAY_S * 1000, `the early attempts came within the delay (${Math.round(refusedWithin)} ms)`);
  assert.ok(!refusedOn.includes(first.conn.replica), `refused on the other replicas: ${refusedOn.join(', ')} (logged in on ${first.conn.replica})`);
  await afterLoginDelay(loggedIn);
  const later = await attempt(frontends.shared, 'carol', password('carol'));
  assert.match(later.reply, /^\+OK/);
  await quit(later.conn);
  t.diagnostic(`login on ${first.conn.replica}; [LOGIN-DELAY] on ${refusedOn.join(' and ')}; let in again after ${LOGIN_DELAY_S} s on ${later.conn.replica}`);
});

interface Guesses {
  /** Wrong passwords answered within the window. */
  allowed: number;
  /** How many of them each replica answered. */
  perReplica: Record<string, number>;
  /** How long each answer took, in seconds. */
  delays: number[];
}

/**
 * One guesser: wrong passwords one after another, each on a new connection (so a balancer
 * spreads them), for GUESS_WINDOW_MS; counts the answers that came within the window.
 */
async function guess(port: number, options: ConnectOptions): Promise<Guesses> {
  const end = performance.now() + GUESS_WINDOW_MS;
  const result: Guesses = { allowed: 0, perReplica: {}, delays: [] };
  for (let i = 0; performance.now() < end; i++) {
    const conn = await connect(port, options);
    try {
      assert.match(await conn.command('USER alice'), /^\+OK/);
      const started = performance.now();
      const left = end - started;
      if (left <= 0) break;
      let reply: string;
      try {
        reply = await conn.command(`PASS guess-${i}`, left);
      } catch {
        break; // Not answered within the window.
      }
      assert.match(reply, /^-ERR \[AUTH\] /);
      result.allowed++;
      result.perReplica[conn.replica] = (result.perReplica[conn.replica] ?? 0) + 1;
      result.delays.push(Math.round((performance.now() - started) / 10) / 100);
    } finally {
      conn.destroy();
    }
  }
  return result;
}

test('a password guesser spread over three replicas is slowed as one: no more guesses in a minute than against one replica', { timeout: 300_000 }, async (t) => {
  // The three guessers run at the same time, from three addresses, so they do not slow each other.
  const [one, three, alone] = await Promise.all([
    // Straight to one replica, announcing its own address in a PROXY header, as HAProxy would.
    guess(replicas[0]!.port, { announce: '192.0.2.1' }),
    guess(frontends.shared, { localAddress: '127.0.0.21' }),
    guess(frontends.alone, { localAddress: '127.0.0.22' }),
  ]);
  const show = (g: Guesses) => `${g.allowed} guesses (${Object.entries(g.perReplica).sort().map(([r, n]) => `${r}: ${n}`).join(', ')}; delays ${g.delays.join(' ')} s)`;
  t.diagnostic(`guesses allowed in ${GUESS_WINDOW_MS / 1000} s, --auth-fail-delay ${AUTH_FAIL_DELAY_S}:`);
  t.diagnostic(`  one replica: ${show(one)}`);
  t.diagnostic(`  three replicas sharing Redis, through HAProxy: ${show(three)}`);
  t.diagnostic(`  three replicas without Redis (control), through HAProxy: ${show(alone)}`);
  // Every replica answered its share of the guesses.
  assert.deepEqual(Object.keys(three.perReplica).sort(), ['r1', 'r2', 'r3']);
  assert.ok(Object.values(three.perReplica).every((n) => n >= 3), `spread: ${JSON.stringify(three.perReplica)}`);
  // The delays come from one count in Redis, so the n-th guess waits as long wherever it lands:
  // 0.25, 0.5, 1, 2, 4, then 8 s, plus the backend's own answer to a failed login, which this
  // Dovecot gives within 0 to 0.5 s (it flushes failed logins on a timer; NO_LOGIN_PENALTY),
  // plus a few ms of connections. So against one replica or three alike, the 11th answer comes
  // after 55.75 s at the earliest and the 12th after 63.75 s: at most 11 in the minute; and the
  // 10th by 52.75 s at the latest: at least 10. The one-replica figure is 10 or 11, the
  // three-replica figure too, and the three's can exceed the one's by that one at most: hence a
  // margin of exactly one.
  assert.ok(three.allowed <= one.allowed + 1, `three replicas allowed ${three.allowed} guesses, one replica ${one.allowed}`);
  assert.ok(one.allowed >= 9 && one.allowed <= 11, `one replica: ${one.allowed} guesses (10 or 11 expected)`);
  // The control shows what the measurement tells apart: each replica alone sees a third of the
  // failures and lets its delay grow a third as fast, so the guesser gets 18 or 19.
  assert.ok(alone.allowed >= one.allowed + 4, `without Redis: ${alone.allowed} guesses, against ${one.allowed}`);
});

test('a replica killed in the middle of a session loses nothing: the store is unchanged, the lock expires with its TTL, the mailbox is served again', { timeout: 300_000 }, async (t) => {
  const bob = DEFAULT_USERS[1]!;
  const before = await mailboxState(dovecot, bob);
  assert.equal(before.length, 3);
  const session = await attempt(frontends.shared, 'bob', password('bob'));
  assert.match(session.reply, /^\+OK Logged in, 3 messages/);
  const victim = replicas.find((r) => r.name === session.conn.replica)!;
  assert.match(await session.conn.command('RETR 1'), /^\+OK/);
  await session.conn.lines();
  assert.match(await session.conn.command('DELE 1'), /^\+OK/);
  assert.match(await session.conn.command('DELE 2'), /^\+OK/);
  victim.child.kill('SIGKILL');
  const killedAt = performance.now();
  await Promise.race([victim.exited, sleep(5000)]);
  session.conn.destroy();

  const replies: string[] = [];
  let served: { conn: Conn; reply: string } | undefined;
  while (!served && performance.now() - killedAt < (LOCK_TTL_S + 10) * 1000) {
    const next = await attempt(frontends.shared, 'bob', password('bob')).catch((err: Error) => ({ conn: undefined, reply: `(${err.message})` }));
    replies.push(`${next.conn?.replica ?? '-'}: ${next.reply.slice(0, 30)}`);
    if (next.conn && next.reply.startsWith('+OK')) served = { conn: next.conn, reply: next.reply };
    else {
      next.conn?.destroy();
      await sleep(250);
    }
  }
  const waited = performance.now() - killedAt;
  t.diagnostic(`killed ${victim.name} holding bob's lock after RETR 1, DELE 1, DELE 2; served again through HAProxy after ${Math.round(waited)} ms (--lock-ttl ${LOCK_TTL_S}); ${replies.length} attempts, the distinct answers: ${[...new Set(replies.map((r) => r.replace(/try again in \d+/, 'try again in N')))].join(' | ')}`);
  assert.ok(served, `never served again: ${replies.join(' | ')}`);
  assert.match(served.reply, /^\+OK Logged in, 3 messages/);
  assert.notEqual(served.conn.replica, victim.name);
  assert.ok(replies.some((r) => r.includes('[IN-USE]')), 'the dead replica\'s lock held for a while');
  // Renewed every TTL/3, so it outlives the kill by 2/3 of the TTL at least and the TTL at most.
  assert.ok(waited >= (LOCK_TTL_S * 2) / 3 * 1000 - 500 && waited <= (LOCK_TTL_S + 3) * 1000, `the lock expired ${Math.round(waited)} ms after the kill`);
  assert.equal((await served.conn.command('STAT')).split(' ')[1], '3');
  await quit(served.conn);
  assert.deepEqual(await mailboxState(dovecot, bob), before, 'the store is as it was: nothing removed, nothing flagged \\Deleted');
  replicas.splice(replicas.indexOf(victim), 1);
});

test('Redis going away: logged once, /readyz 503, redis_up 0, logins refused with [SYS/TEMP], the throttle goes on in each process, a running session goes on within --lock-ttl; all recovers by itself', { timeout: 300_000 }, async (t) => {
  const live = replicas.filter((r) => r.child.exitCode === null && r.child.signalCode === null);
  assert.ok(live.length >= 2);
  const [a, b] = live as [Replica, Replica];
  for (const r of live) assert.equal(await metric(r, 'pop3proxy_redis_up'), 1);
  const unreachable = (r: Replica) => r.log().split('\n').filter((l) => l.includes('is unreachable')).length;
  // A session that runs through the outage.
  const held = await attempt(a.port, 'alice', password('alice'), { announce: '192.0.2.62' });
  assert.match(held.reply, /^\+OK/);
  const port = redis.port;
  await redis.stop();
  const stoppedAt = performance.now();
  assert.ok(await until(() => live.every((r) => unreachable(r) === 1), 10_000), 'each replica logs that Redis is unreachable');
  assert.match(a.log(), /Redis at redis:\/\/127\.0\.0\.1:\d+\/0 is unreachable \(.*\): logins are refused with \[SYS\/TEMP\]/);

  const ready = await readyz(a);
  assert.equal(ready.status, 503);
  assert.match(ready.body, /^redis not reachable/);
  assert.equal((await fetch(`http://127.0.0.1:${a.metricsPort}/healthz`)).status, 200, 'alive: no restart needed');
  assert.equal(await metric(a, 'pop3proxy_redis_up'), 0);

  // Within --lock-ttl of its last renewal (past it the session ends: test/lost-locks.test.ts).
  assert.match(await held.conn.command('STAT'), /^\+OK 1 /, 'a running session goes on');
  await quit(held.conn);
  // A login: the lock cannot be taken.
  const refused = await attempt(a.port, 'carol', password('carol'), { announce: '192.0.2.60' });
  assert.match(refused.reply, /^-ERR \[SYS\/TEMP\] /);
  refused.conn.destroy();
  // A guesser is still slowed, by each replica's own count.
  const delays: number[] = [];
  for (let i = 0; i < 3; i++) {
    const failed = await attempt(b.port, 'alice', `wrong-${i}`, { announce: '192.0.2.61' });
    assert.match(failed.reply, /^-ERR \[AUTH\] /);
    delays.push(Math.round(failed.ms));
    failed.conn.destroy();
  }
  assert.ok(delays[1]! >= 450 && delays[2]! >= 900, `failures answered after ${delays.join(', ')} ms`);
  assert.ok((await metric(b, 'pop3proxy_redis_fallbacks_total{check="throttle"}'))! >= 3);
  for (const r of live) assert.equal(unreachable(r), 1, `logged once, not per login, on ${r.name}`);

  redis = await startRedis(port);
  const back = (r: Replica) => r.log().includes('is reachable again');
  assert.ok(await until(() => live.every(back), 15_000), 'each replica logs that Redis is back');
  const recovered = performance.now() - stoppedAt;
  assert.equal((await readyz(a)).status, 200);
  for (const r of live) assert.equal(await metric(r, 'pop3proxy_redis_up'), 1);
  // HAProxy takes the replicas back once /readyz says so, and logins go through again.
  let reply = '';
  const servedAgain = await until(async () => {
    const next = await attempt(frontends.shared, 'alice', password('alice')).catch(() => undefined);
    reply = next?.reply ?? '';
    if (next && reply.startsWith('+OK')) await quit(next.conn);
    else next?.conn.destroy();
    return reply.startsWith('+OK');
  }, 15_000, 500);
  assert.ok(servedAgain, `no login through HAProxy after Redis came back: ${reply}`);
  t.diagnostic(`Redis stopped, then started again on port ${port}: failures meanwhile answered after ${delays.join(', ')} ms (this process's count); back in use ${Math.round(recovered)} ms after the stop; the log of ${a.name}: ${a.log().split('\n').filter((l) => /Redis at/.test(l)).map((l) => l.replace(/^\S+ /, '')).join(' / ')}`);
});
