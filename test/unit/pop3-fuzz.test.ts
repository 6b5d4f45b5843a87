/**
 * Seeded fuzzing of the POP3 side without a socket: the command-line parser and the line
 * splitter on random input, and whole sessions over the memory store fed random and
 * near-valid lines (commands with random arguments and spacing, logins right and wrong, SASL
 * exchanges, garbage octets) with random store failures.
 *
 * What must hold: nothing throws; no line waits for its reply; every line gets exactly one
 * reply (a status line, a SASL challenge, or a multi-line reply with its terminator) until
 * the session closes, and none after; at the end every maildrop is given back, the lock is
 * free, and the store lost exactly what a successful QUIT removed. SEED=<n> replays a run.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { MemoryLockRegistry } from '../../src/lock/memory-lock-registry.js';
import { MaildropError } from '../../src/maildrop/errors.js';
import { parseCommand, parseLineCount, parseMessageNumber } from '../../src/pop3/command-parser.js';
import { LineReader, type LineEvent } from '../../src/pop3/line-reader.js';
import { memorySession, type MemorySession } from '../support/memory-connection.js';
import { MemoryStore } from '../support/memory-maildrop.js';
import { memoryServices } from '../support/memory-proxy.js';
import { Rng, runSeed } from '../support/rng.js';

const SEED = runSeed();
const SESSIONS = 400;
/** Longest a line may take to be answered: the store answers at once here. */
const REPLY_DEADLINE_MS = 2000;
const T = { timeout: 30_000 };

const VERBS = ['USER', 'PASS', 'APOP', 'STAT', 'LIST', 'RETR', 'DELE', 'NOOP', 'RSET', 'QUIT', 'TOP', 'UIDL', 'CAPA', 'AUTH', 'STLS', 'LAST', 'XTND'];
const ARGS = ['1', '2', '3', '4', '5', '0', '-1', '00', '01', '4294967296', '99999999999999999999', 'x', 'abc', '\u00e9', '1.5', '+1', '0x1', 'PLAIN', 'LOGIN', 'XOAUTH2', '=', '*'];
const PASSWORD = 'fuzz pw';
const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');

/** A line close to a command: a known verb in random case, random arguments and spacing. */
function nearValid(rng: Rng): string {
  const roll = rng.next();
  if (roll < 0.1) return `${rng.mixCase('USER')} ${rng.pick(['fuzz', 'fuzz', 'nobody', 'FUZZ'])}`;
  if (roll < 0.18) return `${rng.mixCase('PASS')} ${rng.pick([PASSWORD, PASSWORD, 'wrong', ''])}`;
  if (roll < 0.24) return rng.pick([`AUTH PLAIN ${b64(`\0fuzz\0${PASSWORD}`)}`, 'AUTH PLAIN', 'AUTH LOGIN', `AUTH LOGIN ${b64('fuzz')}`, 'AUTH XOAUTH2', 'AUTH']);
  if (roll < 0.3) return rng.pick([b64(`\0fuzz\0${PASSWORD}`), b64('fuzz'), b64(PASSWORD), '*', '=', 'QUFB', '!!!!']);
  if (roll < 0.9) {
    const spaces = () => ' '.repeat(rng.chance(0.85) ? 1 : rng.int(0, 3));
    let line = rng.mixCase(rng.pick(VERBS));
    for (let n = rng.int(0, 3); n > 0; n--) line += spaces() + rng.pick(ARGS);
    return rng.chance(0.05) ? line + ' ' : line;
  }
  return rng.bytes(rng.int(0, 300), (b) => b !== 0x0a).toString('latin1');
}

/** Whether an +OK to this line is followed by a multi-line body. */
function multiLine(line: string): boolean {
  const words = line.split(' ').filter((w) => w.length > 0);
  const verb = (words[0] ?? '').toUpperCase();
  const n = words.length - 1;
  return (['CAPA', 'LIST', 'UIDL', 'AUTH'].includes(verb) && n === 0) || (verb === 'RETR' && n === 1) || (verb === 'TOP' && n === 2);
}

