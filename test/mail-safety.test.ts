/**
 * Every path that can delete, checked in the IMAP store afterwards: DELE/RSET/QUIT, every
 * abnormal end (client drop, idle timeout, proxy shutdown, backend failure, a QUIT that fails
 * part way), another client's \Deleted message, the mailbox lock, snapshot and UIDL stability.
 * The paths that can strand a flag run twice: with flags stored at QUIT (the default) and at
 * DELE (--flag-on-dele).
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';
import type { ImapFlow } from 'imapflow';
import { emptyMailbox, mailboxState, startDovecot, withMailbox, type Dovecot } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { settled, startProxy, type TestProxy, type TestProxyOptions } from './support/proxy.js';
import { startRelay, type TcpRelay } from './support/tcp-relay.js';

let dovecot: Dovecot;
/** Flags stored at QUIT (the default). */
let proxy: TestProxy;
/** --flag-on-dele. */
let early: TestProxy;
const alice = { name: 'alice', password: 'alice-secret' };

const MODES = [
  { name: 'flags at QUIT', flagOnDele: false },
  { name: '--flag-on-dele', flagOnDele: true },
] as const;

before(async () => {
  dovecot = await startDovecot();
  proxy = await startProxy({ imapPort: dovecot.imapPort });
  early = await startProxy({ imapPort: dovecot.imapPort, policy: { flagOnDele: true } });
}, { timeout: 120_000 });

after(async () => {
  await proxy?.close();
  await early?.close();
  await dovecot?.stop();
}, { timeout: 60_000 });

/** A proxy of its own for one test, in the given mode. */
function proxyIn(flagOnDele: boolean, options: Partial<TestProxyOptions> = {}): Promise<TestProxy> {
  return startProxy({ imapPort: dovecot.imapPort, ...options, policy: { flagOnDele, ...options.policy } });
}

/**
 * A session of alice's through a proxy of its own, in the given mode, whose backend connection
 * goes through a relay that `run` can cut; the proxy is settled after `run` and both are closed.
 */
async function behindRelay(flagOnDele: boolean, run: (c: RawPop3, relay: TcpRelay) => Promise<void>): Promise<void> {
  const relay = await startRelay(dovecot.imapPort);
  const cut = await proxyIn(flagOnDele, { imapPort: relay.port });
  try {
    await run(await login(cut.port), relay);
    await settled(cut);
  } finally {
    await cut.close();
    await relay.close();
  }
}

/** Empties alice's INBOX and fills it with `count` small messages. */
async function resetMailbox(count: number): Promise<void> {
  await emptyMailbox(dovecot, alice);
  for (let i = 1; i <= count; i++) await dovecot.deliver('alice', `Subject: message ${i}\nMessage-ID: <m${i}@safety>\n\nbody ${i}\n`);
}

const withImap = <T>(run: (imap: ImapFlow) => Promise<T>) => withMailbox(dovecot, alice, run);
const login = (port = proxy.port) => RawPop3.login(port, alice.name, alice.password);

/** Subjects and flags of every message in the store, by UID order. */
const storeState = () => mailboxState(dovecot, alice);

const subjects = (state: Array<{ subject: string }>) => state.map((s) => s.subject);
const anyFlagged = (state: Array<{ deleted: boolean }>) => state.some((s) => s.deleted);
const ALL_FIVE = ['message 1', 'message 2', 'message 3', 'message 4', 'message 5'];

/** The store as the session found it: every message there, none flagged. */
async function assertUntouched(extra: string[] = []): Promise<void> {
  const state = await storeState();
  assert.deepEqual(subjects(state), [...ALL_FIVE, ...extra]);
  assert.equal(anyFlagged(state), false, 'no \\Deleted flag left behind');
}

beforeEach(async () => {
  await settled(proxy);
  await settled(early);
  await resetMailbox(5);
}, { timeout: 60_000 });

test('DELE and RSET leave the store untouched; QUIT stores \\Deleted and expunges exactly the deleted messages', { timeout: 120_000 }, async () => {
  const c = await login();
  await c.command('DELE 1');
  await c.command('DELE 3');
  await assertUntouched();
  assert.match(await c.command('RSET'), /^\+OK/);
  assert.match(await c.command('STAT'), /^\+OK 5 /);
  await c.command('DELE 5');
  await assertUntouched();
  assert.match(await c.command('QUIT'), /^\+OK .*1 message deleted/);
  await c.waitClose();
  const state = await storeState();
  assert.deepEqual(subjects(state), ['message 1', 'message 2', 'message 3', 'message 4']);
  assert.equal(anyFlagged(state), false);
});

