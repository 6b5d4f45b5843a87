/**
 * Seeded fuzzing of the literal splitter against imapflow's own response parser: random IMAP
 * response streams (FETCH rows whose BODY[] literals are claimed, rows nobody claimed, other
 * untagged and tagged responses, literals of random sizes holding random octets and
 * protocol-looking text), cut at random chunk boundaries and fed through a ResponseSplitter.
 *
 * What must hold: the bytes passed on are the stream without the claimed responses, byte for
 * byte; each claimed body comes out whole, as slices of the chunks fed in (never joined, never
 * copied); and imapflow's ImapStream and parser, fed what was passed on in the same chunks,
 * parse exactly the responses they parse from the unsplit stream, minus the claimed ones.
 * The fixed cases of literal-splitter.test.ts and literal-tap.test.ts are not repeated here.
 * SEED=<n> replays a run.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ImapStream } from 'imapflow/lib/handler/imap-stream.js';
import parser from 'imapflow/lib/handler/imap-parser.js';
import { ResponseSplitter, type BodyTarget } from '../../src/imap/literal-splitter.js';
import { Rng, runSeed } from '../support/rng.js';

const SEED = runSeed();
const STREAMS = 250;
const QUIET = { trace() {}, debug() {}, info() {}, warn() {}, error() {} };
const T = { timeout: 30_000 };

interface Part {
  readonly bytes: Buffer;
  /** Set when the splitter is to take this response out (its UID claimed, first in the stream). */
  readonly claimed?: { readonly uid: number; readonly body: Buffer };
}

const b = (s: string) => Buffer.from(s, 'latin1');

/** Literal content: random octets mixed with text a careless parser would take for protocol. */
function literal(rng: Rng): Buffer {
  const pieces: Buffer[] = [];
  for (let n = rng.int(0, 6); n > 0; n--) {
    pieces.push(
      rng.pick([
        () => rng.bytes(rng.int(0, 400)),
        () => b(`* ${rng.int(1, 9)} FETCH (UID ${rng.int(1, 40)} BODY[] {${rng.int(0, 9)}}\r\n`),
        () => b(rng.pick(['A1 OK done\r\n', '{12}\r\n', ')\r\n', '\r\n', '\n', '\r', '.\r\n', '~{3}\r\n'])),
        () => b('x'.repeat(rng.int(0, 3000))),
      ])(),
    );
  }
  return Buffer.concat(pieces);
}

/** A marker both parsers read the same way (a server never sends LITERAL+'s {n+}). */
const marker = (rng: Rng, n: number) => (rng.chance(0.2) ? `~{${n}}` : `{${n}}`);
const eol = (rng: Rng) => (rng.chance(0.1) ? '\n' : '\r\n');

function fetchRow(rng: Rng, seq: number, uid: number, body: Buffer): Buffer {
  const before = rng.pick(['', 'FLAGS (\\Seen) ', 'RFC822.SIZE 812 ', 'FLAGS () MODSEQ (12) ']);
  const origin = rng.pick(['', '', '<0>', '<1048576>']);
  const after = rng.pick(['', ' FLAGS (\\Seen \\Recent)', ' MODSEQ (5)']);
  return Buffer.concat([b(`* ${seq} FETCH (${before}UID ${uid} BODY[]${origin} ${marker(rng, body.length)}${eol(rng)}`), body, b(`${after})${eol(rng)}`)]);
}

