/**
 * Behind a load balancer: a real HAProxy in front of the proxy sends PROXY protocol v1 and v2
 * headers, and the proxy's log and limits see the real client address. Connections without a
 * valid header are dropped; a header in front of implicit TLS works too.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import tls from 'node:tls';
import { testCerts, type TestCerts } from './support/certs.js';
import { startDovecot, type Dovecot } from './support/dovecot.js';
import { startProxy, type TestProxy } from './support/proxy.js';

let dovecot: Dovecot;
let certs: TestCerts;
let proxy: TestProxy;
let haproxy: ChildProcess | undefined;
let work: string;
const ports = { v1: 0, v2: 0 };

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

before(async () => {
  dovecot = await startDovecot();
  await dovecot.deliver('alice', 'Subject: behind haproxy\n\nhello\n');
  certs = await testCerts();
  proxy = await startProxy({
    imapPort: dovecot.imapPort,
    logLevel: 'info',
    proxyProtocol: true,
    tls: { certFile: certs.server.chainFile, keyFile: certs.server.keyFile, implicit: true },
    limits: { maxConnectionsPerIp: 1 },
  });
  work = await mkdtemp(path.join(os.tmpdir(), 'pop3-haproxy-'));
  ports.v1 = await freePort();
  ports.v2 = await freePort();
  const config = path.join(work, 'haproxy.cfg');
  await writeFile(config, [
    'global', '  maxconn 100',
    'defaults', '  mode tcp', '  timeout connect 5s', '  timeout client 60s', '  timeout server 60s',
    `frontend v1`, `  bind 127.0.0.1:${ports.v1}`, '  default_backend pop3_v1',
    `frontend v2`, `  bind 127.0.0.1:${ports.v2}`, '  default_backend pop3_v2',
    'backend pop3_v1', `  server proxy 127.0.0.1:${proxy.port} send-proxy`,
    'backend pop3_v2', `  server proxy 127.0.0.1:${proxy.port} send-proxy-v2`,
    '',
  ].join('\n'));
  haproxy = spawn('haproxy', ['-db', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  for (let i = 0; i < 100; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect(ports.v2, '127.0.0.1', () => (s.destroy(), resolve(true))).on('error', () => resolve(false));
    });
    if (up) break;
    await new Promise((r) => setTimeout(r, 50));
  }
}, { timeout: 120_000 });

after(async () => {
  haproxy?.kill('SIGTERM');
  await proxy?.close();
  await dovecot?.stop();
  if (work) await rm(work, { recursive: true, force: true });
}, { timeout: 60_000 });

/** A full session through HAProxy from a given loopback source address. */
async function sessionVia(port: number, localAddress: string): Promise<void> {
  const client = await connectFrom(port, localAddress);
  assert.match(client.greeting, /^\+OK/);
  await client.command('USER alice');
  assert.match(await client.command('PASS alice-secret', 30_000), /^\+OK Logged in, 1 message/);
  assert.match(await client.command('QUIT'), /^\+OK/);
  await client.waitClose();
}

/** RawPop3 has no source address option: a tiny client for that. */
async function connectFrom(port: number, localAddress: string): Promise<{ greeting: string; command(line: string, t?: number): Promise<string>; waitClose(): Promise<void> }> {
  const socket = net.connect({ port, host: '127.0.0.1', localAddress });
  let buffer = '';
  const waiting: Array<(line: string) => void> = [];
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  socket.on('data', (d: Buffer) => {
    buffer += d.toString('latin1');
    for (let end = buffer.indexOf('\r\n'); end >= 0 && waiting.length > 0; end = buffer.indexOf('\r\n')) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      waiting.shift()!(line);
    }
  });
  const next = () => new Promise<string>((resolve) => waiting.push(resolve));
  const greeting = await next();
  return {
    greeting,
    command: (line) => {
      socket.write(`${line}\r\n`);
      return next();
    },
    waitClose: () => closed,
  };
}

test('through HAProxy with PROXY v1 and v2, the log shows the real client address', { timeout: 120_000 }, async () => {
  await sessionVia(ports.v1, '127.0.0.2');
  await sessionVia(ports.v2, '127.0.0.3');
  const log = proxy.log();
  process.stdout.write(`haproxy sessions in the proxy log:\n${log.split('\n').filter((l) => /Session ended/.test(l)).join('\n')}\n`);
  assert.match(log, /client=127\.0\.0\.2:\d+ Session ended: quit/);
  assert.match(log, /client=127\.0\.0\.3:\d+ Session ended: quit/);
});

test('limits apply to the announced address, not to the balancer\'s', { timeout: 120_000 }, async () => {
  // At most one connection per address: two clients behind one HAProxy are two addresses.
  const a = await connectFrom(ports.v2, '127.0.0.4');
  const b = await connectFrom(ports.v2, '127.0.0.5');
  assert.match(a.greeting, /^\+OK/);
  assert.match(b.greeting, /^\+OK/);
  const again = await connectFrom(ports.v2, '127.0.0.4');
  assert.match(again.greeting, /^-ERR \[SYS\/TEMP\] /);
  for (const c of [a, b]) await c.command('QUIT');
});

test('a connection without a valid header is dropped without a greeting', { timeout: 120_000 }, async () => {
  const socket = net.connect(proxy.port, '127.0.0.1');
  socket.write('USER alice\r\n');
  let received = '';
  socket.on('data', (d: Buffer) => (received += d.toString()));
  await new Promise((resolve) => socket.on('close', resolve));
  assert.equal(received, '');
});

test('a PROXY v1 header in front of implicit TLS, written in one piece with the TLS ClientHello', { timeout: 120_000 }, async () => {
  const raw = net.connect(proxy.tlsPort!, '127.0.0.1');
  await new Promise((resolve) => raw.once('connect', resolve));
  // Cork so that the header and the ClientHello leave in one segment.
  raw.cork();
  raw.write('PROXY TCP4 192.0.2.44 127.0.0.1 40044 995\r\n');
  const secure = tls.connect({ socket: raw, ca: certs.ca.cert, servername: 'localhost' });
  process.nextTick(() => raw.uncork());
  await new Promise((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject));
  const greeting = await new Promise<string>((resolve) => secure.once('data', (d: Buffer) => resolve(d.toString())));
  assert.match(greeting, /^\+OK/);
  secure.write('QUIT\r\n');
  await new Promise((resolve) => secure.on('close', resolve));
  assert.match(proxy.log(), /client=192\.0\.2\.44:40044/);
});