test('--flag-on-dele: DELE flags \\Deleted at once, RSET takes this session\'s flags back', { timeout: 120_000 }, async () => {
  const c = await login(early.port);
  await c.command('DELE 1');
  await c.command('DELE 3');
  assert.deepEqual((await storeState()).map((s) => s.deleted), [true, false, true, false, false]);
  assert.match(await c.command('RSET'), /^\+OK/);
  await assertUntouched();
  await c.command('DELE 5');
  await c.command('QUIT');
  await c.waitClose();
  const state = await storeState();
  assert.deepEqual(subjects(state), ['message 1', 'message 2', 'message 3', 'message 4']);
  assert.equal(anyFlagged(state), false);
});

test('message numbers never shift after DELE; deleted ones are refused and left out of LIST', { timeout: 120_000 }, async () => {
  const c = await login();
  await c.command('DELE 1');
  const list = (await c.multiline('LIST')).body.toString();
  assert.deepEqual(list.trim().split('\r\n').map((l) => l.split(' ')[0]), ['2', '3', '4', '5']);
  assert.match(await c.command('LIST 1'), /^-ERR/);
  assert.match(await c.command('RETR 1'), /^-ERR/);
  assert.match(await c.command('DELE 1'), /^-ERR/);
  const retr = await c.multiline('RETR 3');
  assert.match(retr.body.toString(), /Subject: message 3/);
  await c.command('RSET');
  await c.command('QUIT');
  c.destroy();
});

for (const mode of MODES) {
  const target = () => (mode.flagOnDele ? early : proxy);

  test(`${mode.name}: DELE then QUIT expunges exactly the deleted messages`, { timeout: 120_000 }, async () => {
    const c = await login(target().port);
    assert.match(await c.command('DELE 2'), /^\+OK/);
    assert.match(await c.command('DELE 4'), /^\+OK/);
    assert.match(await c.command('STAT'), /^\+OK 3 /);
    assert.match(await c.command('QUIT'), /^\+OK/);
    await c.waitClose();
    const state = await storeState();
    assert.deepEqual(subjects(state), ['message 1', 'message 3', 'message 5']);
    assert.equal(anyFlagged(state), false);
  });

  test(`${mode.name}: another client's \\Deleted message survives our QUIT and our RSET`, { timeout: 120_000 }, async () => {
    await withImap((imap) => imap.messageFlagsAdd('2', ['\\Deleted']));
    const c = await login(target().port);
    await c.command('DELE 4');
    await c.command('DELE 2');
    await c.command('RSET');
    let state = await storeState();
    assert.equal(state[1]!.deleted, true, 'RSET must not clear a flag this session did not set');
    assert.equal(state[3]!.deleted, false);
    await c.command('DELE 4');
    await c.command('QUIT');
    await c.waitClose();
    state = await storeState();
    assert.deepEqual(subjects(state), ['message 1', 'message 2', 'message 3', 'message 5']);
    assert.equal(state[1]!.deleted, true);
  });

  test(`${mode.name}: a client that drops after DELE deletes nothing and leaves no flag behind`, { timeout: 120_000 }, async () => {
    const c = await login(target().port);
    await c.command('DELE 1');
    await c.command('DELE 2');
    c.destroy();
    await settled(target());
    await assertUntouched();
  });

  test(`${mode.name}: an idle timeout after DELE deletes nothing and leaves no flag behind`, { timeout: 120_000 }, async () => {
    const quick = await proxyIn(mode.flagOnDele, { idleTimeoutMs: 1000 });
    try {
      const c = await login(quick.port);
      await c.command('DELE 3');
      assert.match(await c.readLine(5000), /^-ERR/);
      await c.waitClose();
      await settled(quick);
    } finally {
      await quick.close();
    }
    await assertUntouched();
  });

  test(`${mode.name}: stopping the proxy after DELE deletes nothing and leaves no flag behind`, { timeout: 120_000 }, async () => {
    const other = await proxyIn(mode.flagOnDele);
    const c = await login(other.port);
    await c.command('DELE 1');
    await c.command('DELE 5');
    await other.close();
    await c.waitClose();
    await assertUntouched();
  });

  test(`${mode.name}: backend connection cut mid-RETR after DELE: no final ".", nothing deleted, no flag left`, { timeout: 120_000 }, async () => {
    await dovecot.deliver('alice', `Subject: large\nMessage-ID: <large@safety>\n\n${'x'.repeat(76).concat('\n').repeat(40_000)}`);
    await behindRelay(mode.flagOnDele, async (c, relay) => {
      assert.match(await c.command('DELE 1'), /^\+OK/);
      // Halfway through the 3 MB message, past the proxy's first fetch window.
      relay.cutAfter(1_600_000);
      c.send('RETR 6');
      await c.waitClose(30_000);
      const received = c.received();
      assert.ok(received.length > 500_000, `part of the message arrived (${received.length} bytes)`);
      assert.equal(received.subarray(-5).toString('latin1') === '\r\n.\r\n', false, 'no terminator after a cut');
    });
    await assertUntouched(['large']);
  });

  test(`${mode.name}: backend connection cut after DELE: QUIT answers [SYS/TEMP], nothing deleted, no flag left`, { timeout: 120_000 }, async () => {
    await behindRelay(mode.flagOnDele, async (c, relay) => {
      await c.command('DELE 2');
      relay.cutAll();
      const reply = await c.command('QUIT', 30_000);
      assert.match(reply, /^-ERR \[SYS\/TEMP\] /);
      await c.waitClose();
    });
    await assertUntouched();
  });

  test(`${mode.name}: a QUIT that fails after storing \\Deleted takes the flags back and answers [SYS/TEMP]`, { timeout: 120_000 }, async () => {
    await behindRelay(mode.flagOnDele, async (c, relay) => {
      await c.command('DELE 2');
      await c.command('DELE 3');
      // The flags are stored; the expunge never reaches the server.
      relay.cutOnCommand(/UID EXPUNGE/);
      const reply = await c.command('QUIT', 30_000);
      assert.match(reply, /^-ERR \[SYS\/TEMP\] Deleted messages were not removed/);
      await c.waitClose();
    });
    await assertUntouched();
  });
}

