/**
 * The literal tap in front of imapflow's own response parser (its ImapStream, fed as the socket
 * feeds it): claimed bodies come out as BodyStreams, byte for byte, and imapflow parses exactly
 * the responses it would have parsed without them, wherever the chunks split; a connection
 * closed in the middle of a body errors its stream.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { test } from 'node:test';
import type { ImapFlow } from 'imapflow';
import { ImapStream } from 'imapflow/lib/handler/imap-stream.js';
import { BodyStream, LiteralTap } from '../../src/imap/literal-tap.js';

const b = (s: string) => Buffer.from(s, 'latin1');

interface Parsed {
  payload: string;
  literals: string[];
}

/** A stand-in for ImapFlow: what the tap looks at, around a real ImapStream. */
function fakeClient(): { client: ImapFlow; streamer: InstanceType<typeof ImapStream>; parsed: Parsed[]; events: EventEmitter } {
  const streamer = new ImapStream({ logger: { trace() {}, debug() {}, info() {}, warn() {}, error() {} } });
  const parsed: Parsed[] = [];
  streamer.on('readable', () => {
    let item: { payload: Buffer; literals: Buffer[]; next: () => void } | null;
    while ((item = streamer.read()) !== null) {
      parsed.push({ payload: item.payload.toString('latin1'), literals: item.literals.map((l) => l.toString('latin1')) });
      item.next();
    }
  });
  const events = new EventEmitter();
  const client = Object.assign(events, { streamer, usable: true, connectionBusy: () => false }) as unknown as ImapFlow;
  return { client, streamer, parsed, events };
}

function body(n: number): Buffer {
  return b(`Subject: ${n}\r\n\r\n* 1 EXISTS\r\nA1 OK no\r\n{3}\r\n.\r\n${'z'.repeat(n * 13)}\r\nno line end`);
}

const rows: { bytes: Buffer; uid?: number; body?: Buffer }[] = [
  { bytes: b('* 2 EXISTS\r\n') },
  { bytes: Buffer.concat([b(`* 1 FETCH (UID 5 BODY[] {${body(1).length}}\r\n`), body(1), b(')\r\n')]), uid: 5, body: body(1) },
  { bytes: b('* 1 EXPUNGE\r\n') },
  { bytes: Buffer.concat([b(`* 1 FETCH (FLAGS (\\Seen) UID 6 BODY[] {${body(2).length}}\r\n`), body(2), b(' MODSEQ (9))\r\n')]), uid: 6, body: body(2) },
  { bytes: b('* 2 FETCH (UID 7 BODY[] NIL)\r\n') },
  { bytes: b('* 3 FETCH (UID 8 FLAGS (\\Deleted))\r\n') },
  { bytes: Buffer.concat([b(`* 3 FETCH (UID 9 BODY[] {3}\r\n`), b('abc'), b(')\r\n')]) },
  { bytes: b('* FLAGS (\\Seen \\Deleted)\r\n') },
  { bytes: Buffer.concat([b(`* 4 FETCH (UID 10 BODY[] ~{${body(3).length}}\r\n`), body(3), b(')\r\n')]), uid: 10, body: body(3) },
  { bytes: b('A7 OK Fetch completed.\r\n') },
];

async function feed(streamer: InstanceType<typeof ImapStream>, bytes: Buffer, cuts: number[]): Promise<void> {
  let from = 0;
  for (const cut of [...cuts, bytes.length]) {
    if (cut <= from) continue;
    await new Promise<void>((resolve) => (streamer.write(bytes.subarray(from, cut)) ? resolve() : streamer.once('drain', resolve)));
    from = cut;
  }
  // Let imapflow's parser work through its queue.
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
}

async function read(stream: BodyStream): Promise<Buffer> {
  const got: Buffer[] = [];
  for await (const chunk of stream) got.push(chunk as Buffer);
  return Buffer.concat(got);
}

/** What imapflow parses from the responses that were not taken out. */
async function reference(): Promise<Parsed[]> {
  const { streamer, parsed } = fakeClient();
  await feed(streamer, Buffer.concat(rows.filter((r) => r.uid === undefined).map((r) => r.bytes)), []);
  return parsed;
}

test('imapflow parses the same responses, the bodies come out exact, split at every byte position', { timeout: 30_000 }, async () => {
  const expected = await reference();
  assert.equal(expected.length, 7);
  const all = Buffer.concat(rows.map((r) => r.bytes));
  for (let cut = 0; cut <= all.length; cut += cut < 200 || cut > all.length - 200 ? 1 : 7) {
    const { client, streamer, parsed } = fakeClient();
    const tap = LiteralTap.of(client);
    assert.ok(tap, 'the tap goes in on an idle, clean connection');
    assert.equal(LiteralTap.of(client), tap, 'one tap per connection');
    const streams = new Map<number, Promise<Buffer>>();
    for (const row of rows) {
      if (row.uid === undefined) continue;
      const uid = row.uid;
      tap.claim(uid, (size) => {
        assert.equal(size, row.body!.length);
        const stream = new BodyStream(size);
        streams.set(uid, read(stream));
        return stream.target();
      });
    }
    // UID 9 is claimed by nobody: imapflow gets it.
    await feed(streamer, all, [cut]);
    assert.deepEqual(parsed, expected, `cut at ${cut}`);
    for (const row of rows) if (row.uid !== undefined) assert.ok((await streams.get(row.uid))!.equals(row.body!), `UID ${row.uid}, cut at ${cut}`);
  }
});

