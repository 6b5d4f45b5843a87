/**
 * Random and adversarial byte streams against live sessions: random bytes, NULs and 8-bit
 * octets, overlong lines, many pipelined commands with random arguments, partial lines, bare
 * CRs, commands in the wrong state, AUTH exchanges cut off, STLS followed by garbage, garbage on
 * the implicit-TLS port. Some connections run at once.
 *
 * What must hold: the server never crashes (it serves a normal session afterwards and holds no
 * session when the clients are gone); no connection outlives its timeouts once the client stops
 * sending; and for streams of complete command lines, every line gets exactly one reply
 * (+OK or -ERR, a multi-line reply counting once), unless the server closes the connection
 * with a final -ERR saying why.
 *
 * The generator is seeded: the seed is printed, and SEED=<n> replays a run.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import tls from 'node:tls';
import { testCerts, type TestCerts } from './support/certs.js';
import { NO_LOGIN_PENALTY, startDovecot, type Dovecot, type TestUser } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { startProxy, type TestProxy } from './support/proxy.js';

const SEED = process.env.SEED !== undefined && process.env.SEED !== '' ? Number(process.env.SEED) >>> 0 : Math.floor(Math.random() * 2 ** 32) >>> 0;
const CONNECTIONS = 200;
const CONCURRENCY = 16;
const AUTH_TIMEOUT_MS = 2000;
const IDLE_TIMEOUT_MS = 4000;
/** How long past its timeouts a connection may take to be closed. */
const SLACK_MS = 7000;
/** Longest wait for the replies to a stream of complete lines. */
const REPLY_DEADLINE_MS = 20_000;

const fuzz: TestUser = { name: 'fuzz', password: 'fuzz-pw-3141' };
const probe: TestUser = { name: 'probe', password: 'probe-pw-2718' };

let dovecot: Dovecot;
let proxy: TestProxy;
let certs: TestCerts;

before(async () => {
  certs = await testCerts();
  dovecot = await startDovecot({
    users: [fuzz, probe],
    // Many wrong passwords come from one address: no growing penalty for it at the store.
    extraConfig: NO_LOGIN_PENALTY,
  });
  for (let i = 1; i <= 6; i++) {
    await dovecot.deliver('fuzz', `Subject: fuzz ${i}\r\nMessage-ID: <f${i}@fuzz>\r\n\r\nline one\r\n.dotted\r\n..double\r\n.\r\nend ${i}\r\n`);
  }
  await dovecot.deliver('probe', 'Subject: probe\r\nMessage-ID: <p@fuzz>\r\n\r\nprobe\r\n');
  proxy = await startProxy({
    imapPort: dovecot.imapPort,
    tls: { certFile: certs.server.chainFile, keyFile: certs.server.keyFile, implicit: true },
    idleTimeoutMs: IDLE_TIMEOUT_MS,
    backendTimeoutMs: 10_000,
    logLevel: 'info',
    limits: {
      maxConnections: 200,
      maxConnectionsPerIp: 100,
      authTimeoutMs: AUTH_TIMEOUT_MS,
      maxAuthFailures: 5,
      authFailDelayMs: 300,
      maxErrors: 40,
    },
  });
}, { timeout: 120_000 });

after(async () => {
  await proxy?.close();
  await dovecot?.stop();
}, { timeout: 60_000 });

// ---------------------------------------------------------------------------------------------
// A seeded generator (mulberry32)

class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  /** A float in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }
  bytes(n: number, allowed?: (b: number) => boolean): Buffer {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) {
      let b = this.int(0, 255);
      while (allowed && !allowed(b)) b = this.int(0, 255);
      out[i] = b;
    }
    return out;
  }
  /** Random upper/lower case. */
  mixCase(s: string): string {
    return [...s].map((c) => (this.chance(0.5) ? c.toLowerCase() : c.toUpperCase())).join('');
  }
}

// ---------------------------------------------------------------------------------------------
// Streams