test('one session per mailbox: a second login gets [IN-USE] until the first ends', { timeout: 120_000 }, async () => {
  const first = await login();
  const second = await RawPop3.connect(proxy.port);
  await second.command('USER ALICE');
  assert.match(await second.command('PASS alice-secret', 30_000), /^-ERR \[IN-USE\] /);
  await first.command('QUIT');
  await first.waitClose();
  await second.command('USER alice');
  assert.match(await second.command('PASS alice-secret', 30_000), /^\+OK/);
  await second.command('QUIT');
  second.destroy();
});

test('the snapshot stays fixed while mail arrives; the new mail shows in the next session', { timeout: 120_000 }, async () => {
  const c = await login();
  const before = await c.command('STAT');
  await dovecot.deliver('alice', 'Subject: late arrival\nMessage-ID: <late@safety>\n\nlate\n');
  await withImap(async (imap) => assert.equal((imap.mailbox as { exists: number }).exists, 6));
  assert.equal(await c.command('STAT'), before);
  assert.match(await c.command('RETR 6'), /^-ERR/);
  assert.match(await c.command('NOOP'), /^\+OK/);
  await c.command('QUIT');
  await c.waitClose();
  const next = await login();
  assert.match(await next.command('STAT'), /^\+OK 6 /);
  await next.command('QUIT');
  next.destroy();
});

test('UIDL is stable across sessions and equal to Dovecot\'s own POP3 UIDL', { timeout: 120_000 }, async () => {
  const read = async (port: number) => {
    const c = await RawPop3.connect(port);
    await c.command('USER alice');
    await c.command('PASS alice-secret', 30_000);
    const body = (await c.multiline('UIDL')).body.toString();
    await c.command('QUIT');
    c.destroy();
    return body;
  };
  const first = await read(proxy.port);
  const second = await read(proxy.port);
  const native = await read(dovecot.pop3Port);
  assert.equal(first, second);
  assert.equal(first, native);
  assert.equal(first.trim().split('\r\n').length, 5);
});

test('with the backend down, login fails with [SYS/TEMP] at once, without a hang', { timeout: 120_000 }, async () => {
  const relay = await startRelay(dovecot.imapPort);
  const port = relay.port;
  await relay.close();
  const dead = await startProxy({ imapPort: port, backendTimeoutMs: 5000 });
  try {
    const c = await RawPop3.connect(dead.port);
    await c.command('USER alice');
    assert.match(await c.command('PASS alice-secret', 10_000), /^-ERR \[SYS\/TEMP\] /);
    assert.match(await c.command('QUIT'), /^\+OK/);
    c.destroy();
  } finally {
    await dead.close();
  }
});

test('a backend that accepts but never greets: [SYS/TEMP] within 10 s, with the default deadlines', { timeout: 120_000 }, async () => {
  const net = await import('node:net');
  const held = new Set<import('node:net').Socket>();
  const silent = net.createServer((s) => held.add(s));
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  const port = (silent.address() as { port: number }).port;
  // The defaults of --backend-timeout (30 s, for a login's penalty) and --backend-connect-timeout (5 s).
  const stuck = await startProxy({ imapPort: port, backendTimeoutMs: 30_000, backendConnectTimeoutMs: 5000 });
  try {
    const c = await RawPop3.connect(stuck.port);
    await c.command('USER alice');
    const started = Date.now();
    assert.match(await c.command('PASS alice-secret', 10_000), /^-ERR \[SYS\/TEMP\] /);
    const took = Date.now() - started;
    assert.ok(took >= 4500 && took < 10_000, `answered after ${took} ms`);
    c.destroy();
  } finally {
    await stuck.close();
    for (const s of held) s.destroy();
    silent.close();
  }
});
