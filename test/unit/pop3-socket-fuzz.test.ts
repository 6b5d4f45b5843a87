/**
 * Seeded random byte streams over loopback sockets to a real Pop3Server on the memory store,
 * with short timeouts: random octets, lines of garbage, overlong lines, pipelined commands
 * with random arguments, commands in the wrong state, partial lines, bare CRs, AUTH exchanges
 * cut off, silence; written in random chunks, some connections cut part way.
 *
 * What must hold: the server never crashes (it serves a normal session afterwards and holds
 * no session once the clients are gone); no connection outlives its timeouts once the client
 * stops sending; for streams of complete lines every line gets exactly one reply, unless the
 * server closed with a final -ERR saying why. SEED=<n> replays a run.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { MemoryStore } from '../support/memory-maildrop.js';
import { allSessionsOver, startMemoryProxy, type MemoryProxy } from '../support/memory-proxy.js';
import { RawPop3 } from '../support/pop3-client.js';
import { Rng, runSeed } from '../support/rng.js';

const SEED = runSeed();
const CONNECTIONS = 120;
const CONCURRENCY = 24;
const AUTH_TIMEOUT_MS = 400;
const IDLE_TIMEOUT_MS = 600;
/** How long past its timeouts a connection may take to be closed. */
const SLACK_MS = 2000;
const REPLY_DEADLINE_MS = 5000;
const PASSWORD = 'fuzz-pw';
const CRLF = Buffer.from('\r\n');

let proxy: MemoryProxy;

before(async () => {
  const store = new MemoryStore({ chunkSize: 7, trickle: true }).addUser('fuzz', PASSWORD).addUser('probe', 'probe-pw');
  for (let i = 1; i <= 4; i++) store.deliver('fuzz', `Subject: ${i}\r\n\r\n.dotted\r\n..two\r\n.\r\nend ${i}\r\n`);
  store.deliver('probe', 'Subject: probe\r\n\r\nprobe\r\n');
  proxy = await startMemoryProxy({
    store,
    idleTimeoutMs: IDLE_TIMEOUT_MS,
    limits: { authTimeoutMs: AUTH_TIMEOUT_MS, maxAuthFailures: 3, authFailDelayMs: 20, maxErrors: 30 },
  });
});

after(() => proxy?.close());

const KNOWN = new Set(['USER', 'PASS', 'APOP', 'STAT', 'LIST', 'RETR', 'DELE', 'NOOP', 'RSET', 'QUIT', 'TOP', 'UIDL', 'CAPA', 'AUTH', 'STLS', 'LAST']);
const ARGS = ['1', '2', '4', '5', '0', '-1', '01', '4294967296', 'x', '\u00e9', '+1'];
type Kind = 'random-bytes' | 'binary-lines' | 'long-lines' | 'pipelined' | 'wrong-state' | 'partial-line' | 'bare-cr' | 'auth-cut' | 'silent';

interface Plan {
  kind: Kind;
  bytes: Buffer;
  /** The complete command lines, when replies can be counted (no AUTH, no STLS). */
  lines: string[] | undefined;
  end: 'wait' | 'half-close' | 'destroy';
  /** Cut the connection after this many octets. */
  cutAt: number | undefined;
}

/** A line of random octets whose first word is no command. */
function garbageLine(rng: Rng, length: number): string {
  for (;;) {
    const line = rng.bytes(length, (b) => b !== 0x0a && b !== 0x0d).toString('latin1');
    if (line.trim() !== '' && !KNOWN.has(line.split(' ')[0]!.toUpperCase())) return line;
  }
}

/** A command line other than AUTH and STLS (their replies are no single status line). */
function commandLine(rng: Rng): string {
  const roll = rng.next();
  if (roll < 0.12) return `${rng.mixCase('USER')} ${rng.pick(['fuzz', 'fuzz', 'nobody'])}`;
  if (roll < 0.2) return `${rng.mixCase('PASS')} ${rng.pick([PASSWORD, 'wrong'])}`;
  if (roll < 0.85) {
    const verb = rng.pick(['STAT', 'LIST', 'RETR', 'TOP', 'UIDL', 'NOOP', 'RSET', 'DELE', 'CAPA', 'LAST']);
    const args = Array.from({ length: rng.int(0, verb === 'TOP' ? 3 : 2) }, () => rng.pick(ARGS));
    return [rng.mixCase(verb), ...args].join(' ');
  }
  return garbageLine(rng, rng.int(1, 40));
}

const linesToBytes = (lines: string[]) => Buffer.from(lines.map((l) => `${l}\r\n`).join(''), 'latin1');