const KNOWN = new Set(['USER', 'PASS', 'APOP', 'STAT', 'LIST', 'RETR', 'DELE', 'NOOP', 'RSET', 'QUIT', 'TOP', 'UIDL', 'CAPA', 'AUTH', 'STLS']);
const ARGS = ['1', '2', '3', '6', '7', '0', '-1', '00', '01', '4294967296', '99999999999999999999', 'x', 'abc', '\u00e9', '1.5', '+1', '0x1'];

type Kind =
  | 'random-bytes'
  | 'binary-lines'
  | 'long-lines'
  | 'pipelined'
  | 'wrong-state'
  | 'partial-line'
  | 'bare-cr'
  | 'auth-cut'
  | 'stls-garbage'
  | 'stls-then-garbage'
  | 'tls-pipelined'
  | 'implicit-garbage'
  | 'implicit-silent'
  | 'silent';

interface Plan {
  kind: Kind;
  /** Connect to the implicit-TLS port. */
  implicitTls: boolean;
  /** Do STLS and a real handshake first, then send `bytes` over TLS. */
  stls: boolean;
  /** Wait for the greeting before sending. */
  awaitGreeting: boolean;
  bytes: Buffer;
  /** When every line is complete and none is AUTH or STLS: the lines, for counting replies. */
  lines: string[] | undefined;
  /** Lines answered before a trailing partial line (counted as for `lines`). */
  end: 'wait' | 'half-close' | 'destroy';
  /** Cut the connection after this many bytes (abrupt client). */
  cutAt: number | undefined;
}

function randomArgs(rng: Rng, max: number): string {
  const n = rng.int(0, max);
  const args: string[] = [];
  for (let i = 0; i < n; i++) args.push(rng.pick(ARGS));
  return args.length ? ` ${args.join(' ')}` : '';
}

/** A command line that is not AUTH or STLS (their replies are not single status lines). */
function commandLine(rng: Rng, loggedInLikely: boolean): string {
  const roll = rng.next();
  if (roll < 0.1) return `${rng.mixCase('USER')} ${rng.chance(0.7) ? fuzz.name : rng.pick(['nobody', 'x', 'FUZZ', 'fuzz@example'])}`;
  if (roll < 0.18) return `${rng.mixCase('PASS')} ${rng.chance(0.6) ? fuzz.password : rng.pick(['wrong', 'a b c', fuzz.password.toUpperCase()])}`;
  if (roll < 0.2) return `${rng.mixCase('APOP')} ${fuzz.name} c4c9334bac560ecc979e58001b3e22fb`;
  if (roll < 0.85) {
    const verb = rng.pick(loggedInLikely ? ['STAT', 'LIST', 'RETR', 'TOP', 'UIDL', 'NOOP', 'RSET', 'DELE', 'CAPA', 'LIST', 'UIDL', 'RETR'] : ['STAT', 'LIST', 'RETR', 'TOP', 'UIDL', 'NOOP', 'RSET', 'DELE', 'CAPA']);
    return `${rng.mixCase(verb)}${randomArgs(rng, verb === 'TOP' ? 3 : 2)}`;
  }
  return garbageLine(rng, rng.int(1, 40));
}

/** A line of random octets with no CR or LF whose first word is no command. */
function garbageLine(rng: Rng, length: number): string {
  for (;;) {
    const bytes = rng.bytes(length, (b) => b !== 0x0a && b !== 0x0d);
    const line = bytes.toString('latin1');
    const verb = line.split(' ')[0]!.toUpperCase();
    if (line.trim().length > 0 && !KNOWN.has(verb)) return line;
  }
}

const CRLF = '\r\n';
const linesToBytes = (lines: string[]) => Buffer.from(lines.map((l) => l + CRLF).join(''), 'latin1');

