/**
 * The backend connection's life (src/imap/backend-connection.ts): a kept connection the server
 * closed meanwhile is replaced by a new login when the mailbox is opened; once the session is
 * over, a connection it left clean goes back to the pool and any other is logged out; a new
 * connection made only to take flags back is logged out whatever happens.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import winston from 'winston';
import { BackendConnection, logout, type ConnectionParts } from '../../src/imap/backend-connection.js';
import { BackendPool } from '../../src/imap/backend-pool.js';
import type { FastPaths } from '../../src/imap/fast-paths.js';
import { FakeImap } from './fake-imap.js';

const T = { timeout: 30_000 };
const quiet = winston.createLogger({ silent: true });
const PATHS: FastPaths = { 'literal-tap': true, 'login-diet': true, 'busy-check': true };
const KEY = 'imap://host:993/alice/INBOX';

function connection(imap: FakeImap, over: Partial<ConnectionParts> = {}) {
  const logins: FakeImap[] = [];
  const pool = new BackendPool({ reuseMs: 60_000, maxTotal: 10, maxPerMailbox: 2 });
  const parts: ConnectionParts = {
    client: imap.client,
    relogin: async () => {
      const fresh = new FakeImap();
      logins.push(fresh);
      return fresh.client;
    },
    mailboxKey: KEY,
    mailbox: 'INBOX',
    timeoutMs: 1000,
    pool,
    paths: PATHS,
    stamp: { tag: 'alice', at: performance.now() },
    reused: false,
    ...over,
  };
  return { backend: new BackendConnection(parts, quiet), pool, logins };
}

const settled = async () => undefined;

test('a session that left its connection clean gives it back to the pool', T, async () => {
  const imap = new FakeImap();
  const { backend, pool } = connection(imap);
  await backend.letGo(true, settled);
  assert.equal(pool.size, 1);
  assert.deepEqual(imap.calls, []);
  assert.equal(pool.take(KEY, 'alice')?.client, imap.client);
  pool.close();
});

test('not kept: an interrupted connection, flags of the session left, a busy one, or no stamp', T, async () => {
  const cases: [string, (imap: FakeImap, backend: BackendConnection) => void, boolean][] = [
    ['interrupted', (_, backend) => backend.interrupt(), true],
    ['flags left', () => undefined, false],
    ['busy after the read-ahead settled', (imap) => (imap.busy = true), true],
  ];
  for (const [why, spoil, clean] of cases) {
    const imap = new FakeImap();
    const { backend, pool } = connection(imap);
    spoil(imap, backend);
    await backend.letGo(clean, settled);
    assert.equal(pool.size, 0, why);
    assert.deepEqual(imap.calls, ['LOGOUT'], why);
  }
  const imap = new FakeImap();
  const { backend, pool } = connection(imap, { stamp: undefined });
  await backend.letGo(true, settled);
  assert.equal(pool.size, 0, 'a login that may not be kept (no --backend-reuse)');
});

test('interrupted while the read-ahead settles: logged out, not kept', T, async () => {
  const imap = new FakeImap();
  const { backend, pool } = connection(imap);
  await backend.letGo(true, async () => backend.interrupt());
  assert.equal(pool.size, 0);
  assert.deepEqual(imap.calls, ['LOGOUT']);
});

test('without the busy-check no connection is ever kept', T, async () => {
  const imap = new FakeImap();
  const { backend, pool } = connection(imap, { paths: { ...PATHS, 'busy-check': false } });
  await backend.letGo(true, settled);
  assert.equal(pool.size, 0);
});

test('a kept connection that is gone: a new login, then the mailbox opened on it', T, async () => {
  const kept = new FakeImap();
  const { backend, logins, pool } = connection(kept, { reused: true });
  backend.interrupt();
  let tries = 0;
  const opened = await backend.open(async () => {
    tries++;
    if (backend.client === kept.client) {
      kept.usable = false;
      throw new Error('Connection not available');
    }
    return 'opened';
  });
  assert.equal(opened, 'opened');
  assert.equal(tries, 2);
  assert.equal(logins.length, 1);
  assert.equal(backend.client, logins[0]!.client);
  assert.equal(kept.usable, false);
  // The new login starts clean: it may be kept.
  await backend.letGo(true, settled);
  assert.equal(pool.size, 1);
  pool.close();
});

test('a failure to open on a new login, or on a kept connection that still works, is the session\'s', T, async () => {
  const fresh = connection(new FakeImap());
  await assert.rejects(fresh.backend.open(() => Promise.reject(new Error('NO [NONEXISTENT]'))), /NONEXISTENT/);
  assert.equal(fresh.logins.length, 0);
  const kept = connection(new FakeImap(), { reused: true });
  await assert.rejects(kept.backend.open(() => Promise.reject(new Error('NO [NOPERM]'))), /NOPERM/);
  assert.equal(kept.logins.length, 0, 'the connection works: the refusal is real');
});

test('a connection made to take flags back is logged out, whether the work succeeds or fails', T, async () => {
  const { backend, logins } = connection(new FakeImap());
  assert.equal(await backend.withFresh(async () => 'done'), 'done');
  await assert.rejects(backend.withFresh(() => Promise.reject(new Error('STORE failed'))), /STORE failed/);
  assert.deepEqual(logins.map((l) => l.calls), [
    ['SELECT INBOX', 'LOGOUT'],
    ['SELECT INBOX', 'LOGOUT'],
  ]);
});

test('logout: LOGOUT where the connection works, closed either way', T, async () => {
  const imap = new FakeImap();
  let closed = 0;
  imap.on('close', () => closed++);
  imap.fail.set('LOGOUT', new Error('Socket closed'));
  await logout(imap.client, 1000);
  assert.equal(closed, 1);
  const gone = new FakeImap();
  gone.usable = false;
  await logout(gone.client, 1000);
  assert.deepEqual(gone.calls, [], 'no LOGOUT on a connection that is gone');
});
