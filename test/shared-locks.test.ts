/**
 * Several proxy replicas in front of one IMAP server share their mailbox locks in Redis: one
 * POP3 session per mailbox across all of them, released on every exit, and not held for ever
 * by a replica that dies.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startDovecot, type Dovecot } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { startProxy, type TestProxy } from './support/proxy.js';
import { startRedis, type TestRedis } from './support/redis.js';

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/cli.js');
let dovecot: Dovecot;
let redis: TestRedis;
const replicas: TestProxy[] = [];

before(async () => {
  dovecot = await startDovecot();
  await dovecot.deliver('alice', 'Subject: shared\n\nbody\n');
  redis = await startRedis();
  for (let i = 0; i < 2; i++) {
    replicas.push(await startProxy({ imapPort: dovecot.imapPort, logLevel: 'info', lockRedis: { url: redis.url, ttlMs: 2000 } }));
  }
}, { timeout: 120_000 });

after(async () => {
  for (const r of replicas) await r.close();
  await redis?.stop();
  await dovecot?.stop();
}, { timeout: 60_000 });

async function pass(port: number): Promise<{ client: RawPop3; reply: string }> {
  const client = await RawPop3.connect(port);
  await client.command('USER alice');
  return { client, reply: await client.command('PASS alice-secret', 30_000) };
}

test('one session per mailbox across replicas: the second gets [IN-USE] until the first QUITs or drops', { timeout: 120_000 }, async () => {
  const [a, b] = replicas as [TestProxy, TestProxy];
  const first = await pass(a.port);
  assert.match(first.reply, /^\+OK/);
  const second = await pass(b.port);
  assert.match(second.reply, /^-ERR \[IN-USE\] /);
  assert.match(await first.client.command('QUIT'), /^\+OK/);
  assert.match(await second.client.command('USER alice'), /^\+OK/);
  assert.match(await second.client.command('PASS alice-secret', 30_000), /^\+OK/);
  // A dropped session gives the lock back too.
  second.client.destroy();
  let reply = '';
  for (let i = 0; i < 50 && !reply.startsWith('+OK'); i++) {
    const again = await pass(a.port);
    reply = again.reply;
    if (reply.startsWith('+OK')) await again.client.command('QUIT');
    again.client.destroy();
    if (!reply.startsWith('+OK')) await new Promise((r) => setTimeout(r, 100));
  }
  assert.match(reply, /^\+OK/);
});

test('a replica killed while holding a lock: the lock expires after --lock-ttl, no later', { timeout: 120_000 }, async () => {
  const port = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port: p } = s.address() as net.AddressInfo;
      s.close(() => resolve(p));
    });
  });
  const child = spawn(process.execPath, [cli, '--imap-host', '127.0.0.1', '--imap-port', String(dovecot.imapPort), '--imap-tls', 'none',
    '--host', '127.0.0.1', '--port', String(port), '--lock-redis', redis.url, '--lock-ttl', '2'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  try {
    for (let i = 0; i < 100 && !stderr.includes('listening'); i++) await new Promise((r) => setTimeout(r, 50));
    const held = await pass(port);
    assert.match(held.reply, /^\+OK/);
    child.kill('SIGKILL');
    const killedAt = Date.now();
    assert.match((await pass(replicas[0]!.port)).reply, /^-ERR \[IN-USE\] /);
    let reply = '';
    while (!reply.startsWith('+OK') && Date.now() - killedAt < 10_000) {
      await new Promise((r) => setTimeout(r, 250));
      const attempt = await pass(replicas[0]!.port);
      reply = attempt.reply;
      if (reply.startsWith('+OK')) await attempt.client.command('QUIT');
      attempt.client.destroy();
    }
    const waited = Date.now() - killedAt;
    assert.match(reply, /^\+OK/);
    assert.ok(waited >= 1500 && waited < 5000, `the lock expired after ${waited} ms (ttl 2 s)`);
  } finally {
    child.kill('SIGKILL');
  }
});

test('with Redis unreachable, a login is refused with [SYS/TEMP] at once, and nothing hangs', { timeout: 120_000 }, async () => {
  const orphan = await startProxy({ imapPort: dovecot.imapPort, logLevel: 'info', lockRedis: { url: 'redis://127.0.0.1:1/0', ttlMs: 2000 } });
  try {
    const started = Date.now();
    const { client, reply } = await pass(orphan.port);
    assert.match(reply, /^-ERR \[SYS\/TEMP\] /);
    assert.ok(Date.now() - started < 10_000);
    client.destroy();
  } finally {
    await orphan.close();
  }
});