function makePlan(rng: Rng): Plan {
  const kind = rng.pick<Kind>([
    'random-bytes', 'binary-lines', 'long-lines', 'pipelined', 'pipelined', 'pipelined', 'wrong-state', 'partial-line',
    'bare-cr', 'auth-cut', 'stls-garbage', 'stls-then-garbage', 'tls-pipelined', 'implicit-garbage', 'implicit-silent', 'silent',
  ]);
  const plan: Plan = {
    kind,
    implicitTls: false,
    stls: false,
    awaitGreeting: rng.chance(0.7),
    bytes: Buffer.alloc(0),
    lines: undefined,
    end: rng.pick(['wait', 'half-close', 'half-close', 'destroy']),
    cutAt: undefined,
  };
  switch (kind) {
    case 'random-bytes':
      plan.bytes = rng.bytes(rng.int(1, 4000));
      break;
    case 'binary-lines': {
      const lines: string[] = [];
      for (let i = rng.int(1, 30); i > 0; i--) lines.push(garbageLine(rng, rng.int(1, 200)));
      plan.lines = lines;
      plan.bytes = linesToBytes(lines);
      break;
    }
    case 'long-lines': {
      const lines: string[] = [];
      for (let i = rng.int(1, 8); i > 0; i--) {
        lines.push(rng.chance(0.5) ? commandLine(rng, false) : `${rng.pick(['NOOP ', 'USER ', 'LIST ', 'XYZ '])}${'A'.repeat(rng.int(510, 6000))}`);
      }
      plan.lines = lines;
      plan.bytes = linesToBytes(lines);
      break;
    }
    case 'pipelined':
    case 'tls-pipelined': {
      const lines: string[] = [];
      if (rng.chance(0.6)) lines.push(`USER ${fuzz.name}`, `PASS ${fuzz.password}`);
      for (let i = rng.int(5, 80); i > 0; i--) lines.push(commandLine(rng, lines.length > 0));
      if (rng.chance(0.3)) lines.push(rng.mixCase('QUIT'));
      plan.lines = lines;
      plan.bytes = linesToBytes(lines);
      plan.stls = kind === 'tls-pipelined';
      plan.awaitGreeting = true;
      break;
    }
    case 'wrong-state': {
      const lines: string[] = [];
      for (let i = rng.int(2, 20); i > 0; i--) {
        lines.push(rng.pick(['STAT', 'LIST 1', 'RETR 1', 'DELE 1', 'RSET', 'NOOP', 'TOP 1 1', 'UIDL', `PASS ${fuzz.password}`]));
      }
      lines.push(`USER ${fuzz.name}`, `PASS ${fuzz.password}`);
      for (let i = rng.int(2, 20); i > 0; i--) lines.push(rng.pick(['USER fuzz', 'PASS x', 'APOP fuzz 0123', 'STAT', 'NOOP', 'LIST']));
      plan.lines = lines;
      plan.bytes = linesToBytes(lines);
      break;
    }
    case 'partial-line': {
      const lines: string[] = [];
      for (let i = rng.int(0, 10); i > 0; i--) lines.push(commandLine(rng, false));
      plan.lines = lines;
      plan.bytes = Buffer.concat([linesToBytes(lines), Buffer.from(rng.pick(['USER fu', 'CAPA', 'PASS ', 'A'.repeat(rng.int(1, 400))]), 'latin1')]);
      plan.end = rng.pick(['wait', 'half-close']);
      break;
    }
    case 'bare-cr': {
      const parts: string[] = [];
      for (let i = rng.int(1, 20); i > 0; i--) parts.push(commandLine(rng, false) + rng.pick(['\r', '\r', '\r\r', '\r\n', '\n']));
      plan.bytes = Buffer.from(parts.join(''), 'latin1');
      break;
    }
    case 'auth-cut': {
      const response = Buffer.from(`\0${fuzz.name}\0${fuzz.password}`).toString('base64');
      plan.bytes = Buffer.from(
        rng.pick([
          `AUTH PLAIN\r\n${response.slice(0, rng.int(0, response.length))}`,
          `AUTH LOGIN\r\n${Buffer.from(fuzz.name).toString('base64')}\r\n`,
          'AUTH LOGIN\r\n',
          `AUTH PLAIN\r\n${'QUFB'.repeat(rng.int(100, 3000))}`,
          `AUTH XOAUTH2\r\n${'dXNlcj1m'.repeat(rng.int(1, 400))}`,
          `AUTH OAUTHBEARER ${'bixh'.repeat(rng.int(1, 40))}`,
          `AUTH PLAIN\r\n${rng.bytes(rng.int(1, 500)).toString('latin1')}`,
          `AUTH LOGIN\r\n*\r\nAUTH PLAIN\r\n`,
        ]),
        'latin1',
      );
      break;
    }
    case 'stls-garbage':
      // STLS and garbage in one write: what follows STLS in plaintext must be dropped.
      plan.bytes = Buffer.concat([Buffer.from('STLS\r\n'), rng.bytes(rng.int(1, 3000))]);
      break;
    case 'stls-then-garbage':
      plan.bytes = Buffer.from('STLS\r\n');
      plan.awaitGreeting = true;
      break;
    case 'implicit-garbage':
      plan.implicitTls = true;
      plan.bytes = rng.chance(0.5) ? rng.bytes(rng.int(1, 3000)) : Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]), rng.bytes(rng.int(0, 600))]);
      break;
    case 'implicit-silent':
      plan.implicitTls = true;
      plan.end = 'wait';
      break;
    case 'silent':
      plan.end = 'wait';
      break;
  }
  if (plan.lines === undefined && plan.end !== 'wait' && rng.chance(0.2) && plan.bytes.length > 1) plan.cutAt = rng.int(1, plan.bytes.length - 1);
  return plan;
}

