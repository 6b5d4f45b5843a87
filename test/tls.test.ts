/**
 * TLS on both sides. In front: implicit TLS and STLS, driven by real clients nobody here wrote
 * (openssl s_client, curl, Python's poplib) and by raw node:tls sockets for what those cannot
 * show (pipelined plaintext behind STLS, certificate reload, which certificate is presented).
 * The plaintext-password policy for clients that are not on loopback. Behind: implicit TLS and
 * STARTTLS to Dovecot, certificate checks, no fallback to plaintext, and the client's own
 * address handed to Dovecot with IMAP ID.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import tls from 'node:tls';
import { testCerts, type TestCerts } from './support/certs.js';
import { dovecotLog, startDovecot, type Dovecot, type TestUser } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { startProxy, type TestProxy } from './support/proxy.js';

const MESSAGE = Buffer.from(
  [
    'From: Sender <sender@example.org>',
    'To: Receiver <receiver@example.org>',
    'Subject: delivered over TLS',
    'Message-ID: <tls-1@example.org>',
    'Content-Type: text/plain; charset=iso-8859-1',
    'Content-Transfer-Encoding: 8bit',
    '',
    'First line.',
    '.A line that starts with a dot.',
    '..and one with two.',
    '',
    'Caf\xe9 \xfc 8-bit text.',
    'Last line.',
    '',
  ].join('\r\n'),
  'latin1',
);

const USERS: TestUser[] = [
  'sclient', 'sclient-stls', 'curl', 'curl-stls', 'poplib', 'poplib-stls', 'capa', 'inject', 'reload', 'policy', 'nostarttls',
].map((name) => ({ name, password: `${name}-Pw-91` }));
const user = (name: string): TestUser => USERS.find((u) => u.name === name)!;

let certs: TestCerts;
/** Plain IMAP only (ssl = no): no STARTTLS to offer. */
let dovecot: Dovecot;
/** STLS on `port`, implicit TLS on `tlsPort`. */
let proxy: TestProxy;
let work: string;

before(async () => {
  certs = await testCerts();
  work = await mkdtemp(join(os.tmpdir(), 'pop3-tls-'));
  dovecot = await startDovecot({ users: USERS });
  for (const u of USERS) await dovecot.deliver(u.name, MESSAGE);
  proxy = await startProxy({
    imapPort: dovecot.imapPort,
    tls: { certFile: certs.server.chainFile, keyFile: certs.server.keyFile, implicit: true },
  });
}, { timeout: 120_000 });

after(async () => {
  await proxy?.close();
  await dovecot?.stop();
  if (work) await rm(work, { recursive: true, force: true });
}, { timeout: 60_000 });

// ---------------------------------------------------------------------------------------------
// Clients

interface ToolResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
  timedOut: boolean;
}

/** Runs a program with `input` on stdin; never rejects (a timeout kills it and says so). */
function runTool(command: string, args: string[], input = '', timeoutMs = 30_000): Promise<ToolResult> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.stdin.on('error', () => undefined);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ code: -1, stdout: Buffer.concat(out), stderr: `${stderr}${err.message}`, timedOut });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr, timedOut });
    });
    child.stdin.end(input);
  });
}

function describeRun(what: string, r: ToolResult): string {
  return `${what}: exit ${r.code}${r.timedOut ? ' (timed out)' : ''}\nstdout: ${JSON.stringify(r.stdout.toString('latin1').slice(0, 2000))}\nstderr: ${r.stderr.slice(-2000)}`;
}

/** A RawPop3 over a socket made here (TLS, or bound to a chosen local address). */
function rawOver(socket: net.Socket): RawPop3 {
  return new (RawPop3 as unknown as new (socket: net.Socket) => RawPop3)(socket);
}

interface TlsClient {
  client: RawPop3;
  socket: tls.TLSSocket;
}

function trusting(): tls.ConnectionOptions {
  return { ca: certs.ca.cert, servername: 'localhost' };
}

/** Waits for the handshake of a client TLS socket; rejects on a handshake error. */
function handshake(socket: tls.TLSSocket, timeoutMs = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no TLS handshake within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      socket.off('error', onError);
      resolve();
    });
    const onError = (err: Error) => {
      clearTimeout(timer);
      reject(err);
    };
    socket.once('error', onError);
  });
}

