/**
 * The proxy as a real process that dies: SIGKILL mid-session (after DELE, after RSET, mid-RETR,
 * right after QUIT was sent) and SIGTERM followed by SIGKILL 10 s later (what `docker stop`
 * does). After each, the IMAP store is read directly: a session that did not complete QUIT
 * must leave every message in place and no \Deleted flag behind, and a fresh proxy process
 * must serve the whole mailbox again.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { emptyMailbox, mailboxState, startDovecot, type Dovecot, type StoredMessage, type TestUser } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { startRelay } from './support/tcp-relay.js';

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/cli.js');
const alice: TestUser = { name: 'alice', password: 'alice-secret' };
const bob: TestUser = { name: 'bob', password: 'bob-secret' };
const LISTEN_TIMEOUT_MS = 15_000;
const EXIT_TIMEOUT_MS = 10_000;
const IMAP_TIMEOUT_MS = 15_000;
/** What `docker stop` waits between SIGTERM and SIGKILL. */
const DOCKER_STOP_GRACE_MS = 10_000;
const TERMINATOR = Buffer.from('\r\n.\r\n', 'latin1');

let dovecot: Dovecot;
const children = new Set<CliProcess>();
const clients = new Set<RawPop3>();

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Rejects when `promise` has not settled within `ms`. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Date.now() when the process was seen to exit. */
  at: number;
}

interface CliProcess {
  child: ChildProcess;
  port: number;
  exit: Promise<Exit>;
  exited(): boolean;
  /** Everything the process wrote to stdout and stderr. */
  output(): string;
}

before(async () => {
  dovecot = await startDovecot();
}, { timeout: 120_000 });

after(async () => {
  for (const c of clients) c.destroy();
  for (const p of children) {
    if (!p.exited()) p.child.kill('SIGKILL');
    await within(p.exit, EXIT_TIMEOUT_MS, 'a proxy process to exit').catch(() => undefined);
  }
  await dovecot?.stop();
}, { timeout: 120_000 });

/** Runs the built CLI against the test Dovecot on a free port; resolves once it listens. */
async function startCli(extraArgs: string[] = [], imapPort = dovecot.imapPort): Promise<CliProcess> {
  // Only the flags given here: nothing from POP3PROXY_* variables of the environment.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('POP3PROXY')));
  const child = spawn(
    process.execPath,
    [cli, '--imap-host', '127.0.0.1', '--imap-port', String(imapPort), '--imap-tls', 'none', '--host', '127.0.0.1', '--port', '0', ...extraArgs],
    { stdio: ['ignore', 'pipe', 'pipe'], env },
  );
  let output = '';
  let exitInfo: Exit | undefined;
  const exit = new Promise<Exit>((resolve) => {
    child.once('exit', (code, signal) => {
      exitInfo = { code, signal, at: Date.now() };
      resolve(exitInfo);
    });
  });
  const proc: CliProcess = { child, port: 0, exit, exited: () => exitInfo !== undefined, output: () => output };
  children.add(proc);
  proc.port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the proxy did not listen within ${LISTEN_TIMEOUT_MS} ms; output:\n${output}`)), LISTEN_TIMEOUT_MS);
    const onData = (d: Buffer) => {
      output += d.toString();
      const m = /POP3 listening on \S+:(\d+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    void exit.then((e) => {
      clearTimeout(timer);
      reject(new Error(`the proxy exited before listening (code ${e.code}, signal ${e.signal}); output:\n${output}`));
    });
  });
  return proc;
}

/** SIGKILLs the process and waits for it to be gone. */
async function kill(p: CliProcess): Promise<Exit> {
  p.child.kill('SIGKILL');
  return within(p.exit, EXIT_TIMEOUT_MS, 'the killed proxy to exit');
}

async function login(port: number, user: TestUser): Promise<RawPop3> {
  const c = await RawPop3.login(port, user.name, user.password);
  clients.add(c);
  return c;
}

const subjectOf = (i: number) => `message ${i}`;
const LARGE = 'large';

/** Empties the user's INBOX and fills it with `count` small messages (and the 3 MB one). */
async function resetMailbox(user: TestUser, count: number, large = false): Promise<void> {
  await within(
    emptyMailbox(dovecot, user),
    IMAP_TIMEOUT_MS,
    `emptying ${user.name}'s INBOX`,
  );
  for (let i = 1; i <= count; i++) {
    await dovecot.deliver(user.name, `Subject: ${subjectOf(i)}\nMessage-ID: <m${i}.${user.name}@crash>\n\nbody ${i}\n`);
  }
  if (large) await dovecot.deliver(user.name, `Subject: ${LARGE}\nMessage-ID: <large.${user.name}@crash>\n\n${'x'.repeat(76).concat('\n').repeat(40_000)}`);
}

const readStore = (user: TestUser) => within(mailboxState(dovecot, user), IMAP_TIMEOUT_MS, `reading ${user.name}'s INBOX`);

/**
 * The store once it stops changing (a command the dead proxy sent may still be running in
 * Dovecot): two reads 300 ms apart that agree, for at most 5 s.
 */
