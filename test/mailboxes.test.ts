/**
 * The mailbox the application means, against the real Dovecot: a folder named at login
 * (--folder-separator), with its own lock and UIDLs; a folder that does not exist named in the
 * reply; and keep-on-server (--listing unseen with --delete-mode seen), where QUIT marks the
 * deleted messages \Seen and the next session no longer lists them, nothing removed.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';
import { emptyMailbox, mailboxState, startDovecot, withMailbox, type Dovecot } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { settled, startProxy, type TestProxy } from './support/proxy.js';

const TEST = { timeout: 120_000 };
const HOOK = { timeout: 120_000 };
const alice = { name: 'alice', password: 'alice-secret' };
let dovecot: Dovecot;

before(async () => {
  dovecot = await startDovecot();
}, HOOK);

after(async () => {
  await dovecot?.stop();
}, HOOK);

beforeEach(async () => {
  await emptyMailbox(dovecot, alice);
  await withMailbox(dovecot, alice, async (imap) => {
    await imap.mailboxDelete('Invoices').catch(() => undefined);
    await imap.mailboxCreate('Invoices');
    for (const i of [1, 2, 3]) await imap.append('Invoices', `Subject: invoice ${i}\r\nMessage-ID: <inv${i}@mb>\r\n\r\nbody ${i}\r\n`);
  });
  for (const i of [1, 2]) await dovecot.deliver('alice', `Subject: inbox ${i}\nMessage-ID: <in${i}@mb>\n\nbody ${i}\n`);
}, HOOK);

async function withProxy(policy: NonNullable<Parameters<typeof startProxy>[0]['policy']>, run: (proxy: TestProxy) => Promise<void>) {
  const proxy = await startProxy({ imapPort: dovecot.imapPort, logLevel: 'info', policy });
  try {
    await run(proxy);
    await settled(proxy);
  } finally {
    await proxy.close();
  }
}

async function folderUids(folder: string): Promise<{ uids: number[]; uidValidity: number }> {
  return withMailbox(dovecot, alice, async (imap) => {
    const box = await imap.mailboxOpen(folder, { readOnly: true });
    const all = await imap.fetchAll('1:*', { uid: true });
    return { uids: all.map((m) => m.uid).sort((a, b) => a - b), uidValidity: Number(box.uidValidity) };
  });
}

const hex = (n: number) => n.toString(16).padStart(8, '0');

test('alice#Invoices serves the folder, with UIDLs of its own, its own lock, and QUIT removes from it alone', TEST, async () => {
  await withProxy({ folderSeparator: '#' }, async (proxy) => {
    const inbox = await RawPop3.login(proxy.port, alice.name, alice.password);
    const folder = await RawPop3.login(proxy.port, 'alice#Invoices', alice.password);
    assert.match(await inbox.command('STAT'), /^\+OK 2 /);
    assert.match(await folder.command('STAT'), /^\+OK 3 /);
    const { uids, uidValidity } = await folderUids('Invoices');
    const uidl = (await folder.multiline('UIDL')).body.toString('latin1');
    assert.equal(uidl, uids.map((uid, i) => `${i + 1} ${hex(uid)}${hex(uidValidity)}\r\n`).join(''), 'UID then UIDVALIDITY of the folder');
    assert.match((await folder.multiline('RETR 2')).body.toString('latin1'), /^Subject: invoice 2\r\n/);
    // The folder's lock is the folder's: a second session of it is refused, INBOX's is not.
    const again = await RawPop3.connect(proxy.port);
    await again.command('USER alice#Invoices');
    assert.match(await again.command(`PASS ${alice.password}`, 30_000), /^-ERR \[IN-USE\] /);
    again.destroy();
    assert.match(await folder.command('DELE 2'), /^\+OK/);
    assert.match(await folder.command('QUIT'), /^\+OK/);
    assert.match(await inbox.command('QUIT'), /^\+OK/);
  });
  const subjects = async (box: string) => (await mailboxState(dovecot, alice, box)).map((m) => m.subject);
  assert.deepEqual(await subjects('Invoices'), ['invoice 1', 'invoice 3']);
  assert.deepEqual(await subjects('INBOX'), ['inbox 1', 'inbox 2']);
});

test('a folder the login names that does not exist: -ERR [SYS/PERM] naming it; without a separator the name is a user name', TEST, async () => {
  await withProxy({ folderSeparator: '#' }, async (proxy) => {
    const c = await RawPop3.connect(proxy.port);
    await c.command('USER alice#NoSuchFolder');
    assert.equal(await c.command(`PASS ${alice.password}`, 30_000), '-ERR [SYS/PERM] No folder NoSuchFolder in this mailbox.');
    // Back in AUTHORIZATION: the client may log in again.
    await c.command('USER alice');
    assert.match(await c.command(`PASS ${alice.password}`, 30_000), /^\+OK/);
    assert.match(await c.command('QUIT'), /^\+OK/);
  });
  await withProxy({}, async (proxy) => {
    const c = await RawPop3.connect(proxy.port);
    await c.command('USER alice#Invoices');
    assert.match(await c.command(`PASS ${alice.password}`, 30_000), /^-ERR \[AUTH\] /);
    c.destroy();
  });
});

test('keep on server: --listing unseen lists what has no \\Seen; --delete-mode seen marks at QUIT, removes nothing', TEST, async () => {
  await dovecot.deliver('alice', 'Subject: inbox 3\nMessage-ID: <in3@mb>\n\nbody 3\n');
  await withMailbox(dovecot, alice, (imap) => imap.messageFlagsAdd('1', ['\\Seen']).then(() => undefined));
  await withProxy({ listing: 'unseen', deleteMode: { kind: 'seen' } }, async (proxy) => {
    const first = await RawPop3.login(proxy.port, alice.name, alice.password);
    assert.match(await first.command('STAT'), /^\+OK 2 /, 'inbox 1 was seen already');
    assert.match((await first.multiline('RETR 1')).body.toString('latin1'), /^Subject: inbox 2\r\n/);
    assert.match(await first.command('DELE 1'), /^\+OK/);
    // A session that ends without QUIT changes nothing.
    first.destroy();
    const second = await RawPop3.login(proxy.port, alice.name, alice.password);
    assert.match(await second.command('STAT'), /^\+OK 2 /);
    assert.match(await second.command('DELE 1'), /^\+OK/);
    assert.match(await second.command('QUIT'), /^\+OK \S+ \(1 message deleted\)/);
    const third = await RawPop3.login(proxy.port, alice.name, alice.password);
    assert.match(await third.command('STAT'), /^\+OK 1 /, 'the poller sees each message once');
    assert.match((await third.multiline('RETR 1')).body.toString('latin1'), /^Subject: inbox 3\r\n/);
    assert.match(await third.command('QUIT'), /^\+OK/);
  });
  const state = await mailboxState(dovecot, alice);
  assert.deepEqual(state.map((m) => m.subject), ['inbox 1', 'inbox 2', 'inbox 3'], 'the mail stays');
  assert.equal(state.some((m) => m.deleted), false);
  const seen = await withMailbox(dovecot, alice, async (imap) => (await imap.fetchAll('1:*', { uid: true, flags: true })).map((m) => m.flags?.has('\\Seen') ?? false));
  assert.deepEqual(seen, [true, true, false]);
});