/** Connects with implicit TLS and reads the greeting. */
async function connectTls(port: number, options: tls.ConnectionOptions = trusting()): Promise<TlsClient> {
  const socket = tls.connect({ host: '127.0.0.1', port, ...options });
  const client = rawOver(socket);
  await handshake(socket);
  client.greeting = await client.readLine();
  return { client, socket };
}

interface PlainStart {
  greeting: string;
  stlsReply: string;
  /** Plaintext that arrived after the STLS reply, before the handshake (nothing, normally). */
  straggler: Buffer;
  socket: net.Socket;
}

/**
 * Connects without TLS, reads the greeting, sends "STLS" (followed by `behind` in the same
 * write) and reads the reply line. The socket is left paused, unread past that line.
 */
function plainUntilStls(port: number, options: { host?: string; localAddress?: string; behind?: string; settleMs?: number } = {}): Promise<PlainStart> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: options.host ?? '127.0.0.1', ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
    let data = Buffer.alloc(0);
    let greeting: string | undefined;
    let stlsReply: string | undefined;
    const timer = setTimeout(() => fail(new Error(`no STLS reply within 10 s; got ${JSON.stringify(data.toString('latin1'))}`)), 10_000);
    const fail = (err: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    const onData = (chunk: Buffer) => {
      data = Buffer.concat([data, chunk]);
      for (;;) {
        if (stlsReply !== undefined) return;
        const end = data.indexOf('\r\n');
        if (end < 0) return;
        const line = data.subarray(0, end).toString('latin1');
        data = data.subarray(end + 2);
        if (greeting === undefined) {
          greeting = line;
          socket.write(`STLS\r\n${options.behind ?? ''}`);
        } else {
          stlsReply = line;
          const greeted = greeting;
          clearTimeout(timer);
          // Anything more in plaintext would be an answer to what was pipelined behind STLS.
          setTimeout(() => {
            socket.off('data', onData);
            socket.off('error', fail);
            socket.off('close', onClose);
            socket.pause();
            resolve({ greeting: greeted, stlsReply: line, straggler: data, socket });
          }, options.settleMs ?? 0);
        }
      }
    };
    const onClose = () => fail(new Error(`connection closed before the STLS reply; got ${JSON.stringify(data.toString('latin1'))}`));
    socket.on('data', onData);
    socket.on('error', fail);
    socket.on('close', onClose);
  });
}

/** STLS then a TLS handshake over the same socket; the returned client reads over TLS. */
async function connectStls(port: number, options: { host?: string; localAddress?: string; behind?: string; settleMs?: number } = {}, tlsOptions: tls.ConnectionOptions = trusting()): Promise<TlsClient & { start: PlainStart }> {
  const start = await plainUntilStls(port, options);
  assert.match(start.stlsReply, /^\+OK/, `STLS reply: ${start.stlsReply}`);
  const socket = tls.connect({ socket: start.socket, ...tlsOptions });
  const client = rawOver(socket);
  await handshake(socket);
  return { client, socket, start };
}

async function capa(c: RawPop3): Promise<string[]> {
  const status = await c.command('CAPA');
  assert.match(status, /^\+OK/, 'CAPA');
  return (await c.readMultiline()).toString('latin1').split('\r\n').filter((l) => l.length > 0);
}

const capaHas = (caps: string[], name: string) => caps.some((l) => l.split(' ')[0]!.toUpperCase() === name);

async function login(c: RawPop3, u: TestUser): Promise<void> {
  assert.match(await c.command(`USER ${u.name}`), /^\+OK/);
  assert.match(await c.command(`PASS ${u.password}`, 30_000), /^\+OK/);
}

async function quit(c: RawPop3): Promise<void> {
  assert.match(await c.command('QUIT', 30_000), /^\+OK/);
  await c.waitClose();
}

// ---------------------------------------------------------------------------------------------
// Implicit TLS and STLS with real clients