async function settledStore(user: TestUser): Promise<StoredMessage[]> {
  const deadline = Date.now() + 5000;
  let last = await readStore(user);
  for (;;) {
    await sleep(300);
    const now = await readStore(user);
    if (JSON.stringify(now) === JSON.stringify(last) || Date.now() > deadline) return now;
    last = now;
  }
}

const show = (state: StoredMessage[]) => (state.length === 0 ? '(empty)' : state.map((s) => `${s.subject}${s.deleted ? ' [\\Deleted]' : ''}`).join(', '));
const flagged = (state: StoredMessage[]) => state.filter((s) => s.deleted).map((s) => s.subject);

/** Records and asserts: exactly `subjects` present, in order, none flagged \Deleted. */
function assertIntact(t: TestContext, who: string, state: StoredMessage[], subjects: string[]): void {
  t.diagnostic(`${who} store: ${show(state)}`);
  assert.deepEqual(flagged(state), [], `no message of ${who} may carry \\Deleted (store: ${show(state)})`);
  assert.deepEqual(state.map((s) => s.subject), subjects, `${who}'s messages (store: ${show(state)})`);
}

/** A fresh proxy process serves the mailbox: STAT shows `count` messages. */
async function assertServed(t: TestContext, user: TestUser, count: number): Promise<void> {
  const fresh = await startCli();
  try {
    const c = await login(fresh.port, user);
    const stat = await c.command('STAT');
    t.diagnostic(`fresh proxy, ${user.name}: ${stat}`);
    assert.match(stat, new RegExp(`^\\+OK ${count} `), `a fresh proxy serves all ${count} of ${user.name}'s messages`);
    assert.match(await c.command('QUIT'), /^\+OK/);
    await c.waitClose();
    c.destroy();
  } finally {
    await kill(fresh);
  }
}

const five = [1, 2, 3, 4, 5].map(subjectOf);

/**
 * Alice's five messages, a proxy process, a session that sends `commands` (each reply must match
 * its pattern), then SIGKILL: all five must be left in place, unflagged, and a fresh proxy must
 * serve them.
 */
async function killMidSession(t: TestContext, commands: Array<[command: string, reply: RegExp]>): Promise<void> {
  await resetMailbox(alice, 5);
  const p = await startCli();
  try {
    const c = await login(p.port, alice);
    for (const [command, reply] of commands) assert.match(await c.command(command), reply);
    await kill(p);
    await c.waitClose().catch(() => undefined);
    c.destroy();
  } finally {
    await kill(p);
  }
  assertIntact(t, 'alice', await settledStore(alice), five);
  await assertServed(t, alice, 5);
}

test('a. DELE 2, then SIGKILL: all 5 present, no \\Deleted', { timeout: 120_000 }, async (t) => {
  await killMidSession(t, [
    ['DELE 2', /^\+OK/],
    ['STAT', /^\+OK 4 /],
  ]);
});

test('b. DELE 1, DELE 3, RSET, DELE 2, then SIGKILL: all present, no \\Deleted', { timeout: 120_000 }, async (t) => {
  await killMidSession(t, [
    ['DELE 1', /^\+OK/],
    ['DELE 3', /^\+OK/],
    ['RSET', /^\+OK/],
    ['STAT', /^\+OK 5 /],
    ['DELE 2', /^\+OK/],
  ]);
});

test('c. DELE 1, then SIGKILL in the middle of RETR of a 3 MB message: no terminator, all present, no \\Deleted', { timeout: 120_000 }, async (t) => {
  await resetMailbox(alice, 5, true);
  // The backend link is slowed to ~1.6 MB/s (32 KB per 20 ms) so that the message is still on
  // its way when the process dies: on loopback the proxy would otherwise have the whole 3 MB
  // message in kernel buffers before the client has seen 200 KB, and a SIGKILL would cut
  // nothing (the fresh proxy afterwards talks to Dovecot directly).
  const relay = await startRelay(dovecot.imapPort, { throttle: { bytesPerTick: 32 * 1024, tickMs: 20 } });
  const p = await startCli([], relay.port);
  let received: Buffer;
  try {
    const c = await login(p.port, alice);
    assert.match(await c.command('DELE 1'), /^\+OK/);
    c.send('RETR 6');
    // Pull bytes off the socket until part of the message is here, then kill at once.
    const deadline = Date.now() + 30_000;
    while (c.received().length <= 200_000) {
      if (Date.now() > deadline) throw new Error(`only ${c.received().length} bytes of RETR 6 arrived within 30 s`);
      if (c.closed) throw new Error(`the connection closed after ${c.received().length} bytes of RETR 6`);
      await sleep(2);
    }
    const atKill = c.received().length;
    await kill(p);
    await c.waitClose().catch(() => undefined);
    received = c.received();
    c.destroy();
    t.diagnostic(`RETR 6: ${atKill} bytes received when SIGKILL was sent, ${received.length} in all`);
  } finally {
    await kill(p);
    await relay.close();
  }
  const afterStatus = received.subarray(received.indexOf('\r\n') + 2);
  assert.equal(afterStatus.includes(TERMINATOR), false, 'the client never sees CRLF.CRLF of a cut RETR');
  assertIntact(t, 'alice', await settledStore(alice), [...five, LARGE]);
  await assertServed(t, alice, 6);
});

