/**
 * Each hook into imapflow's internals is checked against what the installed imapflow has: with
 * what a hook relies on taken away, that hook (and only what relies on the same internal) is
 * reported off, with one warning and the gauge at 0, and its caller takes imapflow's own way.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { ImapFlow } from 'imapflow';
import { connectionBusy, fastPaths, inspectFastPaths, reportFastPaths, type FastPathHook } from '../../src/imap/fast-paths.js';
import { LiteralTap } from '../../src/imap/literal-tap.js';
import { createLogger } from '../../src/logging/logger.js';

const sample = () => new ImapFlow({ host: '127.0.0.1', port: 1, logger: false });
const ALL_ON = { 'literal-tap': true, 'login-diet': true, 'busy-check': true };

/** `client` with one of its members shadowed by undefined, as a release that renamed it would have. */
function without(client: ImapFlow, member: string): ImapFlow {
  Object.defineProperty(client, member, { value: undefined, configurable: true });
  return client;
}

test('the installed imapflow fits every hook', { timeout: 30_000 }, () => {
  assert.deepEqual(fastPaths(), ALL_ON);
  assert.deepEqual(inspectFastPaths(sample()), ALL_ON);
});

test('literal-tap: without the response streamer the tap is off, and LiteralTap.of falls back to imapflow', { timeout: 30_000 }, () => {
  const client = without(sample(), 'streamer');
  assert.deepEqual(inspectFastPaths(client), { ...ALL_ON, 'literal-tap': false });
  assert.equal(LiteralTap.of(client), undefined);
  const renamed = sample();
  (renamed as unknown as { streamer: Record<string, unknown> }).streamer.literalBuffer = undefined;
  assert.deepEqual(inspectFastPaths(renamed), { ...ALL_ON, 'literal-tap': false });
});

for (const member of ['run', 'authenticate', 'folders', 'capabilities']) {
  test(`login-diet: without imapflow's ${member} the diet is off`, { timeout: 30_000 }, () => {
    assert.deepEqual(inspectFastPaths(without(sample(), member)), { ...ALL_ON, 'login-diet': false });
  });
}

test('busy-check: without connectionBusy a connection counts as busy (never kept), and the tap is off too', { timeout: 30_000 }, () => {
  const client = without(sample(), 'connectionBusy');
  const paths = inspectFastPaths(client);
  assert.deepEqual(paths, { ...ALL_ON, 'busy-check': false, 'literal-tap': false });
  assert.equal(connectionBusy(client, paths), true);
  assert.equal(connectionBusy(sample(), ALL_ON), false, 'an idle, unconnected client is not busy');
});

test('one warning line per hook that is off, and the gauge for every hook', { timeout: 30_000 }, () => {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  const gauge: Partial<Record<FastPathHook, boolean>> = {};
  reportFastPaths(createLogger({ level: 'info', format: 'text', stream }), (hook, on) => (gauge[hook] = on), { ...ALL_ON, 'login-diet': false });
  assert.deepEqual(gauge, { ...ALL_ON, 'login-diet': false });
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, /warn: Fast path login-diet is off: the installed imapflow does not have the internals it relies on/);
});