function makePlan(rng: Rng): Plan {
  const kind = rng.pick<Kind>(['random-bytes', 'binary-lines', 'long-lines', 'pipelined', 'pipelined', 'pipelined', 'wrong-state', 'partial-line', 'bare-cr', 'auth-cut', 'silent']);
  const plan: Plan = { kind, bytes: Buffer.alloc(0), lines: undefined, end: rng.pick(['wait', 'half-close', 'half-close', 'destroy']), cutAt: undefined };
  const withLines = (lines: string[]) => Object.assign(plan, { lines, bytes: linesToBytes(lines) });
  const some = (lo: number, hi: number, make: () => string) => Array.from({ length: rng.int(lo, hi) }, make);
  switch (kind) {
    case 'random-bytes':
      plan.bytes = rng.bytes(rng.int(1, 4000));
      break;
    case 'binary-lines':
      withLines(some(1, 30, () => garbageLine(rng, rng.int(1, 200))));
      break;
    case 'long-lines':
      withLines(some(1, 8, () => (rng.chance(0.5) ? commandLine(rng) : `${rng.pick(['NOOP ', 'USER ', 'XYZ '])}${'A'.repeat(rng.int(508, 6000))}`)));
      break;
    case 'pipelined':
      withLines([...(rng.chance(0.6) ? ['USER fuzz', `PASS ${PASSWORD}`] : []), ...some(5, 80, () => commandLine(rng)), ...(rng.chance(0.3) ? ['QUIT'] : [])]);
      break;
    case 'wrong-state':
      withLines([...some(2, 15, () => rng.pick(['STAT', 'RETR 1', 'DELE 1', 'TOP 1 1', 'LAST'])), 'USER fuzz', `PASS ${PASSWORD}`, ...some(2, 15, () => rng.pick(['USER fuzz', 'PASS x', 'APOP a b', 'STAT']))]);
      break;
    case 'partial-line': {
      const lines = some(0, 10, () => commandLine(rng));
      plan.lines = lines;
      plan.bytes = Buffer.concat([linesToBytes(lines), Buffer.from(rng.pick(['USER fu', 'CAPA', 'PASS ', 'A'.repeat(rng.int(1, 400))]), 'latin1')]);
      plan.end = rng.pick(['wait', 'half-close']);
      break;
    }
    case 'bare-cr':
      plan.bytes = Buffer.from(some(1, 20, () => commandLine(rng) + rng.pick(['\r', '\r\r', '\r\n', '\n'])).join(''), 'latin1');
      break;
    case 'auth-cut': {
      const response = Buffer.from(`\0fuzz\0${PASSWORD}`).toString('base64');
      plan.bytes = Buffer.from(
        rng.pick([`AUTH PLAIN\r\n${response.slice(0, rng.int(0, response.length))}`, `AUTH LOGIN\r\n${Buffer.from('fuzz').toString('base64')}\r\n`, `AUTH PLAIN\r\n${'QUFB'.repeat(rng.int(100, 5000))}`, 'AUTH LOGIN\r\n*\r\nAUTH PLAIN\r\n']),
        'latin1',
      );
      break;
    }
    case 'silent':
      plan.end = 'wait';
      break;
  }
  if (plan.lines === undefined && plan.end !== 'wait' && rng.chance(0.2) && plan.bytes.length > 1) plan.cutAt = rng.int(1, plan.bytes.length - 1);
  return plan;
}

/** Everything a socket received, and whether it closed. */
class Wire {
  data = Buffer.alloc(0);
  closed = false;
  private wake: (() => void) | undefined;

  constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.data = Buffer.concat([this.data, chunk]);
      this.wake?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
    socket.on('error', () => undefined);
  }

  /** True once `done()` holds; false after `ms`, or once closed without it. */
  async until(done: () => boolean, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!done()) {
      if (this.closed || Date.now() >= deadline) return done();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
    return true;
  }
}

function multiLineOnOk(command: string): boolean {
  const words = command.split(' ').filter((w) => w.length > 0);
  const verb = (words[0] ?? '').toUpperCase();
  const n = words.length - 1;
  return (verb === 'CAPA' && n === 0) || ((verb === 'LIST' || verb === 'UIDL') && n === 0) || (verb === 'RETR' && n === 1) || (verb === 'TOP' && n === 2);
}

