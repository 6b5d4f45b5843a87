/**
 * What QUIT does with the deleted messages (src/imap/commit-strategies.ts): each delete mode
 * removes exactly the UIDs it is given and never a message another client flagged; a server
 * without UIDPLUS gets a plain EXPUNGE only when every flagged message is the session's; a
 * move goes to the folder the server itself flags with a special-use name, and the copy there
 * carries no \Deleted flag of the session's.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import winston from 'winston';
import { BackendSteps } from '../../src/imap/backend-step.js';
import { commitDeletions, type DeleteMode } from '../../src/imap/commit-strategies.js';
import { DeletedFlags } from '../../src/imap/deleted-flags.js';
import { DeletionLedger } from '../../src/imap/deletion-ledger.js';
import { MaildropError } from '../../src/maildrop/errors.js';
import { FakeImap, stepConnection, type FakeOptions } from './fake-imap.js';

const T = { timeout: 30_000 };
const quiet = winston.createLogger({ silent: true });

/** A mailbox of four messages, the third flagged \Deleted by another client. */
function session(options: FakeOptions = {}) {
  const imap = new FakeImap(options);
  const uids = imap.add(10, 20, 30, 40);
  imap.messages[2]!.flags.add('\\Deleted');
  const connection = {
    ...stepConnection(imap.client),
    withFresh: () => Promise.reject(new Error('not here')),
  };
  const steps = new BackendSteps({ timeoutMs: 1000 }, connection);
  const ledger = new DeletionLedger();
  ledger.listed(uids, new Set([uids[2]!]));
  const flags = new DeletedFlags(connection, steps, ledger, 1000, quiet);
  return { imap, uids, ledger, flags, commit: (mode: DeleteMode, these: number[]) =>
    commitDeletions(mode, these, { client: imap.client, steps, flags, ledger, logger: quiet }) };
}

test('expunge with UIDPLUS: UID EXPUNGE of exactly these UIDs; another client\'s flagged one stays', T, async () => {
  const { imap, uids, commit, ledger } = session();
  await commit({ kind: 'expunge' }, [uids[0]!, uids[1]!]);
  assert.deepEqual(imap.calls, [`EXPUNGE ${uids[0]}:${uids[1]}`]);
  assert.deepEqual(imap.messages.map((m) => m.uid), [uids[2], uids[3]]);
  assert.deepEqual(ledger.oursAmong(uids), [uids[0], uids[1]], 'noted as ours before the STORE imapflow sends');
});

test('expunge without UIDPLUS: refused while another client\'s message is flagged; nothing removed', T, async () => {
  const { imap, uids, commit } = session({ capabilities: ['IMAP4rev1'] });
  const err = await commit({ kind: 'expunge' }, [uids[0]!]).catch((e: unknown) => e);
  assert.ok(err instanceof MaildropError);
  assert.equal(err.kind, 'permanent');
  assert.match(err.message, /lacks UIDPLUS and 1 other message\(s\) are flagged/);
  assert.deepEqual(imap.calls, ['SEARCH {"deleted":true}']);
  assert.equal(imap.messages.length, 4);
});

test('expunge without UIDPLUS: plain EXPUNGE when every flagged message is the session\'s', T, async () => {
  const { imap, uids, commit } = session({ capabilities: ['IMAP4rev1'] });
  imap.messages[2]!.flags.delete('\\Deleted');
  imap.messages[0]!.flags.add('\\Deleted');
  await commit({ kind: 'expunge' }, [uids[0]!, uids[1]!]);
  assert.deepEqual(imap.calls, ['SEARCH {"deleted":true}', `EXPUNGE ${uids[0]}:${uids[1]}`]);
});

test('expunge refused by the server: a temporary failure', T, async () => {
  const { imap, uids, commit } = session();
  imap.refuse.add('EXPUNGE');
  const err = await commit({ kind: 'expunge' }, [uids[0]!]).catch((e: unknown) => e);
  assert.ok(err instanceof MaildropError);
  assert.equal(err.kind, 'temporary');
  assert.equal(err.message, 'expunging the deleted messages failed');
});

test('flag: the messages are only flagged, and the flags are the session\'s', T, async () => {
  const { imap, uids, commit, ledger } = session();
  await commit({ kind: 'flag' }, [uids[0]!, uids[2]!]);
  assert.deepEqual(imap.calls, [`STORE ${uids[0]},${uids[2]} +FLAGS \\Deleted`]);
  assert.equal(imap.messages.length, 4);
  assert.deepEqual(ledger.oursAmong(uids), [uids[0]], 'the one flagged before is not');
  imap.refuse.add('STORE');
  const err = await commit({ kind: 'flag' }, [uids[1]!]).catch((e: unknown) => e);
  assert.ok(err instanceof MaildropError);
  assert.equal(err.message, 'flagging the deleted messages \\Deleted failed');
});

test('move to a folder: the session\'s own flags come off first, then UID MOVE of exactly these', T, async () => {
  const { imap, uids, commit, flags } = session();
  await flags.flag([uids[1]!]);
  imap.calls.length = 0;
  await commit({ kind: 'move', folder: 'Archive' }, [uids[0]!, uids[1]!, uids[2]!]);
  assert.deepEqual(imap.calls, [`STORE ${uids[1]} -FLAGS \\Deleted`, `MOVE ${uids[0]}:${uids[2]} Archive`]);
  assert.deepEqual(imap.messages.map((m) => m.uid), [uids[3]]);
});

test('move to \\Trash: the folder the server flags \\Trash, whatever its name; never a \\Noselect one', T, async () => {
  const folders = [
    { path: 'Trash', flags: [] },
    { path: '[Gmail]', flags: ['\\Noselect', '\\Trash'] },
    { path: '[Gmail]/Papierkorb', flags: ['\\HasNoChildren', '\\trash'] },
  ];
  const { imap, uids, commit } = session({ folders });
  await commit({ kind: 'move', folder: '\\Trash' }, [uids[0]!]);
  assert.deepEqual(imap.calls, ['LIST', `MOVE ${uids[0]} [Gmail]/Papierkorb`]);
});

test('move to a special-use folder the server does not have: a permanent failure, nothing touched', T, async () => {
  const { imap, uids, commit, flags } = session({ folders: [{ path: 'Trash', flags: [] }] });
  await flags.flag([uids[0]!]);
  imap.calls.length = 0;
  const err = await commit({ kind: 'move', folder: '\\Trash' }, [uids[0]!]).catch((e: unknown) => e);
  assert.ok(err instanceof MaildropError);
  assert.equal(err.kind, 'permanent');
  assert.match(err.message, /no folder on the mail server carries the special-use flag \\Trash/);
  assert.deepEqual(imap.calls, ['LIST']);
  assert.equal(imap.messages.length, 4);
});

test('a move the server refuses leaves the session\'s flags noted, for the abandon to take back', T, async () => {
  const { imap, uids, commit, flags, ledger } = session();
  await flags.flag([uids[0]!]);
  imap.refuse.add('MOVE');
  const err = await commit({ kind: 'move', folder: 'Archive' }, [uids[0]!]).catch((e: unknown) => e);
  assert.ok(err instanceof MaildropError);
  assert.equal(err.message, 'moving the deleted messages to Archive failed');
  assert.deepEqual(ledger.oursAmong(uids), [uids[0]]);
});
