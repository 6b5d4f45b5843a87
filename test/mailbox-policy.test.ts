/**
 * The mailbox policy options operators ask for, checked on the wire and in the IMAP store:
 * --max-messages, --mark-seen, --delete-mode, --greeting, --login-delay and --expire.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';
import type { ImapFlow } from 'imapflow';
import { emptyMailbox, startDovecot, withMailbox, type Dovecot } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { settled, startProxy, type TestProxy, type TestProxyOptions } from './support/proxy.js';

let dovecot: Dovecot;
const alice = { name: 'alice', password: 'alice-secret' };

before(async () => {
  dovecot = await startDovecot();
}, { timeout: 120_000 });

after(async () => {
  await dovecot?.stop();
}, { timeout: 60_000 });

beforeEach(async () => {
  await emptyMailbox(dovecot, alice);
  for (let n = 1; n <= 5; n++) await dovecot.deliver('alice', `Subject: m${n}\nMessage-ID: <m${n}@policy>\n\nbody ${n}\n`);
}, { timeout: 60_000 });

const withImap = <T>(run: (imap: ImapFlow) => Promise<T>, mailbox = 'INBOX') => withMailbox(dovecot, alice, run, mailbox);

/** Subjects and flags by UID order. */
async function store(mailbox = 'INBOX'): Promise<Array<{ subject: string; flags: string[] }>> {
  return withImap(async (imap) => {
    if ((imap.mailbox as { exists: number }).exists === 0) return [];
    const all = await imap.fetchAll('1:*', { uid: true, flags: true, envelope: true });
    return all.sort((a, b) => a.uid - b.uid).map((m) => ({ subject: m.envelope?.subject ?? '', flags: [...(m.flags ?? [])].sort() }));
  }, mailbox);
}

async function withProxy(policy: TestProxyOptions['policy'], run: (proxy: TestProxy) => Promise<void>): Promise<void> {
  const proxy = await startProxy({ imapPort: dovecot.imapPort, logLevel: 'info', policy });
  try {
    await run(proxy);
    await settled(proxy);
  } finally {
    await proxy.close();
  }
}

test('--max-messages: a session sees only the newest N messages, numbered from 1', { timeout: 120_000 }, async () => {
  await withProxy({ maxMessages: 2 }, async (proxy) => {
    const c = await RawPop3.login(proxy.port, 'alice', 'alice-secret');
    assert.match(await c.command('STAT'), /^\+OK 2 /);
    assert.match((await c.multiline('RETR 1')).body.toString(), /body 4/);
    assert.match((await c.multiline('RETR 2')).body.toString(), /body 5/);
    assert.match(await c.command('DELE 1'), /^\+OK/);
    assert.match(await c.command('QUIT'), /^\+OK/);
  });
  assert.deepEqual((await store()).map((m) => m.subject), ['m1', 'm2', 'm3', 'm5']);
});

test('--mark-seen: RETR sets \\Seen once the message was delivered; TOP does not; without the option nothing is marked', { timeout: 120_000 }, async () => {
  await withProxy({ markSeen: true }, async (proxy) => {
    const c = await RawPop3.login(proxy.port, 'alice', 'alice-secret');
    await c.multiline('RETR 2');
    await c.multiline('TOP 3 0');
    assert.match(await c.command('QUIT'), /^\+OK/);
  });
  await withProxy({}, async (proxy) => {
    const c = await RawPop3.login(proxy.port, 'alice', 'alice-secret');
    await c.multiline('RETR 4');
    assert.match(await c.command('QUIT'), /^\+OK/);
  });
  assert.deepEqual((await store()).map((m) => m.flags.includes('\\Seen')), [false, true, false, false, false]);
});

test('--delete-mode move:FOLDER keeps a copy there, without the \\Deleted flag; flag leaves them flagged', { timeout: 120_000 }, async () => {
  await withImap((imap) => imap.mailboxCreate('Archive').then(() => undefined).catch(() => undefined));
  await withProxy({ deleteMode: { kind: 'move', folder: 'Archive' } }, async (proxy) => {
    const c = await RawPop3.login(proxy.port, 'alice', 'alice-secret');
    await c.command('DELE 1');
    await c.command('DELE 3');
    assert.match(await c.command('QUIT'), /^\+OK/);
  });
  assert.deepEqual((await store()).map((m) => m.subject), ['m2', 'm4', 'm5']);
  assert.deepEqual((await store('Archive')).map((m) => [m.subject, m.flags.includes('\\Deleted')]), [['m1', false], ['m3', false]]);

  await withProxy({ deleteMode: { kind: 'flag' } }, async (proxy) => {
    const c = await RawPop3.login(proxy.port, 'alice', 'alice-secret');
    await c.command('DELE 2');
    assert.match(await c.command('QUIT'), /^\+OK/);
  });
  assert.deepEqual((await store()).map((m) => [m.subject, m.flags.includes('\\Deleted')]), [['m2', false], ['m4', true], ['m5', false]]);
});

test('--greeting, --login-delay and --expire: the banner, CAPA, and [LOGIN-DELAY] for a login too soon', { timeout: 120_000 }, async () => {
  const proxy = await startProxy({ imapPort: dovecot.imapPort, logLevel: 'info', policy: { greeting: 'Mail gateway of Example Corp.', loginDelayS: 60, expire: 'NEVER' } });
  try {
    const c = await RawPop3.connect(proxy.port);
    assert.equal(c.greeting, '+OK Mail gateway of Example Corp.');
    assert.match(await c.command('CAPA'), /^\+OK/);
    const caps = (await c.readMultiline()).toString().split('\r\n');
    assert.ok(caps.includes('LOGIN-DELAY 60') && caps.includes('EXPIRE NEVER'), caps.join('|'));
    await c.command('USER alice');
    assert.match(await c.command('PASS alice-secret', 30_000), /^\+OK/);
    assert.match(await c.command('QUIT'), /^\+OK/);
    const again = await RawPop3.connect(proxy.port);
    await again.command('USER alice');
    assert.match(await again.command('PASS alice-secret', 30_000), /^-ERR \[LOGIN-DELAY\] /);
    // A wrong password is still only [AUTH]: the delay tells nothing to someone without it.
    assert.match(await again.command('USER alice'), /^\+OK/);
    assert.match(await again.command('PASS wrong', 30_000), /^-ERR \[AUTH\] /);
    again.destroy();
  } finally {
    await proxy.close();
  }
});