test('implicit TLS: openssl s_client verifies the chain, logs in, STAT and QUIT', { timeout: 120_000 }, async () => {
  const u = user('sclient');
  const r = await runTool(
    'openssl',
    ['s_client', '-connect', `127.0.0.1:${proxy.tlsPort}`, '-CAfile', certs.ca.certFile, '-verify_return_error', '-quiet'],
    `USER ${u.name}\r\nPASS ${u.password}\r\nSTAT\r\nQUIT\r\n`,
  );
  const lines = r.stdout.toString('latin1').split('\r\n').filter((l) => l.length > 0);
  assert.equal(lines.length, 5, describeRun('s_client', r));
  for (const l of lines) assert.match(l, /^\+OK/, describeRun('s_client', r));
  assert.equal(lines[3], `+OK 1 ${MESSAGE.length}`);
  assert.equal(r.timedOut, false);
});

test('STLS: openssl s_client -starttls pop3 verifies the chain, logs in, STAT and QUIT', { timeout: 120_000 }, async () => {
  const u = user('sclient-stls');
  const r = await runTool(
    'openssl',
    ['s_client', '-starttls', 'pop3', '-connect', `127.0.0.1:${proxy.port}`, '-CAfile', certs.ca.certFile, '-verify_return_error', '-quiet'],
    `USER ${u.name}\r\nPASS ${u.password}\r\nSTAT\r\nQUIT\r\n`,
  );
  // s_client reads the greeting and the STLS reply itself: what it prints is what came over TLS.
  const lines = r.stdout.toString('latin1').split('\r\n').filter((l) => l.length > 0);
  assert.equal(lines.length, 4, describeRun('s_client', r));
  for (const l of lines) assert.match(l, /^\+OK/, describeRun('s_client', r));
  assert.equal(lines[2], `+OK 1 ${MESSAGE.length}`);
});

test('implicit TLS: curl pop3s:// lists and downloads the message byte for byte', { timeout: 120_000 }, async () => {
  const u = user('curl');
  const base = ['-sS', '--max-time', '30', '--cacert', certs.ca.certFile, '--user', `${u.name}:${u.password}`];
  const list = await runTool('curl', [...base, `pop3s://127.0.0.1:${proxy.tlsPort}/`]);
  assert.equal(list.code, 0, describeRun('curl LIST', list));
  assert.equal(list.stdout.toString('latin1'), `1 ${MESSAGE.length}\r\n`);
  const retr = await runTool('curl', [...base, `pop3s://127.0.0.1:${proxy.tlsPort}/1`]);
  assert.equal(retr.code, 0, describeRun('curl RETR', retr));
  assert.ok(retr.stdout.equals(MESSAGE), describeRun('curl RETR', retr));
});

test('STLS: curl --ssl-reqd pop3:// downloads the message byte for byte', { timeout: 120_000 }, async () => {
  const u = user('curl-stls');
  const retr = await runTool('curl', [
    '-sS', '--max-time', '30', '--ssl-reqd', '--cacert', certs.ca.certFile, '--user', `${u.name}:${u.password}`,
    `pop3://127.0.0.1:${proxy.port}/1`,
  ]);
  assert.equal(retr.code, 0, describeRun('curl', retr));
  assert.ok(retr.stdout.equals(MESSAGE), describeRun('curl', retr));
});

const POPLIB = `
import base64, json, poplib, ssl, sys
host, port, mode, ca, user, password = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=ca)
out = {}
if mode == 'implicit':
    p = poplib.POP3_SSL(host, int(port), context=ctx, timeout=30)
else:
    p = poplib.POP3(host, int(port), timeout=30)
    out['capaBefore'] = sorted(p.capa().keys())
    p.stls(context=ctx)
out['tls'] = p.sock.version()
out['capa'] = sorted(p.capa().keys())
p.user(user)
p.pass_(password)
out['stat'] = list(p.stat())
out['list'] = [l.decode('latin1') for l in p.list()[1]]
resp, lines, octets = p.retr(1)
out['retr'] = base64.b64encode(b''.join(l + b'\\r\\n' for l in lines)).decode()
out['quit'] = p.quit().decode('latin1')
print(json.dumps(out))
`;

interface PoplibResult {
  capaBefore?: string[];
  tls: string;
  capa: string[];
  stat: [number, number];
  list: string[];
  retr: string;
  quit: string;
}

