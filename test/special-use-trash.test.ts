/**
 * `--delete-mode move:\Trash`: the special-use name stands for the folder the server flags
 * \Trash (RFC 6154), whatever it is called; Gmail's is [Gmail]/Trash, or [Gmail]/Papierkorb on
 * a German account. Played by a Dovecot whose \Trash folder is "Papierkorb", next to a folder
 * called "Trash" that carries no flag, and by a Dovecot with no \Trash folder at all.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { ImapFlow } from 'imapflow';
import { emptyMailbox, mailboxState, startDovecot, withMailbox, type Dovecot } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { settled, startProxy, type TestProxy } from './support/proxy.js';

const TEST = { timeout: 120_000 };
const alice = { name: 'alice', password: 'alice-secret' };
const TRASH = '\\Trash';

/** Papierkorb is the \Trash folder; "Trash" is only a name. */
const WITH_TRASH = [
  'namespace inbox {',
  '  inbox = yes',
  '  mailbox Papierkorb {',
  '    special_use = \\Trash',
  '    auto = create',
  '  }',
  '  mailbox Trash {',
  '    auto = create',
  '  }',
  '}',
].join('\n');

/** Only a folder called "Trash", flagged nothing. */
const WITHOUT_TRASH = ['namespace inbox {', '  inbox = yes', '  mailbox Trash {', '    auto = create', '  }', '}'].join('\n');

let withTrash: Dovecot;
let withoutTrash: Dovecot;

before(async () => {
  withTrash = await startDovecot({ extraConfig: WITH_TRASH });
  withoutTrash = await startDovecot({ extraConfig: WITHOUT_TRASH });
}, { timeout: 60_000 });

after(async () => {
  await withTrash?.stop();
  await withoutTrash?.stop();
}, { timeout: 60_000 });

async function fill(dovecot: Dovecot): Promise<void> {
  for (let i = 1; i <= 4; i++) await dovecot.deliver('alice', `Subject: m${i}\nMessage-ID: <m${i}@trash>\n\nbody ${i}\n`);
}

/** Runs `run` against a proxy of its own; returns the IMAP commands the proxy sent (from its debug log). */
async function withProxy(dovecot: Dovecot, flagOnDele: boolean, run: (proxy: TestProxy) => Promise<void>): Promise<string[]> {
  const proxy = await startProxy({ imapPort: dovecot.imapPort, policy: { deleteMode: { kind: 'move', folder: TRASH }, flagOnDele } });
  try {
    await run(proxy);
    const log = proxy.log();
    await settled(proxy);
    return log.split('\n').filter((l) => /imap: \S+ [A-Z]/.test(l));
  } finally {
    await proxy.close();
  }
}

/** The commands that list every folder (what looking up a special-use folder costs). */
const folderListings = (commands: string[]) => commands.filter((l) => /imap: \S+ LIST .*"\*"/.test(l));

const subjects = async (dovecot: Dovecot, mailbox = 'INBOX') => (await mailboxState(dovecot, alice, mailbox)).map((m) => m.subject);

test('the server advertises Papierkorb as \\Trash (the test setup)', TEST, async () => {
  await withMailbox(withTrash, alice, async (imap: ImapFlow) => {
    const folders = await imap.list();
    const papierkorb = folders.find((f) => f.path === 'Papierkorb');
    assert.ok(papierkorb?.flags.has(TRASH), JSON.stringify(folders.map((f) => [f.path, [...f.flags]])));
    assert.equal(folders.find((f) => f.path === 'Trash')?.flags.has(TRASH), false);
  });
});

for (const flagOnDele of [false, true]) {
  test(`move:\\Trash moves the deleted messages to the folder flagged \\Trash (Papierkorb), not to the one named Trash${flagOnDele ? ' (--flag-on-dele)' : ''}`, TEST, async () => {
    await emptyMailbox(withTrash, alice);
    await fill(withTrash);
    const commands = await withProxy(withTrash, flagOnDele, async (proxy) => {
      const c = await RawPop3.login(proxy.port, alice.name, alice.password);
      await c.command('DELE 2');
      await c.command('DELE 4');
      assert.match(await c.command('QUIT', 30_000), /^\+OK .*2 messages deleted/);
      await c.waitClose();
    });
    assert.deepEqual(await subjects(withTrash), ['m1', 'm3']);
    const trashed = await mailboxState(withTrash, alice, 'Papierkorb');
    assert.deepEqual(trashed.slice(-2).map((m) => [m.subject, m.deleted]), [['m2', false], ['m4', false]]);
    assert.deepEqual(await subjects(withTrash, 'Trash'), [], 'the folder merely named Trash is not it');
    assert.equal(folderListings(commands).length, 1, `looked up once, at QUIT: ${commands.join('\n')}`);
  });
}

test('move:\\Trash with no folder flagged \\Trash: QUIT fails with a clear error and nothing is removed', TEST, async () => {
  await fill(withoutTrash);
  for (const flagOnDele of [false, true]) {
    await withProxy(withoutTrash, flagOnDele, async (proxy) => {
      const c = await RawPop3.login(proxy.port, alice.name, alice.password);
      await c.command('DELE 1');
      await c.command('DELE 3');
      const reply = await c.command('QUIT', 30_000);
      // The client is told to ask the administrator; the log says why.
      assert.equal(reply, '-ERR [SYS/PERM] Deleted messages were not removed. Nothing was deleted; tell the administrator.');
      assert.match(proxy.log(), /Removing deleted messages failed: .*no folder on the mail server carries the special-use flag \\Trash/);
      await c.waitClose();
    });
    assert.deepEqual(await subjects(withoutTrash), ['m1', 'm2', 'm3', 'm4']);
    assert.equal((await mailboxState(withoutTrash, alice)).some((m) => m.deleted), false, 'no \\Deleted flag left behind');
    assert.deepEqual(await subjects(withoutTrash, 'Trash'), []);
  }
});

test('a session that deletes nothing never looks the folder up', TEST, async () => {
  const commands = await withProxy(withoutTrash, false, async (proxy) => {
    const c = await RawPop3.login(proxy.port, alice.name, alice.password);
    await c.multiline('RETR 1');
    assert.match(await c.command('QUIT', 30_000), /^\+OK/);
    await c.waitClose();
  });
  assert.ok(commands.some((l) => /FETCH/.test(l)), 'the log shows the IMAP commands');
  assert.deepEqual(folderListings(commands), []);
});