// ---------------------------------------------------------------------------------------------
// The client side

/** Everything a socket received, and whether it was closed. */
class Wire {
  data = Buffer.alloc(0);
  closed = false;
  error: string | undefined;
  private wake: (() => void) | undefined;
  private readonly onData = (chunk: Buffer) => {
    this.data = Buffer.concat([this.data, chunk]);
    this.wake?.();
  };
  private readonly onClose = () => {
    this.closed = true;
    this.wake?.();
  };
  private readonly onError = (err: Error) => {
    this.error = err.message;
  };

  constructor(readonly socket: net.Socket) {
    socket.on('data', this.onData);
    socket.on('close', this.onClose);
    socket.on('error', this.onError);
  }

  /** Stops listening (before the socket is handed to TLS). */
  detach(): void {
    this.socket.off('data', this.onData);
    this.socket.off('close', this.onClose);
    this.socket.pause();
  }

  /** Resolves true once `done()` holds, false after `ms` or when closed without it. */
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

  line(from = 0): { text: string; next: number } | undefined {
    const end = this.data.indexOf(CRLF, from);
    if (end < 0) return undefined;
    return { text: this.data.subarray(from, end).toString('latin1'), next: end + 2 };
  }
}

function multiLineOnOk(command: string): boolean {
  const words = command.split(' ').filter((w) => w.length > 0);
  const verb = (words[0] ?? '').toUpperCase();
  const n = words.length - 1;
  return (verb === 'CAPA' && n === 0) || ((verb === 'LIST' || verb === 'UIDL') && n === 0) || (verb === 'RETR' && n === 1) || (verb === 'TOP' && n === 2);
}

interface Count {
  /** Replies parsed, in order of the commands. */
  replies: string[];
  /** A reply line that is neither +OK nor -ERR. */
  bad: string | undefined;
  /** Where the parsed replies end. */
  end: number;
}

/** Parses the replies after the greeting: one status line each, plus a body for multi-line ones. */
function countReplies(data: Buffer, start: number, commands: string[]): Count {
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
  return { replies, bad: undefined, end: at };
}