async function poplib(port: number, mode: 'implicit' | 'stls', u: TestUser): Promise<PoplibResult> {
  const r = await runTool('python3', ['-c', POPLIB, '127.0.0.1', String(port), mode, certs.ca.certFile, u.name, u.password]);
  assert.equal(r.code, 0, describeRun('python3 poplib', r));
  return JSON.parse(r.stdout.toString('utf8')) as PoplibResult;
}

test('implicit TLS: Python poplib POP3_SSL logs in, lists and retrieves the message byte for byte', { timeout: 120_000 }, async () => {
  const got = await poplib(proxy.tlsPort!, 'implicit', user('poplib'));
  assert.match(got.tls, /^TLSv1\.[23]$/);
  assert.equal(got.capa.includes('STLS'), false, 'no STLS on the implicit-TLS port');
  assert.deepEqual(got.stat, [1, MESSAGE.length]);
  assert.deepEqual(got.list, [`1 ${MESSAGE.length}`]);
  assert.ok(Buffer.from(got.retr, 'base64').equals(MESSAGE), 'RETR bytes');
  assert.match(got.quit, /^\+OK/);
});

test('STLS: Python poplib stls() upgrades, logs in and retrieves the message byte for byte', { timeout: 120_000 }, async () => {
  const got = await poplib(proxy.port, 'stls', user('poplib-stls'));
  assert.ok(got.capaBefore?.includes('STLS'), `CAPA before STLS: ${JSON.stringify(got.capaBefore)}`);
  assert.equal(got.capa.includes('STLS'), false, `CAPA after STLS: ${JSON.stringify(got.capa)}`);
  assert.match(got.tls, /^TLSv1\.[23]$/);
  assert.deepEqual(got.stat, [1, MESSAGE.length]);
  assert.ok(Buffer.from(got.retr, 'base64').equals(MESSAGE), 'RETR bytes');
});

// ---------------------------------------------------------------------------------------------
// Protocol versions

