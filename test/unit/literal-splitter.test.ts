/**
 * The response splitter takes claimed BODY[] literals out of the IMAP byte stream: the bodies
 * must come out byte for byte and everything else must reach imapflow byte for byte, wherever
 * the socket's chunks happen to split the stream; a stream cut inside a body must fail it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { literalAtEnd, ResponseSplitter, type BodyTarget } from '../../src/imap/literal-splitter.js';

/** A body with everything that could confuse a parser inside it. */
function trickyBody(seed: number): Buffer {
  return Buffer.from(
    `Subject: m${seed}\r\n\r\n* 3 EXISTS\r\nA1 OK done\r\n{12}\r\n.\r\n..dots\r\n* ${seed} FETCH (UID 1 BODY[] {3}\r\nbare\nlf and bare\rcr ${'x'.repeat(seed * 7)}\r\nend without line end`,
    'latin1',
  );
}

interface Part {
  readonly bytes: Buffer;
  /** The UID whose body this response carries, when it is to be taken out. */
  readonly claimed?: { uid: number; body: Buffer };
}

const b = (s: string) => Buffer.from(s, 'latin1');

/** A FETCH response with a claimed body: `before` and `after` are the items around BODY[]. */
function bodyRow(seq: number, uid: number, body: Buffer, marker: (n: number) => string = (n) => `{${n}}`, before = '', after = ''): Part {
  return { bytes: Buffer.concat([b(`* ${seq} FETCH (${before}UID ${uid} BODY[] ${marker(body.length)}\r\n`), body, b(`${after})\r\n`)]), claimed: { uid, body } };
}

/** The server's side of one exchange: claimed rows with other responses between them. */
function exchange(): Part[] {
  return [
    bodyRow(1, 10, trickyBody(1)),
    { bytes: b('* 3 EXISTS\r\n') },
    bodyRow(2, 11, trickyBody(2), (n) => `{${n}}`, 'FLAGS (\\Seen) ', ' MODSEQ (5)'),
    { bytes: b('* 2 EXPUNGE\r\n') },
    { bytes: b('* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n') },
    bodyRow(3, 12, trickyBody(3), (n) => `~{${n}}`),
    // An expunged message answered without a body, and one answered with nothing but its UID.
    { bytes: b('* 4 FETCH (UID 13 BODY[] NIL)\r\n') },
    { bytes: b('* 5 FETCH (UID 14)\r\n') },
    // The UID only after the body: offered without a UID, and left to imapflow here.
    { bytes: b('* 6 FETCH (BODY[] {5}\r\nhello UID 15)\r\n') },
    // A UID nobody claimed, whole or a window: left to imapflow.
    { bytes: b('* 7 FETCH (UID 99 BODY[] {3}\r\nabc)\r\n') },
    { bytes: b('* 8 FETCH (UID 98 BODY[]<0> {3}\r\nabc)\r\n') },
    // A claimed window of a large message.
    { bytes: Buffer.concat([b(`* 8 FETCH (UID 16 BODY[]<1048576> {${trickyBody(9).length}}\r\n`), trickyBody(9), b(')\r\n')]), claimed: { uid: 16, body: trickyBody(9) } },
    // An empty body, then one in LF-only framing.
    bodyRow(9, 17, Buffer.alloc(0)),
    { bytes: Buffer.concat([b('* 10 FETCH (UID 18 BODY[] {4}\n'), b('ab\r\n'), b(')\n')]), claimed: { uid: 18, body: b('ab\r\n') } },
    // A body in a later line of the response: the first line decides, so imapflow gets it.
    { bytes: b('* 11 FETCH (UID 19 BODY[HEADER] {4}\r\nab\r\n BODY[] {2}\r\nxy)\r\n') },
    // A response with a literal that is not a FETCH.
    { bytes: b('* LIST () "/" {5}\r\nINBOX\r\n') },
    bodyRow(12, 20, trickyBody(4), undefined, '', ' FLAGS (\\Seen \\Recent)'),
    { bytes: b('A5 OK Fetch completed (0.001 + 0.000 secs).\r\n') },
  ];
}

