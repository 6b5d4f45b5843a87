/**
 * Reading the session's messages (src/imap/message-reader.ts): small ones through the
 * read-ahead, large ones in windows or with imapflow's download; each stream says when its
 * body has fully arrived; a message read whole tells its true size once; a message that is gone
 * fails as gone; and a stream cut short or stalled past the backend timeout marks the
 * connection interrupted, so that it is never kept.
 */
import assert from 'node:assert/strict';
import type { Readable } from 'node:stream';
import { test } from 'node:test';
import { BackendSteps } from '../../src/imap/backend-step.js';
import { MessageReader } from '../../src/imap/message-reader.js';
import { SMALL_MESSAGE } from '../../src/imap/read-ahead.js';
import { MaildropError } from '../../src/maildrop/errors.js';
import { FakeImap, stepConnection, type FakeOptions } from './fake-imap.js';

const T = { timeout: 30_000 };
const LARGE = SMALL_MESSAGE + 1000;

function reader(imap: FakeImap, options: { tap?: boolean; timeoutMs?: number; skip?: (i: number) => boolean } = {}) {
  const connection = stepConnection(imap.client);
  const steps = new BackendSteps({ timeoutMs: 1000 }, connection);
  const messages = imap.messages.map((m) => ({ uid: m.uid, size: m.body.length }));
  const reading = { timeoutMs: options.timeoutMs ?? 1000, chunkSize: 64 * 1024, tapAllowed: options.tap ?? false };
  const read = new MessageReader(imap.client, messages, options.skip ?? (() => false), connection, steps, reading);
  return { read, connection, messages };
}

async function drain(stream: Readable): Promise<Buffer> {
  const got: Buffer[] = [];
  for await (const chunk of stream) got.push(chunk as Buffer);
  return Buffer.concat(got);
}

/** Reads the first chunk and stops, as a TOP that has its lines does; resolves once the stream closed. */
async function giveUp(stream: Readable): Promise<void> {
  const closed = new Promise((resolve) => stream.once('close', resolve));
  for await (const chunk of stream) if (chunk) break;
  await closed;
}

function mailbox(options: FakeOptions, ...sizes: number[]): FakeImap {
  const imap = new FakeImap(options);
  imap.add(...sizes.map((size, n) => Buffer.alloc(size, 0x41 + n)));
  return imap;
}

test('small messages: read ahead in one FETCH, each whole at once, its true size told once', T, async () => {
  const imap = mailbox({}, 100, 200, 300);
  const { read } = reader(imap);
  const first = await read.read(0, 1);
  assert.equal(first.arrived, true, 'read ahead: all of it is here');
  assert.ok((await drain(first)).equals(imap.messages[0]!.body));
  assert.ok((await drain(await read.read(1, 2))).equals(imap.messages[1]!.body));
  assert.deepEqual(imap.calls, ['FETCH 1:3 BODY[]']);
  assert.equal(read.takeOctets(0), 100);
  assert.equal(read.takeOctets(0), undefined, 'told once');
  await read.settled();
});

test('a message the client deleted is not fetched ahead', T, async () => {
  const imap = mailbox({}, 100, 200, 300);
  const deleted = new Set([1]);
  const { read } = reader(imap, { skip: (i) => deleted.has(i) });
  await drain(await read.read(0, 1));
  assert.deepEqual(imap.calls, ['FETCH 1,3 BODY[]']);
});

test('a small message the server no longer has fails as gone', T, async () => {
  const imap = mailbox({}, 100);
  const { read } = reader(imap);
  imap.messages.length = 0;
  const err = await read.read(0, 1).catch((e: unknown) => e);
  assert.ok(err instanceof MaildropError);
  assert.equal(err.kind, 'gone');
  assert.equal(err.message, 'message UID 1 no longer exists');
});

test('a large message without the tap: imapflow\'s download; arrived once it has all come through', T, async () => {
  const imap = mailbox({}, 100, LARGE);
  const { read, connection } = reader(imap);
  const stream = await read.read(1, 2);
  assert.equal(stream.arrived, false);
  assert.equal(read.takeOctets(1), undefined, 'not read whole yet');
  assert.ok((await drain(stream)).equals(imap.messages[1]!.body));
  assert.equal(stream.arrived, true);
  assert.equal(read.takeOctets(1), LARGE);
  assert.deepEqual(imap.calls, ['FETCH 2 download']);
  assert.equal(connection.interrupted, false);
});

test('a download given up part way interrupts the connection; a message gone fails as gone', T, async () => {
  const imap = mailbox({}, LARGE, LARGE);
  const { read, connection } = reader(imap);
  const stream = await read.read(0, 1);
  await giveUp(stream);
  assert.equal(connection.interrupted, true);
  imap.messages.pop();
  const err = await read.read(1, 2).catch((e: unknown) => e);
  assert.ok(err instanceof MaildropError && err.kind === 'gone');
});

test('a large message through the tap comes in windows; given up part way, it interrupts', T, async () => {
  const imap = mailbox({ wire: true }, LARGE, LARGE);
  const { read, connection } = reader(imap, { tap: true });
  const whole = await read.read(0, 1);
  assert.ok((await drain(whole)).equals(imap.messages[0]!.body));
  assert.equal(read.takeOctets(0), LARGE);
  assert.equal(connection.interrupted, false);
  const cut = await read.read(1, 2);
  await giveUp(cut);
  assert.equal(connection.interrupted, true);
  await read.settled();
  assert.ok(imap.calls.every((c) => /^FETCH [12] BODY\[\]<\d+\.65536>$/.test(c)), imap.calls.join('; '));
});

test('a small body still arriving: the reader sees it as it comes, and it ends whole', T, async () => {
  const imap = mailbox({ wire: true }, 3000);
  imap.stalled = true;
  const { read, connection } = reader(imap, { tap: true });
  const stream = await read.read(0, 1);
  assert.equal(stream.arrived, false, 'half of it is here');
  imap.resume();
  assert.ok((await drain(stream)).equals(imap.messages[0]!.body));
  assert.equal(stream.arrived, true);
  assert.equal(connection.interrupted, false);
  await read.settled();
});

test('a small body that stalls past the backend timeout fails fatally and interrupts the connection', T, async () => {
  const imap = mailbox({ wire: true }, 3000);
  imap.stalled = true;
  const { read, connection } = reader(imap, { tap: true, timeoutMs: 50 });
  const stream = await read.read(0, 1);
  const err = await drain(stream).catch((e: unknown) => e);
  assert.ok(err instanceof MaildropError);
  assert.equal(err.kind, 'temporary');
  assert.equal(err.fatal, true);
  assert.equal(err.message, 'fetching message UID 1 timed out after 0.05 s');
  assert.equal(connection.interrupted, true);
  imap.resume();
  await read.settled();
});