/** Responses the splitter must leave to imapflow. */
function otherResponse(rng: Rng, seq: number, claimedSoFar: readonly number[]): Buffer {
  const lit = literal(rng);
  return rng.pick([
    () => b(`* ${seq} EXISTS\r\n`),
    () => b(`* ${seq} EXPUNGE\r\n`),
    () => b('* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n'),
    () => b(`* OK [UIDNEXT ${seq + 100}] Predicted next UID\r\n`),
    () => b(`* ${seq} FETCH (UID ${seq + 1000} FLAGS (\\Deleted))\r\n`),
    () => b(`* ${seq} FETCH (UID ${seq + 1000} BODY[] NIL)\r\n`),
    // A body nobody claimed, or one claimed before: claims are one-shot.
    () => fetchRow(rng, seq, claimedSoFar.length > 0 && rng.chance(0.5) ? rng.pick(claimedSoFar) : seq + 1000, lit),
    // The UID only after the body: not taken (no claim here is for "the sole message").
    () => Buffer.concat([b(`* ${seq} FETCH (BODY[] {${lit.length}}\r\n`), lit, b(` UID ${seq})\r\n`)]),
    // Another literal first: the first line decides, and the later literal is no response.
    () => {
      const later = literal(rng);
      return Buffer.concat([b(`* ${seq} FETCH (UID ${seq} BODY[HEADER] {${lit.length}}\r\n`), lit, b(` BODY[] {${later.length}}\r\n`), later, b(')\r\n')]);
    },
    // A first line too long to hold: passed on, its literal still skipped over.
    () => Buffer.concat([b(`* ${seq} FETCH (X-LONG "${'y'.repeat(rng.int(65_000, 70_000))}" UID ${seq + 1000} BODY[] {${lit.length}}\r\n`), lit, b(')\r\n')]),
    () => Buffer.concat([b(`* LIST (\\HasNoChildren) "/" {${lit.length}}\r\n`), lit, b('\r\n')]),
    () => b(`A${seq} OK FETCH completed (0.001 + 0.000 secs).\r\n`),
  ])();
}

function randomStream(rng: Rng): Part[] {
  const parts: Part[] = [];
  const claimed: number[] = [];
  for (let seq = 1, n = rng.int(1, 25); seq <= n; seq++) {
    if (rng.chance(0.45)) {
      const uid = seq;
      const body = literal(rng);
      parts.push({ bytes: fetchRow(rng, seq, uid, body), claimed: { uid, body } });
      claimed.push(uid);
    } else {
      parts.push({ bytes: otherResponse(rng, seq, claimed) });
    }
  }
  return parts;
}

/** Random cut points: sometimes byte by byte for a stretch, sometimes large chunks. */
function chunks(rng: Rng, stream: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < stream.length; ) {
    const n = Math.min(stream.length - at, rng.pick([() => 1, () => rng.int(1, 16), () => rng.int(1, 4096), () => rng.int(1, 70_000)])());
    // Its own memory, so that a slice can be traced to the chunk it came from.
    const chunk = Buffer.alloc(n);
    stream.copy(chunk, 0, at, at + n);
    out.push(chunk);
    at += n;
  }
  return out;
}

interface Split {
  forwarded: Buffer[][];
  bodies: Map<number, Buffer[]>;
  ended: Set<number>;
}

function split(parts: Part[], input: Buffer[]): Split {
  const claims = new Set(parts.flatMap((p) => (p.claimed ? [p.claimed.uid] : [])));
  const bodies = new Map<number, Buffer[]>();
  const ended = new Set<number>();
  const splitter = new ResponseSplitter((uid): BodyTarget | undefined => {
    if (uid === undefined || !claims.delete(uid)) return undefined;
    const got: Buffer[] = [];
    bodies.set(uid, got);
    return {
      push: (chunk) => got.push(chunk) > 0,
      whenDrained: (ready) => ready(),
      end: () => ended.add(uid),
      fail: (err) => assert.fail(`UID ${uid} failed: ${err.message}`),
    };
  });
  return { forwarded: input.map((chunk) => splitter.push(chunk)), bodies, ended };
}

/** What imapflow makes of these chunks: its ImapStream's items, through its parser. */
async function imapflowParse(input: Buffer[], expected: number): Promise<unknown[]> {
  const items = await imapflowResponses(input, expected);
  return Promise.all(items.map((item) => parser(item.payload, { literals: item.literals })));
}