interface Outcome {
  forwarded: Buffer;
  bodies: Map<number, Buffer>;
  sizes: Map<number, number>;
  failed: Map<number, Error>;
  ended: Set<number>;
}

function run(parts: Part[], cuts: number[], close = false): Outcome {
  const stream = Buffer.concat(parts.map((p) => p.bytes));
  const claimedUids = new Set(parts.flatMap((p) => (p.claimed ? [p.claimed.uid] : [])));
  const chunks: Buffer[] = [];
  const bodies = new Map<number, Buffer[]>();
  const sizes = new Map<number, number>();
  const failed = new Map<number, Error>();
  const ended = new Set<number>();
  const splitter = new ResponseSplitter((uid, size): BodyTarget | undefined => {
    if (uid === undefined || !claimedUids.has(uid)) return undefined;
    claimedUids.delete(uid);
    const got: Buffer[] = [];
    bodies.set(uid, got);
    sizes.set(uid, size);
    return {
      push: (chunk) => {
        assert.ok(!ended.has(uid) && !failed.has(uid), 'no bytes after the end');
        got.push(chunk);
        return true;
      },
      whenDrained: (ready) => ready(),
      end: () => ended.add(uid),
      fail: (err) => failed.set(uid, err),
    };
  });
  let from = 0;
  for (const cut of [...cuts, stream.length]) {
    if (cut < from || cut > stream.length) continue;
    for (const slice of splitter.push(stream.subarray(from, cut))) chunks.push(slice);
    from = cut;
  }
  if (close) splitter.close(new Error('cut'));
  return {
    forwarded: Buffer.concat(chunks),
    bodies: new Map([...bodies].map(([uid, got]) => [uid, Buffer.concat(got)])),
    sizes,
    failed,
    ended,
  };
}

function expectWhole(parts: Part[], outcome: Outcome, what: string): void {
  const unclaimed = Buffer.concat(parts.filter((p) => !p.claimed).map((p) => p.bytes));
  assert.ok(outcome.forwarded.equals(unclaimed), `${what}: imapflow gets every other byte, in order`);
  for (const part of parts) {
    if (!part.claimed) continue;
    const { uid, body } = part.claimed;
    assert.ok(outcome.bodies.get(uid)?.equals(body), `${what}: body of UID ${uid}`);
    assert.equal(outcome.sizes.get(uid), body.length);
    assert.ok(outcome.ended.has(uid), `${what}: UID ${uid} ended`);
  }
  assert.equal(outcome.failed.size, 0);
}

test('literal markers: {n}, ~{n}, zeros in front, CRLF or LF; {n+} (a client\'s) and anything else is no literal', { timeout: 30_000 }, () => {
  assert.equal(literalAtEnd(b('* 1 FETCH (BODY[] {123}\r\n')), 123);
  assert.equal(literalAtEnd(b('x {0}\r\n')), 0);
  assert.equal(literalAtEnd(b('x {45+}\r\n')), -1);
  assert.equal(literalAtEnd(b('x {0000000000000000000045}\r\n')), 45);
  assert.equal(literalAtEnd(b('x {000}\r\n')), 0);
  assert.equal(literalAtEnd(b('x ~{7}\r\n')), 7);
  assert.equal(literalAtEnd(b('x {7}\n')), 7);
  assert.equal(literalAtEnd(b('x {}\r\n')), -1);
  assert.equal(literalAtEnd(b('x {+}\r\n')), -1);
  assert.equal(literalAtEnd(b('x 7}\r\n')), -1);
  assert.equal(literalAtEnd(b('x {7} \r\n')), -1);
  assert.equal(literalAtEnd(b('x {7}')), -1);
  assert.equal(literalAtEnd(b('{7}\r\n')), 7);
});