/** The first bytes a client sends to a listener that never answers. */
async function firstBytesOf(command: string, args: (port: number) => string[]): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const server = net.createServer((s) => {
    s.on('data', (c: Buffer) => {
      chunks.push(c);
      s.destroy();
    });
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  await runTool(command, args(port), '', 15_000);
  await new Promise<void>((r) => server.close(() => r()));
  return Buffer.concat(chunks);
}

const TLS11_ARGS = ['-tls1_1', '-cipher', 'DEFAULT:@SECLEVEL=0'];

test('TLS 1.1 is refused on the implicit-TLS port and after STLS', { timeout: 120_000 }, async (t) => {
  const hello = await firstBytesOf('openssl', (port) => ['s_client', '-connect', `127.0.0.1:${port}`, ...TLS11_ARGS]);
  // A TLS record (0x16) holding a ClientHello (type 1) whose client_version is 3.2 (TLS 1.1).
  if (!(hello.length > 10 && hello[0] === 0x16 && hello[5] === 0x01 && hello[9] === 0x03 && hello[10] === 0x02)) {
    t.skip('the local openssl cannot offer TLS 1.1');
    return;
  }
  const implicit = await runTool('openssl', ['s_client', '-connect', `127.0.0.1:${proxy.tlsPort}`, ...TLS11_ARGS], 'CAPA\r\n');
  assert.notEqual(implicit.code, 0, describeRun('s_client -tls1_1', implicit));
  assert.equal(implicit.stdout.toString('latin1').includes('+OK'), false, describeRun('s_client -tls1_1', implicit));
  const stls = await runTool('openssl', ['s_client', '-starttls', 'pop3', '-connect', `127.0.0.1:${proxy.port}`, ...TLS11_ARGS], 'CAPA\r\n');
  assert.notEqual(stls.code, 0, describeRun('s_client -starttls pop3 -tls1_1', stls));
  assert.equal(stls.stdout.toString('latin1').includes('+OK'), false, describeRun('s_client -starttls pop3 -tls1_1', stls));
  // Node offering only TLS 1.1 fails the same way, and the server still serves TLS 1.2+ after.
  const old = tls.connect({ host: '127.0.0.1', port: proxy.tlsPort!, ...trusting(), minVersion: 'TLSv1.1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT:@SECLEVEL=0' });
  old.on('data', () => undefined);
  await assert.rejects(handshake(old));
  old.destroy();
  const { client, socket } = await connectTls(proxy.tlsPort!);
  assert.match(socket.getProtocol() ?? '', /^TLSv1\.[23]$/);
  await client.command('QUIT');
  client.destroy();
});

// ---------------------------------------------------------------------------------------------
// CAPA and STLS in the protocol

test('CAPA lists STLS before TLS on the plain port, not after STLS, never on the implicit-TLS port', { timeout: 120_000 }, async () => {
  const plain = await RawPop3.connect(proxy.port);
  assert.ok(capaHas(await capa(plain), 'STLS'), 'plain port, before STLS');
  plain.destroy();

  const upgraded = await connectStls(proxy.port);
  const after = await capa(upgraded.client);
  assert.equal(capaHas(after, 'STLS'), false, `after STLS: ${after.join(' | ')}`);
  assert.ok(capaHas(after, 'USER'), 'USER is offered over TLS');
  await upgraded.client.command('QUIT');
  upgraded.client.destroy();

  const implicit = await connectTls(proxy.tlsPort!);
  assert.match(implicit.client.greeting, /^\+OK/);
  const caps = await capa(implicit.client);
  assert.equal(capaHas(caps, 'STLS'), false, `implicit TLS: ${caps.join(' | ')}`);
  assert.ok(capaHas(caps, 'USER'));
  assert.match(await implicit.client.command('STLS'), /^-ERR/, 'STLS on the implicit-TLS port');
  assert.match(await implicit.client.command('NOOP'), /^-ERR/, 'still AUTHORIZATION, still answering');
  await implicit.client.command('QUIT');
  implicit.client.destroy();
});

test('STLS is refused in the TRANSACTION state and a second time; the session goes on', { timeout: 120_000 }, async () => {
  const u = user('capa');
  const c = await RawPop3.connect(proxy.port);
  await login(c, u);
  assert.match(await c.command('STLS'), /^-ERR/);
  // Still plaintext, still logged in.
  assert.match(await c.command('STAT'), /^\+OK 1 /);
  await quit(c);

  const twice = await connectStls(proxy.port);
  assert.match(await twice.client.command('STLS'), /^-ERR/);
  assert.ok((await capa(twice.client)).length > 0, 'CAPA over TLS after the refused STLS');
  await login(twice.client, u);
  assert.match(await twice.client.command('STAT'), /^\+OK 1 /);
  await quit(twice.client);
});

test('commands pipelined in plaintext behind STLS are dropped, never answered', { timeout: 120_000 }, async () => {
  const u = user('inject');
  const c = await connectStls(proxy.port, { behind: `CAPA\r\nUSER ${u.name}\r\n`, settleMs: 300 });
  assert.equal(c.start.straggler.length, 0, `plaintext after the STLS reply: ${JSON.stringify(c.start.straggler.toString('latin1'))}`);
  // If USER had survived the handshake, PASS would be tried against the store.
  const pass = await c.client.command(`PASS ${u.password}`, 30_000);
  assert.match(pass, /^-ERR/, 'PASS without USER over TLS');
  assert.doesNotMatch(pass, /\[AUTH\]|\[IN-USE\]|\[SYS/, `PASS must fail for want of USER: ${pass}`);
  // The next reply is CAPA's: nothing else was queued.
  const caps = await capa(c.client);
  assert.ok(capaHas(caps, 'USER'));
  assert.match(await c.client.command('QUIT'), /^\+OK/);
  await c.client.waitClose();
  assert.equal(c.client.unread().length, 0, `unexpected data over TLS: ${JSON.stringify(c.client.unread().toString('latin1'))}`);
  assert.equal(dovecotLog(dovecot).includes(`user=<${u.name}>`), false, 'no login attempt reached Dovecot');
});

// ---------------------------------------------------------------------------------------------
// Certificate reload

test('reload (SIGHUP): new handshakes get the new certificate, running TLS sessions keep working', { timeout: 120_000 }, async () => {
  const dir = await mkdtemp(join(work, 'reload-'));
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  await copyFile(certs.server.chainFile, certFile);
  await copyFile(certs.server.keyFile, keyFile);
  const p = await startProxy({ imapPort: dovecot.imapPort, tls: { certFile, keyFile, implicit: true } });
  const reloadTls = () => p.server.reload();
  try {
    const u = user('reload');
    const old = await connectTls(p.tlsPort!);
    assert.equal(old.socket.getPeerCertificate().fingerprint256, certs.server.fingerprint256);
    await login(old.client, u);

    const next = await certs.issue('reloaded');
    await writeFile(certFile, next.chain);
    await writeFile(keyFile, next.key);
    reloadTls();

    const fresh = await connectTls(p.tlsPort!);
    assert.equal(fresh.socket.getPeerCertificate().fingerprint256, next.fingerprint256, 'implicit TLS after reload');
    assert.match(await fresh.client.command('CAPA'), /^\+OK/);
    await fresh.client.readMultiline();
    fresh.client.destroy();
    const upgraded = await connectStls(p.port);
    assert.equal(upgraded.socket.getPeerCertificate().fingerprint256, next.fingerprint256, 'STLS after reload');
    upgraded.client.destroy();

    // The session that started before the reload is unaffected.
    assert.match(await old.client.command('STAT'), /^\+OK 1 /);
    const retr = await old.client.multiline('RETR 1');
    assert.ok(retr.body.equals(MESSAGE));
    await quit(old.client);

    // A pair that does not load leaves the current one in place.
    await writeFile(keyFile, '-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n');
    try {
      reloadTls();
    } catch {
      // Reporting the bad pair by throwing is fine too.
    }
    const still = await connectTls(p.tlsPort!);
    assert.equal(still.socket.getPeerCertificate().fingerprint256, next.fingerprint256, 'after a failed reload');
    await login(still.client, u);
    await quit(still.client);
  } finally {
    await p.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Plaintext passwords from other hosts

function externalIPv4(): string | undefined {
  for (const addresses of Object.values(os.networkInterfaces())) {
    for (const a of addresses ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return undefined;
}

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');

test('TLS configured: no plaintext passwords from other hosts; loopback, STLS and --allow-plaintext-auth may', { timeout: 120_000 }, async (t) => {
  const external = externalIPv4();
  if (external === undefined) {
    t.skip('this machine has no non-loopback IPv4 address');
    return;
  }
  const u = user('policy');
  const tlsOption = { certFile: certs.server.chainFile, keyFile: certs.server.keyFile };
  const strict = await startProxy({ imapPort: dovecot.imapPort, listenHost: '0.0.0.0', tls: tlsOption });
  const lenient = await startProxy({ imapPort: dovecot.imapPort, listenHost: '0.0.0.0', tls: tlsOption, allowPlaintextAuth: true });
  try {
    const before = dovecotLog(dovecot).split('\n').filter((l) => l.includes(`user=<${u.name}>`)).length;
    const c = await RawPop3.connect(strict.port, external);
    const caps = await capa(c);
    assert.ok(capaHas(caps, 'STLS'), `CAPA: ${caps.join(' | ')}`);
    assert.equal(capaHas(caps, 'USER'), false, `CAPA must not offer USER: ${caps.join(' | ')}`);
    assert.equal(capaHas(caps, 'SASL'), false, `CAPA must not offer SASL: ${caps.join(' | ')}`);

    // USER may already be refused; if not, PASS is.
    const userReply = await c.command(`USER ${u.name}`);
    const refusal = userReply.startsWith('+OK') ? await c.command(`PASS ${u.password}`, 30_000) : userReply;
    assert.match(refusal, /^-ERR \[AUTH\] .*TLS/i, `USER: ${userReply}`);
    const plain = await c.command(`AUTH PLAIN ${b64(`\0${u.name}\0${u.password}`)}`, 30_000);
    assert.match(plain, /^-ERR \[AUTH\] .*TLS/i);
    const loginMech = await c.command('AUTH LOGIN', 30_000);
    assert.match(loginMech, /^-ERR \[AUTH\] .*TLS/i);
    assert.match(await c.command('STAT'), /^-ERR/, 'not logged in');
    assert.match(await c.command('QUIT'), /^\+OK/);
    c.destroy();
    const attempts = dovecotLog(dovecot).split('\n').filter((l) => l.includes(`user=<${u.name}>`)).length;
    assert.equal(attempts, before, 'the refused password never reached Dovecot');

    // Loopback: plaintext is fine.
    const local = await RawPop3.connect(strict.port, '127.0.0.1');
    assert.ok(capaHas(await capa(local), 'USER'), 'loopback CAPA offers USER');
    await login(local, u);
    await quit(local);

    // Over STLS from the other address.
    const upgraded = await connectStls(strict.port, { host: external });
    const tlsCaps = await capa(upgraded.client);
    assert.ok(capaHas(tlsCaps, 'USER'), `CAPA over TLS: ${tlsCaps.join(' | ')}`);
    assert.ok(capaHas(tlsCaps, 'SASL'), `CAPA over TLS: ${tlsCaps.join(' | ')}`);
    await login(upgraded.client, u);
    assert.match(await upgraded.client.command('STAT'), /^\+OK 1 /);
    await quit(upgraded.client);

    // Explicitly allowed.
    const allowed = await RawPop3.connect(lenient.port, external);
    const allowedCaps = await capa(allowed);
    assert.ok(capaHas(allowedCaps, 'USER'), `CAPA with plaintext allowed: ${allowedCaps.join(' | ')}`);
    await login(allowed, u);
    assert.match(await allowed.command('STAT'), /^\+OK 1 /);
    await quit(allowed);
    const viaSasl = await RawPop3.connect(lenient.port, external);
    assert.match(await viaSasl.command(`AUTH PLAIN ${b64(`\0${u.name}\0${u.password}`)}`, 30_000), /^\+OK/);
    await quit(viaSasl);
  } finally {
    await strict.close();
    await lenient.close();
  }
});

// ---------------------------------------------------------------------------------------------
// TLS to the IMAP server

/** A free loopback port for a listener Dovecot opens itself. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

async function tryLogin(port: number, u: TestUser): Promise<{ reply: string; client: RawPop3 }> {
  const client = await RawPop3.connect(port);
  await client.command(`USER ${u.name}`);
  const reply = await client.command(`PASS ${u.password}`, 40_000);
  return { reply, client };
}

test('backend TLS: implicit and STARTTLS with the right CA, refused with the wrong one, never plaintext', { timeout: 120_000 }, async () => {
  const imapsPort = await freePort();
  const alice: TestUser = { name: 'alice', password: 'alice-backend-pw' };
  const secureDovecot = await startDovecot({
    users: [alice],
    extraConfig: [
      'ssl = yes',
      `ssl_cert = <${certs.server.chainFile}`,
      `ssl_key = <${certs.server.keyFile}`,
      'service imap-login {',
      '  inet_listener imaps {',
      '    address = 127.0.0.1',
      `    port = ${imapsPort}`,
      '    ssl = yes',
      '  }',
      '}',
    ].join('\n'),
  });
  await secureDovecot.deliver('alice', MESSAGE);
  const proxies: TestProxy[] = [];
  const via = async (options: Parameters<typeof startProxy>[0]) => {
    const p = await startProxy({ backendTimeoutMs: 15_000, ...options });
    proxies.push(p);
    return p;
  };
  try {
    const works = async (p: TestProxy, what: string) => {
      const { reply, client } = await tryLogin(p.port, alice);
      assert.match(reply, /^\+OK/, `${what}: ${reply}\n${p.log().slice(-2000)}`);
      assert.match(await client.command('STAT'), /^\+OK 1 /);
      const retr = await client.multiline('RETR 1');
      assert.ok(retr.body.equals(MESSAGE), `${what}: RETR bytes`);
      await quit(client);
    };
    const refused = async (p: TestProxy, what: string, pattern = /^-ERR \[SYS\/(TEMP|PERM)\] /) => {
      const started = Date.now();
      const { reply, client } = await tryLogin(p.port, alice);
      assert.match(reply, pattern, `${what}: ${reply}`);
      assert.ok(Date.now() - started < 20_000, `${what}: answered after ${Date.now() - started} ms`);
      // The session is still there and in AUTHORIZATION.
      assert.match(await client.command('STAT'), /^-ERR/);
      await client.command('QUIT');
      client.destroy();
    };

    await works(await via({ imapPort: imapsPort, imapTls: 'implicit', imapCa: certs.ca.cert }), 'implicit TLS, test CA');
    await works(await via({ imapPort: imapsPort, imapTls: 'implicit', imapCa: certs.ca.cert, imapServername: 'localhost' }), 'implicit TLS, server name localhost');
    await refused(await via({ imapPort: imapsPort, imapTls: 'implicit', imapCa: certs.other.cert }), 'implicit TLS, wrong CA');
    await refused(await via({ imapPort: imapsPort, imapTls: 'implicit', imapCa: certs.ca.cert, imapServername: 'imap.example.net' }), 'implicit TLS, wrong server name');
    await refused(await via({ imapPort: imapsPort, imapTls: 'implicit' }), 'implicit TLS, system CAs only');
    await works(await via({ imapPort: imapsPort, imapTls: 'implicit', imapVerifyTls: false }), 'implicit TLS, not verified');
    await works(await via({ imapPort: secureDovecot.imapPort, imapTls: 'starttls', imapCa: certs.ca.cert }), 'STARTTLS, test CA');
    await refused(await via({ imapPort: secureDovecot.imapPort, imapTls: 'starttls', imapCa: certs.other.cert }), 'STARTTLS, wrong CA');

    // A server without STARTTLS: refused for good, and the password never goes out in plaintext.
    const stranger = user('nostarttls');
    const noStarttls = await via({ imapPort: dovecot.imapPort, imapTls: 'starttls', imapCa: certs.ca.cert });
    const { reply, client } = await tryLogin(noStarttls.port, stranger);
    assert.match(reply, /^-ERR \[SYS\/PERM\] /, reply);
    client.destroy();
    assert.match(noStarttls.log(), /STARTTLS/i, 'the log says why');
    const plainLog = dovecotLog(dovecot);
    assert.equal(plainLog.includes(`user=<${stranger.name}>`), false, 'no plaintext login');
    assert.equal(plainLog.includes(`(${stranger.name},`), false, 'no password check in plaintext');
  } finally {
    for (const p of proxies) await p.close();
    await secureDovecot.stop();
  }
});

// ---------------------------------------------------------------------------------------------
// The client's address reaches Dovecot

test('IMAP ID hands the client address to Dovecot: another address is not slowed by the penalty', { timeout: 120_000 }, async () => {
  const alice: TestUser = { name: 'alice', password: 'alice-id-pw' };
  const idDovecot = await startDovecot({
    users: [alice],
    extraConfig: [
      'login_trusted_networks = 127.0.0.0/8',
      // Only the per-address penalty (anvil) slows failures down, not a flat delay for all.
      'auth_failure_delay = 0',
      'login_log_format_elements = user=<%u> method=%m rip=%r rport=%{rport} lip=%l %c session=<%{session}>',
    ].join('\n'),
  });
  const p = await startProxy({ imapPort: idDovecot.imapPort, backendTimeoutMs: 40_000 });
  try {
    // Two failures from 127.0.0.1 earn that address Dovecot's penalty: its next login waits.
    const a = await RawPop3.connect(p.port);
    for (const guess of ['guess-one', 'guess-two']) {
      await a.command(`USER ${alice.name}`);
      assert.match(await a.command(`PASS ${guess}`, 40_000), /^-ERR \[AUTH\]/);
    }
    a.destroy();

    // Right away, the right password from 127.0.0.2.
    const socket = net.connect({ port: p.port, host: '127.0.0.1', localAddress: '127.0.0.2' });
    const b = rawOver(socket);
    b.greeting = await b.readLine();
    const localPort = socket.localPort;
    const started = Date.now();
    await login(b, alice);
    const took = Date.now() - started;
    await quit(b);
    const log = dovecotLog(idDovecot);
    const logins = log.split('\n').filter((l) => /imap-login: .*Login: user=<alice>/.test(l));
    assert.equal(logins.length, 1, log.slice(-3000));
    assert.match(logins[0]!, /rip=127\.0\.0\.2,/, 'Dovecot sees the client address');
    assert.match(logins[0]!, new RegExp(`rport=${localPort},`), 'and the client port');
    const failures = log.split('\n').filter((l) => /passwd-file\(alice,/.test(l) && /mismatch/i.test(l));
    assert.equal(failures.length, 2);
    for (const l of failures) assert.match(l, /passwd-file\(alice,127\.0\.0\.1,/);
    assert.ok(took < 3000, `login from 127.0.0.2 took ${took} ms: the penalty of 127.0.0.1 applied to it`);
  } finally {
    await p.close();
    await idDovecot.stop();
  }
});