function withDeadline<T>(work: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${REPLY_DEADLINE_MS} ms: ${what}`)), REPLY_DEADLINE_MS);
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

/** Why this reply is not exactly one reply to `line`, or undefined if it is. */
function replyProblem(reply: string, line: string, inSasl: boolean, s: MemorySession): string | undefined {
  if (reply === '') return 'no reply';
  if (!reply.endsWith('\r\n') && s.ending !== 'cut') return 'reply without a line end';
  const status = reply.slice(0, reply.indexOf('\r\n'));
  if (!/^(\+OK( |$)|-ERR( |$)|\+ [A-Za-z0-9+/=]*$)/.test(status)) return `bad status ${JSON.stringify(status)}`;
  const body = reply.slice(status.length + 2);
  if (status.startsWith('+OK') && !inSasl && multiLine(line)) {
    if (s.ending === 'cut') return undefined;
    if (body !== '.\r\n' && !body.endsWith('\r\n.\r\n')) return 'multi-line reply without its terminator';
    // Byte-stuffed: no line of the body is a lone ".", so the first one seen is the end.
    if (body.indexOf('\r\n.\r\n') !== body.length - 5 && body !== '.\r\n') return 'a lone "." inside the body';
    return undefined;
  }
  // A farewell may follow a reply on the same call only when the session closed with it.
  if (body !== '' && s.ending === 'open') return `more than one line: ${JSON.stringify(reply.slice(0, 200))}`;
  return undefined;
}

interface Outcome {
  problem?: string;
  lines: number;
  /** How the session ended, and whether it ever logged in: to see what the run reached. */
  ended?: string;
}

async function fuzzSession(seed: number): Promise<Outcome> {
  const rng = new Rng(seed);
  const store = new MemoryStore({ chunkSize: rng.pick([undefined, 1, 3, 64]), trickle: rng.chance(0.3) }).addUser('fuzz', PASSWORD);
  for (let i = 1; i <= 5; i++) store.deliver('fuzz', `Subject: ${i}\r\n\r\n.line\r\n..two\r\n.\r\nend ${i}${rng.chance(0.3) ? '' : '\r\n'}`);
  const original = store.uidls('fuzz');
  if (rng.chance(0.15)) store.hooks.commitError = new MaildropError(rng.pick(['temporary', 'permanent'] as const), 'commit failed');
  if (rng.chance(0.15)) store.hooks.readFault = (i) => (i === 2 ? { failAfter: rng.int(0, 30) } : undefined);
  if (rng.chance(0.1)) store.hooks.markDeletedError = new MaildropError('temporary', 'store failed', { fatal: rng.chance(0.5) });
  const built = memoryServices({ store, tlsAvailable: rng.chance(0.3), limits: { maxErrors: rng.int(2, 40), maxAuthFailures: rng.int(1, 6) } });
  const s = memorySession(built.services);
  let inSasl = false;
  let sent = 0;
  for (let n = rng.int(1, 60); n > 0; n--) {
    const line = nearValid(rng);
    const wasOpen = s.ending === 'open' && s.session.state !== 'closed';
    const reply = await withDeadline(s.command(line), JSON.stringify(line));
    sent++;
    if (!wasOpen) {
      if (reply !== '') return { problem: `${JSON.stringify(reply)} after the session closed`, lines: sent };
      continue;
    }
    const problem = replyProblem(reply, line, inSasl, s);
    if (problem) return { problem: `${problem}, to ${JSON.stringify(line)} (line ${sent})`, lines: sent };
    inSasl = reply.startsWith('+ ') && s.ending === 'open';
  }
  const problem = await checkEnd(s, store, built.locks as MemoryLockRegistry, original, built.events.ended);
  const loggedIn = built.events.logins.includes('ok') ? '+login' : '';
  return { problem, lines: sent, ended: `${built.events.ended[0]}${loggedIn}` };
}

/** After the client is gone: the mailbox given back, and changed only by a QUIT that worked. */
async function checkEnd(s: MemorySession, store: MemoryStore, locks: MemoryLockRegistry, original: string[], ended: string[]): Promise<string | undefined> {
  s.session.end('client-closed', 'cut');
  await withDeadline(s.session.finished(), 'the teardown');
  if (store.live.size !== 0) return `${store.live.size} maildrop(s) never given back`;
  if (locks.size !== 0) return 'the lock is still held';
  if (ended.length !== 1) return `ended ${ended.length} times: ${ended.join(', ')}`;
  const committed = ended[0] === 'quit' ? (store.eventsOf('commit').at(-1)?.indexes ?? []) : [];
  const expected = original.filter((_, i) => !committed.includes(i));
  if (store.uidls('fuzz').join() !== expected.join()) return `store holds ${store.uidls('fuzz').join()} after ${ended[0]}, expected ${expected.join()}`;
  return undefined;
}

test(`whole sessions on random and near-valid lines (seed ${SEED}; SEED=${SEED} replays)`, T, async (t) => {
  console.log(`pop3 session fuzz seed ${SEED} (set SEED=${SEED} to replay)`);
  const master = new Rng(SEED);
  const problems: string[] = [];
  let lines = 0;
  const endings = new Map<string, number>();
  for (let i = 0; i < SESSIONS; i++) {
    const seed = master.seed();
    const outcome = await fuzzSession(seed).catch((err: Error) => ({ problem: `threw: ${err.stack}`, lines: 0 }));
    lines += outcome.lines;
    if ('ended' in outcome && outcome.ended) endings.set(outcome.ended, (endings.get(outcome.ended) ?? 0) + 1);
    if (outcome.problem) problems.push(`session ${i} (session seed ${seed}, run seed ${SEED}): ${outcome.problem}`);
  }
  t.diagnostic(`${SESSIONS} sessions, ${lines} lines; ended: ${[...endings].map(([k, n]) => `${k}=${n}`).join(' ')}`);
  assert.deepEqual(problems, []);
});

test(`the command parser on random lines: keyword rules, arguments without spaces (seed ${SEED})`, T, () => {
  const rng = new Rng(SEED ^ 0x5eed);
  for (let i = 0; i < 20_000; i++) {
    const line = rng.chance(0.5) ? Buffer.from(nearValid(rng), 'latin1') : rng.bytes(rng.int(0, 40));
    const command = parseCommand(line);
    const text = line.toString('utf8');
    const keyword = text.split(' ')[0]!;
    if (command === undefined) {
      assert.doesNotMatch(keyword, /^[A-Za-z]{1,8}$/, JSON.stringify(text));
      continue;
    }
    assert.equal(command.verb, keyword.toUpperCase());
    assert.match(command.verb, /^[A-Z]{1,8}$/);
    for (const arg of command.args) assert.ok(arg.length > 0 && !arg.includes(' '), JSON.stringify(text));
    assert.equal(command.args.join(' '), command.rest.split(' ').filter((a) => a !== '').join(' '));
    assert.equal(text.includes(' ') ? `${keyword} ${command.rest}` : keyword, text);
  }
});

test(`message numbers and line counts: only plain decimals in range (seed ${SEED})`, T, () => {
  const rng = new Rng(SEED ^ 0x1234);
  for (let i = 0; i < 20_000; i++) {
    const arg = rng.chance(0.5) ? rng.pick(ARGS) + (rng.chance(0.3) ? rng.pick(ARGS) : '') : String(rng.int(0, 200));
    const count = rng.int(0, 100);
    const n = parseMessageNumber(arg, count);
    if (n !== undefined) assert.ok(Number.isInteger(n) && n >= 1 && n <= count && String(n) === arg, `${arg} of ${count}: ${n}`);
    else assert.ok(!/^[1-9][0-9]*$/.test(arg) || Number(arg) > count, `${arg} of ${count} refused`);
    const lines = parseLineCount(arg);
    if (lines !== undefined) assert.ok(Number.isSafeInteger(lines) && lines >= 0 && /^[0-9]{1,20}$/.test(arg), `${arg}: ${lines}`);
    else assert.doesNotMatch(arg, /^[0-9]{1,20}$/);
  }
});

const shown = (events: LineEvent[]) => events.map((e) => (e.kind === 'line' ? e.line.toString('latin1') : '<overlong>'));

test(`the line splitter gives the same lines however the bytes are chunked (seed ${SEED})`, T, () => {
  const rng = new Rng(SEED ^ 0xabcd);
  for (let i = 0; i < 2000; i++) {
    const parts: string[] = [];
    for (let n = rng.int(0, 12); n > 0; n--) parts.push(rng.bytes(rng.int(0, 40), (b) => b !== 0x0a).toString('latin1') + rng.pick(['\r\n', '\n', '\r', '']));
    const bytes = Buffer.from(parts.join(''), 'latin1');
    const limit = rng.int(2, 48);
    const whole = shown(new LineReader(limit).push(bytes));
    const reader = new LineReader(limit);
    const chunked: LineEvent[] = [];
    for (let at = 0; at < bytes.length; ) {
      const n = rng.int(1, 9);
      chunked.push(...reader.push(bytes.subarray(at, at + n)));
      at += n;
    }
    assert.deepEqual(shown(chunked), whole, JSON.stringify(bytes.toString('latin1')));
    for (const line of whole) assert.ok(line === '<overlong>' || line.length + 1 <= limit, `a line over ${limit}: ${JSON.stringify(line)}`);
  }
});