test('d. DELE 1, DELE 2, QUIT sent and SIGKILL at once: 3-5 present and unflagged, 1 and 2 gone or present', { timeout: 120_000 }, async (t) => {
  await resetMailbox(alice, 5);
  const p = await startCli();
  let reply = '';
  try {
    const c = await login(p.port, alice);
    assert.match(await c.command('DELE 1'), /^\+OK/);
    assert.match(await c.command('DELE 2'), /^\+OK/);
    c.send('QUIT');
    p.child.kill('SIGKILL');
    await within(p.exit, EXIT_TIMEOUT_MS, 'the killed proxy to exit');
    reply = await c.readLine(5000).catch((err: Error) => `(no reply: ${err.message.split(';')[0]})`);
    c.destroy();
  } finally {
    await kill(p);
  }
  t.diagnostic(`QUIT reply seen by the client: ${reply}`);
  const state = await settledStore(alice);
  t.diagnostic(`alice store: ${show(state)}`);
  const subjects = state.map((s) => s.subject);
  assert.deepEqual(subjects.filter((s) => ![subjectOf(1), subjectOf(2)].includes(s)), [3, 4, 5].map(subjectOf), `messages 3-5 present (store: ${show(state)})`);
  for (const i of [3, 4, 5]) assert.equal(state.find((s) => s.subject === subjectOf(i))?.deleted, false, `message ${i} must not carry \\Deleted (store: ${show(state)})`);
  for (const i of [1, 2]) {
    const m = state.find((s) => s.subject === subjectOf(i));
    t.diagnostic(`message ${i}: ${m === undefined ? 'gone' : m.deleted ? 'present, flagged \\Deleted' : 'present, unflagged'}`);
  }
  assert.equal(state.length, new Set(subjects).size, 'no duplicates');
  // Whatever is left, a fresh proxy serves it (a flagged leftover counts in STAT too).
  await assertServed(t, alice, state.length);
});

test('e. control: QUIT completes after DELE 2, DELE 4: exactly those are removed', { timeout: 120_000 }, async (t) => {
  await resetMailbox(alice, 5);
  const p = await startCli();
  try {
    const c = await login(p.port, alice);
    assert.match(await c.command('DELE 2'), /^\+OK/);
    assert.match(await c.command('DELE 4'), /^\+OK/);
    assert.match(await c.command('QUIT', 30_000), /^\+OK/);
    await c.waitClose();
    c.destroy();
  } finally {
    await kill(p);
  }
  assertIntact(t, 'alice', await settledStore(alice), [1, 3, 5].map(subjectOf));
  await assertServed(t, alice, 3);
});

test('f. two idle sessions after DELE, SIGTERM then SIGKILL 10 s later (docker stop), default --shutdown-grace: both intact, clean exit before the SIGKILL', { timeout: 120_000 }, async (t) => {
  await resetMailbox(alice, 5);
  await resetMailbox(bob, 5);
  const p = await startCli();
  let exit: Exit;
  let sigkilled = false;
  let elapsed: number;
  try {
    const a = await login(p.port, alice);
    const b = await login(p.port, bob);
    assert.match(await a.command('DELE 1'), /^\+OK/);
    assert.match(await b.command('DELE 1'), /^\+OK/);
    const termAt = Date.now();
    p.child.kill('SIGTERM');
    const first = await Promise.race([p.exit, sleep(DOCKER_STOP_GRACE_MS).then(() => undefined)]);
    if (first === undefined && !p.exited()) {
      sigkilled = true;
      p.child.kill('SIGKILL');
    }
    exit = await within(p.exit, EXIT_TIMEOUT_MS, 'the proxy to exit after SIGTERM/SIGKILL');
    elapsed = exit.at - termAt;
    for (const c of [a, b]) {
      await c.waitClose(5000).catch(() => undefined);
      c.destroy();
    }
  } finally {
    await kill(p);
  }
  t.diagnostic(`exit after SIGTERM: code ${exit.code}, signal ${exit.signal}, after ${elapsed} ms, ${sigkilled ? 'SIGKILL was needed' : 'no SIGKILL needed'}`);
  t.diagnostic(`proxy log tail: ${p.output().trim().split('\n').slice(-4).join(' | ')}`);
  const aliceState = await settledStore(alice);
  const bobState = await settledStore(bob);
  assertIntact(t, 'alice', aliceState, five);
  assertIntact(t, 'bob', bobState, five);
  assert.equal(sigkilled, false, `the proxy must exit on its own within ${DOCKER_STOP_GRACE_MS} ms of SIGTERM (it took ${elapsed} ms)`);
  assert.equal(exit.code, 0, `exit code 0 after SIGTERM (code ${exit.code}, signal ${exit.signal})`);
  await assertServed(t, alice, 5);
  await assertServed(t, bob, 5);
});