/** The responses imapflow's ImapStream cuts `input` into (before its parser reads them). */
async function imapflowResponses(input: Buffer[], expected: number): Promise<{ payload: Buffer; literals: Buffer[] }[]> {
  const streamer = new ImapStream({ logger: QUIET });
  const items: { payload: Buffer; literals: Buffer[] }[] = [];
  streamer.on('readable', () => {
    let item: { payload: Buffer; literals: Buffer[]; next: () => void } | null;
    while ((item = streamer.read()) !== null) {
      items.push({ payload: item.payload, literals: item.literals });
      item.next();
    }
  });
  for (const chunk of input) {
    if (chunk.length === 0) continue;
    if (!streamer.write(chunk)) await new Promise((resolve) => streamer.once('drain', resolve));
  }
  // Its parsing runs in its own queue: give it turns until every response is out (or clearly stuck).
  for (let idle = 0; items.length < expected && idle < 200; idle++) await new Promise((resolve) => setImmediate(resolve));
  streamer.destroy();
  return items;
}

async function checkStream(rng: Rng): Promise<void> {
  const parts = randomStream(rng);
  const stream = Buffer.concat(parts.map((p) => p.bytes));
  const input = chunks(rng, stream);
  const { forwarded, bodies, ended } = split(parts, input);

  const kept = parts.filter((p) => !p.claimed);
  assert.ok(Buffer.concat(forwarded.flat()).equals(Buffer.concat(kept.map((p) => p.bytes))), 'imapflow gets every other byte, in order');
  const inputMemory = new Set(input.map((c) => c.buffer));
  for (const part of parts.filter((p) => p.claimed)) {
    const { uid, body } = part.claimed!;
    const got = bodies.get(uid) ?? [];
    assert.ok(Buffer.concat(got).equals(body), `body of UID ${uid}`);
    assert.ok(ended.has(uid), `UID ${uid} ended`);
    assert.ok(got.every((slice) => inputMemory.has(slice.buffer)), `UID ${uid}: slices of the input, not copies`);
  }
  assert.equal(bodies.size, parts.length - kept.length, 'no other body taken');

  const whole = await imapflowParse([stream], parts.length);
  assert.equal(whole.length, parts.length, 'imapflow reads one response per part of the unsplit stream');
  const expected = whole.filter((_, i) => !parts[i]!.claimed);
  assert.deepEqual(await imapflowParse(forwarded.flat(), expected.length), expected, 'imapflow parses the same responses, minus the claimed ones');
}

test(`random FETCH streams in random chunks: bytes, bodies and imapflow's parse all agree (seed ${SEED}; SEED=${SEED} replays)`, T, async (t) => {
  console.log(`literal splitter fuzz seed ${SEED} (set SEED=${SEED} to replay)`);
  const master = new Rng(SEED);
  for (let i = 0; i < STREAMS; i++) {
    const seed = master.seed();
    try {
      await checkStream(new Rng(seed));
    } catch (err) {
      throw new Error(`stream ${i} (stream seed ${seed}, run seed ${SEED}): ${(err as Error).message}`, { cause: err });
    }
  }
  t.diagnostic(`${STREAMS} streams`);
});

// imapflow's ImapStream takes a literal marker with any number of leading zeros
// ({0000000000000000040}); the splitter once gave up on more than 15 digits and then scanned the
// literal's octets as if they were responses, taking a FETCH line inside it for a claimed body.
test('a literal marker padded with zeros is a literal to the splitter as it is to imapflow', T, async () => {
  const inner = b('* 2 FETCH (UID 5 BODY[] {3}\r\nabc)\r\n');
  const padded = Buffer.concat([b(`* 1 FETCH (UID 9 BODY[] {${String(inner.length).padStart(19, '0')}}\r\n`), inner, b(')\r\n')]);
  const parts: Part[] = [{ bytes: padded }, { bytes: b('A1 OK done\r\n') }];
  const claimed = new ResponseSplitter((uid) => (uid === 5 ? { push: () => true, whenDrained: (r) => r(), end: () => undefined, fail: () => undefined } : undefined));
  const forwarded = claimed.push(Buffer.concat(parts.map((p) => p.bytes)));
  assert.ok(Buffer.concat(forwarded).equals(Buffer.concat(parts.map((p) => p.bytes))), 'the padded response reaches imapflow whole');
  // imapflow's ImapStream cuts it into the same two responses (its parser then refuses the
  // padded marker, which fails that FETCH: no body is mistaken either way).
  assert.equal((await imapflowResponses(forwarded, 2)).length, 2);
});