test('split in two at every byte position: bodies and the rest exact', { timeout: 30_000 }, () => {
  const parts = exchange();
  const length = Buffer.concat(parts.map((p) => p.bytes)).length;
  for (let cut = 0; cut <= length; cut++) expectWhole(parts, run(parts, [cut]), `cut at ${cut}`);
});

test('one byte at a time, and three cuts at a time around every body boundary', { timeout: 30_000 }, () => {
  const parts = exchange();
  const length = Buffer.concat(parts.map((p) => p.bytes)).length;
  expectWhole(parts, run(parts, Array.from({ length }, (_, i) => i)), 'bytewise');
  let seed = 7;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let i = 0; i < 2000; i++) {
    const cuts = [0, 0, 0].map(() => Math.floor(random() * length)).sort((x, y) => x - y);
    expectWhole(parts, run(parts, cuts), `cuts at ${cuts.join(',')}`);
  }
});

test('a first line too long to hold is passed on whole, and a body after it is still taken out', { timeout: 30_000 }, () => {
  const long = b(`* SEARCH ${Array.from({ length: 30000 }, (_, i) => i + 1).join(' ')}\r\n`);
  const parts: Part[] = [{ bytes: long }, bodyRow(1, 10, trickyBody(5)), { bytes: b('A1 OK done\r\n') }];
  for (const size of [1000, 4096, 65536, 100000]) {
    const cuts: number[] = [];
    for (let at = size; at < long.length + 400; at += size) cuts.push(at);
    expectWhole(parts, run(parts, cuts), `chunks of ${size}`);
  }
  // A too-long line that ends in a literal: the literal still belongs to the response.
  const longWithLiteral = Buffer.concat([b(`* 1 FETCH (X-LONG "${'y'.repeat(70000)}" BODY[] {3}\r\n`), b('abc)\r\n')]);
  const parts2: Part[] = [{ bytes: longWithLiteral }, bodyRow(2, 11, trickyBody(6)), { bytes: b('A1 OK done\r\n') }];
  for (const size of [1000, 65536]) {
    const cuts: number[] = [];
    for (let at = size; at < longWithLiteral.length + 400; at += size) cuts.push(at);
    expectWhole(parts2, run(parts2, cuts), `long literal line, chunks of ${size}`);
  }
});

test('a stream cut inside a body fails that body and never ends it', { timeout: 30_000 }, () => {
  const parts = exchange();
  const stream = Buffer.concat(parts.map((p) => p.bytes));
  let offset = 0;
  for (const part of parts) {
    const start = offset;
    offset += part.bytes.length;
    if (!part.claimed || part.claimed.body.length === 0) continue;
    const bodyStart = part.bytes.indexOf(part.claimed.body);
    for (let inBody = 0; inBody < part.claimed.body.length; inBody++) {
      const cutAt = start + bodyStart + inBody;
      // Everything up to the cut arrives (in two chunks), then the connection closes.
      const failures: number[] = [];
      const splitter = new ResponseSplitter((uid) =>
        uid === part.claimed!.uid
          ? {
              push: () => true,
              whenDrained: (ready: () => void) => ready(),
              end: () => assert.fail(`UID ${uid} ended though cut at ${inBody}`),
              fail: () => failures.push(uid),
            }
          : undefined,
      );
      splitter.push(stream.subarray(0, Math.floor(cutAt / 2)));
      splitter.push(stream.subarray(Math.floor(cutAt / 2), cutAt));
      splitter.close(new Error('connection closed'));
      assert.deepEqual(failures, [part.claimed.uid], `cut ${inBody} octets into UID ${part.claimed.uid}`);
      // Nothing more is taken after the close.
      assert.deepEqual(splitter.push(stream.subarray(cutAt)), []);
    }
  }
});

test('a cut between responses fails nothing', { timeout: 30_000 }, () => {
  const parts = exchange();
  const first = parts[0]!.bytes.length;
  const outcome = run(parts.slice(0, 1), [Math.floor(first / 3)], true);
  expectWhole(parts.slice(0, 1), outcome, 'whole first row');
});