test('the connection closing in the middle of a body errors its stream; a body already whole stays whole', { timeout: 30_000 }, async () => {
  const all = Buffer.concat(rows.map((r) => r.bytes));
  const secondStart = all.indexOf(body(2));
  for (const into of [0, 1, 17, body(2).length - 1]) {
    const { client, streamer, events } = fakeClient();
    const tap = LiteralTap.of(client)!;
    const results = new Map<number, Promise<Buffer | Error>>();
    for (const uid of [5, 6]) {
      tap.claim(uid, (size) => {
        const stream = new BodyStream(size);
        results.set(
          uid,
          read(stream).catch((err: Error) => err),
        );
        return stream.target();
      });
    }
    await feed(streamer, all.subarray(0, secondStart + into), [secondStart]);
    // imapflow destroys its streamer when the socket closes, and says so.
    streamer.destroy();
    events.emit('close');
    assert.ok(((await results.get(5)) as Buffer).equals(body(1)));
    const second = await results.get(6);
    assert.ok(second instanceof Error, `cut ${into} octets into the body: an error, not an end`);
  }
});

test('no tap where the parser is in the middle of a response or the connection is busy', { timeout: 30_000 }, async () => {
  const { client, streamer } = fakeClient();
  await feed(streamer, b('* 1 FETCH (UID 5 BODY[] {10}\r\nabc'), []);
  assert.equal(LiteralTap.of(client), undefined);
  const busy = fakeClient();
  (busy.client as unknown as { connectionBusy: () => boolean }).connectionBusy = () => true;
  assert.equal(LiteralTap.of(busy.client), undefined);
});

test('a large body held back while its reader falls behind: the parser stops taking input, then goes on', { timeout: 30_000 }, async () => {
  const big = Buffer.alloc(3 * 1024 * 1024, 0x61);
  const { client, streamer, parsed } = fakeClient();
  const tap = LiteralTap.of(client)!;
  let stream: BodyStream | undefined;
  tap.claimSole(42, (size) => {
    stream = new BodyStream(size, 256 * 1024);
    return stream.target();
  });
  const all = Buffer.concat([b(`* 1 FETCH (BODY[] {${big.length}}\r\n`), big, b(' UID 42)\r\nA1 OK done\r\n')]);
  // The socket's side: chunks of 64 KiB written as fast as the parser takes them.
  let written = 0;
  const writing = (async () => {
    for (let at = 0; at < all.length; at += 65536) {
      const chunk = all.subarray(at, at + 65536);
      if (!streamer.write(chunk)) await new Promise((resolve) => streamer.once('drain', resolve));
      written = at + chunk.length;
    }
  })();
  for (let i = 0; i < 50; i++) await new Promise((resolve) => setImmediate(resolve));
  assert.ok(stream, 'the sole claim takes a body that names its UID after it');
  assert.ok(written < 1024 * 1024, `input stops while nobody reads (${written} octets taken)`);
  const got: Buffer[] = [];
  for await (const chunk of stream) got.push(chunk as Buffer);
  await writing;
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
  assert.ok(Buffer.concat(got).equals(big));
  assert.deepEqual(parsed.map((p) => p.payload), ['A1 OK done']);
});

test('a body naming its UID after it is not taken while other claims are outstanding', { timeout: 30_000 }, async () => {
  const { client, streamer, parsed } = fakeClient();
  const tap = LiteralTap.of(client)!;
  const sole = new BodyStream(3);
  tap.claimSole(42, () => sole.target());
  tap.claim(43, () => assert.fail('not this one'));
  await feed(streamer, b('* 1 FETCH (BODY[] {3}\r\nabc UID 42)\r\nA1 OK done\r\n'), []);
  assert.deepEqual(parsed, [{ payload: '* 1 FETCH (BODY[] {3}\r\n UID 42)', literals: ['abc'] }, { payload: 'A1 OK done', literals: [] }]);
});

test('a UID claimed twice gets its rows in the order of the claims (a window asked while the one before arrives)', { timeout: 30_000 }, async () => {
  const { client, streamer, parsed } = fakeClient();
  const tap = LiteralTap.of(client)!;
  const got: string[][] = [[], []];
  for (const n of [0, 1]) {
    tap.claimSole(7, () => ({
      push: (chunk) => {
        got[n]!.push(chunk.toString('latin1'));
        return true;
      },
      whenDrained: (ready) => ready(),
      end: () => undefined,
      fail: () => assert.fail('no failure'),
    }));
  }
  // A third claim, taken back before its row comes: its row goes to imapflow.
  const unused = () => assert.fail('taken back');
  tap.claim(7, unused);
  tap.release(7, unused);
  await feed(streamer, b('* 1 FETCH (UID 7 BODY[]<0> {3}\r\nabc)\r\nA1 OK\r\n* 1 FETCH (UID 7 BODY[]<3> {2}\r\nde)\r\nA2 OK\r\n* 1 FETCH (UID 7 BODY[]<5> {1}\r\nf)\r\nA3 OK\r\n'), [20]);
  assert.deepEqual(got, [['abc'], ['de']]);
  assert.deepEqual(parsed.map((p) => p.payload), ['A1 OK', 'A2 OK', '* 1 FETCH (UID 7 BODY[]<5> {1}\r\n)', 'A3 OK']);
});