/** The replies after the greeting, one per command (a multi-line reply counting once). */
function countReplies(data: Buffer, start: number, commands: string[]): { replies: string[]; bad?: string; end: number } {
  const replies: string[] = [];
  let at = start;
  for (const command of commands) {
    const end = data.indexOf(CRLF, at);
    if (end < 0) break;
    const status = data.subarray(at, end).toString('latin1');
    if (!/^(\+OK|-ERR)( |$)/.test(status)) return { replies, bad: status, end: at };
    let next = end + 2;
    if (status.startsWith('+OK') && multiLineOnOk(command)) {
      const terminator = data.indexOf('\r\n.\r\n', end);
      if (terminator < 0) break;
      next = terminator + 5;
    }
    replies.push(status);
    at = next;
  }
  return { replies, end: at };
}

async function writeChunked(socket: net.Socket, bytes: Buffer, rng: Rng, cutAt: number | undefined): Promise<void> {
  const limit = cutAt ?? bytes.length;
  for (let at = 0; at < limit && !socket.destroyed; ) {
    const n = Math.min(limit - at, rng.chance(0.3) ? rng.int(1, 8) : rng.int(1, 2048));
    socket.write(bytes.subarray(at, at + n));
    at += n;
    if (rng.chance(0.2)) await new Promise((r) => setTimeout(r, rng.int(0, 10)));
  }
  if (cutAt !== undefined) socket.destroy();
}

function connect(): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port: proxy.port, host: '127.0.0.1' });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

const excerpt = (wire: Wire) => JSON.stringify(wire.data.toString('latin1').slice(0, 300));

/** Why this connection broke a rule, or undefined. */
async function drive(rng: Rng, plan: Plan): Promise<string | undefined> {
  const wire = new Wire(await connect());
  const sentAt = Date.now();
  await writeChunked(wire.socket, plan.bytes, rng, plan.cutAt);
  if (plan.cutAt !== undefined) return undefined;
  if (!(await wire.until(() => wire.data.includes(CRLF), 5000))) return `no greeting; received ${excerpt(wire)}`;
  const greetingEnd = wire.data.indexOf(CRLF) + 2;
  if (plan.lines !== undefined) {
    const lines = plan.lines;
    await wire.until(() => {
      const counted = countReplies(wire.data, greetingEnd, lines);
      return counted.bad !== undefined || counted.replies.length >= lines.length;
    }, REPLY_DEADLINE_MS);
    const counted = countReplies(wire.data, greetingEnd, lines);
    if (counted.bad !== undefined) return `reply ${JSON.stringify(counted.bad)} is neither +OK nor -ERR`;
    if (counted.replies.length < lines.length) {
      if (!wire.closed) return `${counted.replies.length} replies to ${lines.length} lines, connection still open; received ${excerpt(wire)}`;
      const quit = lines.slice(0, counted.replies.length).some((l) => l.toUpperCase() === 'QUIT');
      if (!(counted.replies.at(-1) ?? '').startsWith('-ERR') && !quit) return `closed after ${counted.replies.length} of ${lines.length} replies, the last not -ERR`;
    }
  }
  if (plan.end === 'destroy') return void wire.socket.destroy();
  if (plan.end === 'half-close') wire.socket.end();
  if (!(await wire.until(() => wire.closed, Math.max(AUTH_TIMEOUT_MS, IDLE_TIMEOUT_MS) + SLACK_MS))) {
    wire.socket.destroy();
    return `still open ${Date.now() - sentAt} ms after the client stopped sending (${plan.end}); received ${excerpt(wire)}`;
  }
  return undefined;
}

test(`random and adversarial streams over sockets (seed ${SEED}; SEED=${SEED} replays)`, { timeout: 60_000 }, async (t) => {
  console.log(`pop3 socket fuzz seed ${SEED} (set SEED=${SEED} to replay)`);
  const master = new Rng(SEED);
  const seeds = Array.from({ length: CONNECTIONS }, () => master.seed());
  const problems: string[] = [];
  let next = 0;
  const worker = async () => {
    while (next < seeds.length) {
      const index = next++;
      const rng = new Rng(seeds[index]!);
      const plan = makePlan(rng);
      const problem = await drive(rng, plan).catch((err: Error) => `client error: ${err.message}`);
      if (problem) problems.push(`#${index} ${plan.kind} (connection seed ${seeds[index]}, run seed ${SEED}): ${problem}`);
    }
  };
  const started = Date.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  t.diagnostic(`${CONNECTIONS} connections in ${Date.now() - started} ms`);
  // Still serving, and no session outlives its client.
  const c = await RawPop3.login(proxy.port, 'probe', 'probe-pw');
  assert.match(await c.command('STAT'), /^\+OK 1 \d+$/);
  assert.match(await c.command('QUIT'), /^\+OK/);
  assert.ok(await allSessionsOver(proxy, 10_000), 'sessions left over after every client went away');
  assert.equal(proxy.store.live.size, 0, 'every maildrop given back');
  assert.deepEqual(problems, [], problems.join('\n'));
});
