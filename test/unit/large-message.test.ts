/**
 * A large message in windows (src/imap/large-message.ts), through a real imapflow response
 * parser with the literal tap in front of it: byte for byte at sizes around the window
 * boundaries, the next window asked for as the current one arrives, a message that is gone
 * told apart from one cut short, and no windows at all where the connection has no tap.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LargeMessages } from '../../src/imap/large-message.js';
import { LiteralTap, type BodyStream } from '../../src/imap/literal-tap.js';
import { FakeImap } from './fake-imap.js';

const T = { timeout: 30_000 };
const WINDOW = 1000;

function body(size: number): Buffer {
  return Buffer.from(Array.from({ length: size }, (_, i) => 0x21 + (i % 90)));
}

async function drain(stream: BodyStream): Promise<Buffer> {
  const got: Buffer[] = [];
  for await (const chunk of stream) got.push(chunk as Buffer);
  return Buffer.concat(got);
}

test('no tap allowed, or none possible: no windows, the caller downloads with imapflow', T, async () => {
  const imap = new FakeImap({ wire: true });
  const [uid] = imap.add(body(5000));
  assert.equal(new LargeMessages(imap.client, false).fetch(uid!, 5000, WINDOW), undefined);
  const busy = new FakeImap({ wire: true });
  busy.busy = true;
  assert.equal(new LargeMessages(busy.client, true).fetch(uid!, 5000, WINDOW), undefined);
  assert.deepEqual([...imap.calls, ...busy.calls], []);
});

for (const size of [WINDOW - 1, WINDOW, WINDOW + 1, 2 * WINDOW, 2 * WINDOW + 500]) {
  test(`${size} octets in windows of ${WINDOW}: exact, through the tap, one FETCH per window`, T, async () => {
    const imap = new FakeImap({ wire: true });
    const data = body(size);
    const [uid] = imap.add(data);
    const large = new LargeMessages(imap.client, true);
    const got = await large.fetch(uid!, size, WINDOW);
    assert.ok(got !== undefined);
    assert.equal(got.size, size);
    assert.ok((await drain(got.stream)).equals(data));
    await large.settled();
    // A full window asks for the next: at an exact multiple, one more comes back empty.
    const windows = Math.floor(size / WINDOW) + 1;
    const asked = Array.from({ length: windows }, (_, i) => `FETCH ${uid} BODY[]<${i * WINDOW}.${WINDOW}>`);
    assert.deepEqual(imap.calls, asked);
    const bodies = windows - (size % WINDOW === 0 ? 1 : 0);
    assert.equal(LiteralTap.of(imap.client)?.taken, bodies);
  });
}

test('a message the server no longer has: undefined before any data', T, async () => {
  const imap = new FakeImap({ wire: true });
  const large = new LargeMessages(imap.client, true);
  assert.equal(await large.fetch(9, 5000, WINDOW), undefined);
  await large.settled();
});

/** `imap` with `then` done to it just before its second FETCH (the second window) is sent. */
function beforeSecondWindow(imap: FakeImap, then: () => void): void {
  const fetch = imap.fetch.bind(imap);
  let asked = 0;
  imap.fetch = (range, query) => {
    if (++asked === 2) then();
    return fetch(range, query);
  };
}

/** What a stream delivered before it failed, and its error. */
async function readToFailure(stream: BodyStream): Promise<{ got: Buffer; err: unknown }> {
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of stream) chunks.push(chunk as Buffer);
  } catch (err) {
    return { got: Buffer.concat(chunks), err };
  }
  return { got: Buffer.concat(chunks), err: undefined };
}

test('a message that disappears after its first window: the stream fails after what came', T, async () => {
  const imap = new FakeImap({ wire: true });
  const data = body(2500);
  const [uid] = imap.add(data);
  // Expunged by another client while the first window was on its way.
  beforeSecondWindow(imap, () => (imap.messages.length = 0));
  const large = new LargeMessages(imap.client, true);
  const message = await large.fetch(uid!, 2500, WINDOW);
  assert.ok(message !== undefined);
  const { got, err } = await readToFailure(message.stream);
  assert.ok(err instanceof Error);
  assert.equal(err.message, `message UID ${uid} disappeared while it was read`);
  assert.ok(got.equals(data.subarray(0, WINDOW)), 'the first window was delivered');
  await large.settled();
});

test('a window FETCH that fails: before any data the promise rejects; after, the stream errors', T, async () => {
  const first = new FakeImap({ wire: true });
  const [uid] = first.add(body(2500));
  first.fail.set('FETCH', new Error('Socket closed'));
  const large = new LargeMessages(first.client, true);
  await assert.rejects(large.fetch(uid!, 2500, WINDOW)!, /Socket closed/);
  await large.settled();
  const later = new FakeImap({ wire: true });
  const data = body(2500);
  later.add(data);
  beforeSecondWindow(later, () => later.fail.set('FETCH', new Error('Socket closed')));
  const message = await new LargeMessages(later.client, true).fetch(uid!, 2500, WINDOW);
  assert.ok(message !== undefined);
  const { got, err } = await readToFailure(message.stream);
  assert.match(String(err), /Socket closed/);
  assert.ok(got.equals(data.subarray(0, WINDOW)));
});

test('a reader that gives up stops the windows: no next window is asked for', T, async () => {
  const imap = new FakeImap({ wire: true });
  const [uid] = imap.add(body(10 * WINDOW));
  imap.stalled = true;
  const large = new LargeMessages(imap.client, true);
  const got = await large.fetch(uid!, 10 * WINDOW, WINDOW);
  assert.ok(got !== undefined);
  got.stream.destroy();
  imap.resume();
  await large.settled();
  assert.equal(imap.calls.length, 2, 'the window asked as the first arrived, and no more');
});