function connectPlain(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

function connectImplicit(port: number): Promise<net.Socket> {
  // The garbage goes onto a plain TCP connection to the TLS port.
  return connectPlain(port);
}

async function writeChunked(socket: net.Socket, bytes: Buffer, rng: Rng, cutAt: number | undefined): Promise<void> {
  let at = 0;
  const limit = cutAt ?? bytes.length;
  while (at < limit && !socket.destroyed) {
    const n = Math.min(limit - at, rng.chance(0.3) ? rng.int(1, 8) : rng.int(1, 2048));
    socket.write(bytes.subarray(at, at + n));
    at += n;
    if (rng.chance(0.2)) await new Promise((r) => setTimeout(r, rng.int(0, 15)));
  }
  if (cutAt !== undefined) socket.destroy();
}

interface Result {
  index: number;
  seed: number;
  kind: Kind;
  problem: string | undefined;
}

function excerpt(wire: Wire | undefined): string {
  if (!wire) return '';
  const text = wire.data.toString('latin1');
  return JSON.stringify(text.length > 600 ? `${text.slice(0, 300)} ... ${text.slice(-300)}` : text);
}

async function runConnection(index: number, seed: number): Promise<Result> {
  const rng = new Rng(seed);
  const plan = makePlan(rng);
  try {
    return await drive(index, seed, rng, plan);
  } catch (err) {
    return { index, seed, kind: plan.kind, problem: `client error: ${(err as Error).message}` };
  }
}

async function drive(index: number, seed: number, rng: Rng, plan: Plan): Promise<Result> {
  const result: Result = { index, seed, kind: plan.kind, problem: undefined };
  let localPort: number | undefined;
  const fail = (why: string, wire?: Wire) => {
    const port = localPort ?? wire?.socket.localPort;
    const log = port === undefined ? [] : proxy.log().split('\n').filter((l) => l.includes(`:${port}`));
    result.problem = `${why}; received ${excerpt(wire)}${log.length ? `\n  proxy log:\n  ${log.slice(-8).join('\n  ')}` : ''}`;
    return result;
  };
  const closeLimit = Math.max(AUTH_TIMEOUT_MS, IDLE_TIMEOUT_MS) + SLACK_MS;

  let wire = new Wire(plan.implicitTls ? await connectImplicit(proxy.tlsPort!) : await connectPlain(proxy.port));
  localPort = wire.socket.localPort;
  let greetingEnd = 0;
  if (plan.awaitGreeting && !plan.implicitTls) {
    if (!(await wire.until(() => wire.line() !== undefined, 10_000))) return fail('no greeting', wire);
    const greeting = wire.line()!;
    if (!greeting.text.startsWith('+OK')) return fail(`greeting ${greeting.text}`, wire);
    greetingEnd = greeting.next;
  }

  if (plan.kind === 'stls-then-garbage' || plan.stls) {
    wire.socket.write('STLS\r\n');
    if (!(await wire.until(() => wire.line(greetingEnd) !== undefined, 10_000))) return fail('no reply to STLS', wire);
    const reply = wire.line(greetingEnd)!;
    if (!reply.text.startsWith('+OK')) return fail(`STLS: ${reply.text}`, wire);
    if (reply.next !== wire.data.length) return fail('data after the STLS reply', wire);
    if (plan.kind === 'stls-then-garbage') {
      wire.socket.write(rng.bytes(rng.int(1, 3000)));
    } else {
      wire.detach();
      const secure = tls.connect({ socket: wire.socket, ca: certs.ca.cert, servername: 'localhost' });
      let handshaken = false;
      secure.once('secureConnect', () => (handshaken = true));
      wire = new Wire(secure);
      const ok = await wire.until(() => handshaken, 10_000);
      if (!ok || wire.error) return fail(`TLS handshake after STLS: ${wire.error ?? 'timed out'}`, wire);
      greetingEnd = 0;
    }
  }

  const sentAt = Date.now();
  await writeChunked(wire.socket, plan.bytes, rng, plan.cutAt);
  if (plan.cutAt !== undefined) return result;

  if (plan.lines !== undefined) {
    const lines = plan.lines;
    if (!plan.awaitGreeting) {
      // Sent before the greeting arrived: the replies start after it.
      if (!(await wire.until(() => wire.line() !== undefined, 10_000))) return fail('no greeting', wire);
      greetingEnd = wire.line()!.next;
    }
    let counted = countReplies(wire.data, greetingEnd, lines);
    await wire.until(() => {
      counted = countReplies(wire.data, greetingEnd, lines);
      return counted.bad !== undefined || counted.replies.length >= lines.length;
    }, REPLY_DEADLINE_MS);
    counted = countReplies(wire.data, greetingEnd, lines);
    if (counted.bad !== undefined) return fail(`reply line ${JSON.stringify(counted.bad)} is neither +OK nor -ERR`, wire);
    if (counted.replies.length < lines.length) {
      if (!wire.closed) return fail(`${counted.replies.length} replies to ${lines.length} lines after ${REPLY_DEADLINE_MS} ms, connection still open`, wire);
      const last = counted.replies.at(-1) ?? '';
      const quitAnswered = lines.slice(0, counted.replies.length).some((l) => l.toUpperCase() === 'QUIT');
      if (!last.startsWith('-ERR') && !quitAnswered) return fail(`closed after ${counted.replies.length} of ${lines.length} replies, last not -ERR`, wire);
    }
  }

  if (plan.end === 'destroy') {
    wire.socket.destroy();
    return result;
  }
  if (plan.end === 'half-close') wire.socket.end();
  const closed = await wire.until(() => wire.closed, closeLimit);
  if (!closed) {
    wire.socket.destroy();
    return fail(`still open ${Date.now() - sentAt} ms after the client stopped sending (${plan.end})`, wire);
  }
  if (plan.kind === 'partial-line' && plan.lines !== undefined) {
    // The unfinished line is never run, not even when the client half-closes after it: at most
    // the reason for closing follows the replies to the complete lines.
    const counted = countReplies(wire.data, greetingEnd, plan.lines);
    const rest = wire.data.subarray(counted.end).toString('latin1');
    if (counted.replies.length === plan.lines.length && rest !== '' && !/^-ERR [^\r\n]*\r\n$/.test(rest)) {
      return fail(`after the replies to the complete lines: ${JSON.stringify(rest.slice(0, 200))}`, wire);
    }
  }
  return result;
}

// ---------------------------------------------------------------------------------------------

async function normalSession(): Promise<void> {
  const c = await RawPop3.connect(proxy.port);
  assert.match(c.greeting, /^\+OK/);
  assert.match(await c.command(`USER ${probe.name}`), /^\+OK/);
  assert.match(await c.command(`PASS ${probe.password}`, 30_000), /^\+OK/);
  assert.match(await c.command('STAT'), /^\+OK 1 \d+$/);
  assert.match(await c.command('QUIT'), /^\+OK/);
  await c.waitClose();
}

test(`random and adversarial streams (seed ${SEED}; SEED=${SEED} replays)`, { timeout: 120_000 }, async (t) => {
  t.diagnostic(`seed ${SEED}`);
  console.log(`fuzz seed ${SEED} (set SEED=${SEED} to replay)`);
  const master = new Rng(SEED);
  const seeds = Array.from({ length: CONNECTIONS }, () => Math.floor(master.next() * 2 ** 32) >>> 0);
  const results: Result[] = [];
  let next = 0;
  const worker = async () => {
    while (next < seeds.length) {
      const index = next++;
      results.push(await runConnection(index, seeds[index]!));
    }
  };
  const started = Date.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const kinds = new Map<string, number>();
  for (const r of results) kinds.set(r.kind, (kinds.get(r.kind) ?? 0) + 1);
  t.diagnostic(`${results.length} connections in ${Date.now() - started} ms: ${[...kinds].map(([k, n]) => `${k}=${n}`).join(' ')}`);

  // Still serving, and every session is gone once its client is.
  await normalSession();
  const deadline = Date.now() + 10_000;
  while (proxy.server.activeSessions > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.equal(proxy.server.activeSessions, 0, 'sessions left over after every client went away');

  const problems = results.filter((r) => r.problem !== undefined).map((r) => `#${r.index} ${r.kind} (connection seed ${r.seed}, run seed ${SEED}): ${r.problem}`);
  assert.deepEqual(problems, [], problems.join('\n'));
});
