/**
 * The \Deleted flag on the server in step with the ledger (src/imap/deleted-flags.ts): a flag
 * is noted as the session's before its STORE goes out, a message another client had flagged
 * is never taken back, RSET takes back only the session's flags, and an abandoned session takes
 * them back over a new connection when its own is broken.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ImapFlow } from 'imapflow';
import winston from 'winston';
import { BackendSteps } from '../../src/imap/backend-step.js';
import { DeletedFlags } from '../../src/imap/deleted-flags.js';
import { DeletionLedger } from '../../src/imap/deletion-ledger.js';
import { MaildropError } from '../../src/maildrop/errors.js';
import { FakeImap } from './fake-imap.js';

const T = { timeout: 30_000 };
const quiet = winston.createLogger({ silent: true });

function setup(imap: FakeImap, deleted: ReadonlySet<number> | undefined) {
  const fresh: FakeImap[] = [];
  const connection = {
    client: imap.client,
    interrupted: false,
    interrupt() {
      this.interrupted = true;
    },
    async withFresh<R>(work: (client: ImapFlow) => Promise<R>): Promise<R> {
      const other = new FakeImap();
      other.messages.push(...imap.messages);
      fresh.push(other);
      try {
        return await work(other.client);
      } finally {
        other.close();
      }
    },
  };
  const ledger = new DeletionLedger();
  ledger.listed(imap.messages.map((m) => m.uid), deleted);
  const steps = new BackendSteps({ timeoutMs: 1000 }, connection);
  return { connection, ledger, fresh, flags: new DeletedFlags(connection, steps, ledger, 1000, quiet) };
}

test('flags known from the listing: one STORE, and only the messages not flagged before are ours', T, async () => {
  const imap = new FakeImap();
  const [a, b, c] = imap.add(10, 20, 30);
  imap.messages[1]!.flags.add('\\Deleted');
  const { flags, ledger } = setup(imap, new Set([b!]));
  assert.equal(await flags.flag([a!, b!, c!]), true);
  assert.deepEqual(imap.calls, [`STORE ${a}:${c} +FLAGS \\Deleted`]);
  assert.deepEqual(ledger.oursAmong([a!, b!, c!]), [a, c]);
});

test('flags not known: the server is asked about these UIDs only, once, before the STORE', T, async () => {
  const imap = new FakeImap();
  const [a, b, c] = imap.add(10, 20, 30);
  imap.messages[1]!.flags.add('\\Deleted');
  const { flags, ledger } = setup(imap, undefined);
  await flags.flag([a!, b!]);
  await flags.flag([a!, b!]);
  assert.deepEqual(imap.calls, [
    `SEARCH {"uid":"${a}:${b}","deleted":true}`,
    `STORE ${a}:${b} +FLAGS \\Deleted`,
    `STORE ${a}:${b} +FLAGS \\Deleted`,
  ]);
  assert.deepEqual(ledger.oursAmong([a!, b!, c!]), [a]);
});

test('with ESEARCH the answer comes as a sequence set', T, async () => {
  const imap = new FakeImap({ capabilities: ['UIDPLUS', 'ESEARCH'] });
  const uids = imap.add(1, 1, 1, 1);
  for (const m of imap.messages.slice(1, 3)) m.flags.add('\\Deleted');
  const { flags, ledger } = setup(imap, undefined);
  await flags.note(uids);
  assert.deepEqual(ledger.oursAmong(uids), [uids[0], uids[3]]);
});

test('a STORE racing with an abandon: the flag is the session\'s before the command goes out', T, async () => {
  const imap = new FakeImap();
  const [a] = imap.add(10);
  const { flags, ledger } = setup(imap, new Set());
  let oursWhenSent: number[] = [];
  const store = imap.messageFlagsAdd.bind(imap);
  imap.messageFlagsAdd = async (range, list) => {
    oursWhenSent = ledger.oursAmong([a!]);
    return store(range, list);
  };
  await flags.flag([a!]);
  assert.deepEqual(oursWhenSent, [a]);
});

test('RSET takes back only the session\'s flags, and they are no longer its own', T, async () => {
  const imap = new FakeImap();
  const [a, b] = imap.add(10, 20);
  imap.messages[1]!.flags.add('\\Deleted');
  const { flags, ledger } = setup(imap, new Set([b!]));
  await flags.flag([a!]);
  imap.calls.length = 0;
  await flags.takeBack([a!, b!]);
  assert.deepEqual(imap.calls, [`STORE ${a} -FLAGS \\Deleted`]);
  assert.deepEqual(imap.flagged(), [b], 'the other client\'s flag stays');
  assert.equal(ledger.size, 0);
  await flags.takeBack([a!, b!]);
  assert.equal(imap.calls.length, 1, 'nothing of ours left: nothing sent');
});

test('a refused flag removal is a temporary failure', T, async () => {
  const imap = new FakeImap();
  const [a] = imap.add(10);
  const { flags } = setup(imap, new Set());
  imap.refuse.add('STORE');
  const err = await flags.remove(imap.client, [a!]).catch((e: unknown) => e);
  assert.ok(err instanceof MaildropError);
  assert.equal(err.kind, 'temporary');
  assert.equal(err.message, 'removing \\Deleted flags failed');
  await flags.remove(imap.client, []);
  assert.equal(imap.calls.length, 1, 'no UIDs, no command');
});

test('abandon: the flags go back over the session\'s connection while it works', T, async () => {
  const imap = new FakeImap();
  const uids = imap.add(10, 20);
  const { flags, fresh, connection } = setup(imap, new Set());
  await flags.flag(uids);
  await flags.restore(uids);
  assert.deepEqual(imap.flagged(), []);
  assert.equal(fresh.length, 0);
  assert.equal(connection.interrupted, false);
});

test('abandon on a broken connection: the flags go back over a new one', T, async () => {
  const imap = new FakeImap();
  const uids = imap.add(10, 20);
  const { flags, fresh, connection } = setup(imap, new Set());
  await flags.flag(uids);
  imap.fail.set('STORE', new Error('Socket closed'));
  await flags.restore(uids);
  assert.equal(connection.interrupted, true, 'the session\'s connection is not kept');
  assert.equal(fresh.length, 1);
  assert.deepEqual(fresh[0]!.calls, [`STORE ${uids[0]}:${uids[1]} -FLAGS \\Deleted`]);
  assert.deepEqual(imap.flagged(), []);
  // A connection already gone is not even tried.
  await flags.flag(uids);
  imap.usable = false;
  const sent = imap.calls.length;
  await flags.restore(uids);
  assert.equal(imap.calls.length, sent);
  assert.equal(fresh.length, 2);
});
