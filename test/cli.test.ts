/**
 * The command line as an operator meets it: --help, environment variables, bad values (one
 * line naming the flag, exit status 2), and a real run of the built program against Dovecot.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startDovecot, type Dovecot } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/cli.js');
let dovecot: Dovecot;

before(async () => {
  dovecot = await startDovecot();
  await dovecot.deliver('alice', 'Subject: cli\nMessage-ID: <cli@test>\n\nfrom the cli test\n');
});

after(async () => {
  await dovecot?.stop();
});

function run(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [cli, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, encoding: 'utf8', timeout: 20_000 });
}

test('--help lists every flag with its default', () => {
  const r = run(['--help']);
  assert.equal(r.status, 0);
  for (const flag of ['--imap-host', '--imap-port', '--imap-tls', '--imap-tls-verify', '--imap-ca', '--mailbox', '--host', '--port',
    '--idle-timeout', '--backend-timeout', '--uidl-format', '--log-level', '--log-format']) {
    assert.ok(r.stdout.includes(flag), flag);
  }
  assert.match(r.stdout, /default: 600/);
});

test('bad values end the program at once with one line naming the flag and exit status 2', () => {
  const cases: Array<[string[], RegExp]> = [
    [['--imap-host', 'h', '--port', '70000'], /--port/],
    [['--imap-host', 'h', '--imap-port', 'abc'], /--imap-port/],
    [['--imap-host', 'h', '--imap-tls', 'sometimes'], /imap-tls/],
    [['--imap-host', 'h', '--imap-ca', '/nonexistent/ca.pem'], /--imap-ca/],
    [['--imap-host', 'h', '--uidl-format', '%u'], /--uidl-format/],
    [['--imap-host', 'h', '--idle-timeout', '-5'], /--idle-timeout/],
    [['--imap-host', 'h', '--log-level', 'loud'], /log-level/],
    [['--imap-host', 'h', '--bogus-flag'], /bogus-flag/],
    [[], /--imap-host/],
  ];
  for (const [args, pattern] of cases) {
    const r = run(args);
    assert.equal(r.status, 2, args.join(' '));
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line for ${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, pattern);
  }
});

test('flags come from POP3PROXY_* environment variables, and flags win', () => {
  assert.match(run([], { POP3PROXY_IMAP_HOST: 'h', POP3PROXY_PORT: '70000' }).stderr, /--port: 70000/);
  assert.match(run(['--port', '70001'], { POP3PROXY_IMAP_HOST: 'h', POP3PROXY_PORT: '70000' }).stderr, /--port: 70001/);
});

test('the built program serves a mailbox and stops cleanly on SIGTERM', async () => {
  const port = await freePort();
  const child = spawn(process.execPath, [cli, '--imap-host', '127.0.0.1', '--imap-port', String(dovecot.imapPort), '--imap-tls', 'none',
    '--host', '127.0.0.1', '--port', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    for (let i = 0; i < 100 && !stderr.includes('listening'); i++) await new Promise((r) => setTimeout(r, 50));
    const c = await RawPop3.connect(port);
    await c.command('USER alice');
    assert.match(await c.command('PASS alice-secret', 30_000), /^\+OK/);
    const msg = await c.multiline('RETR 1');
    assert.match(msg.body.toString(), /from the cli test/);
    child.kill('SIGTERM');
    await c.waitClose();
    assert.equal(await exited, 0);
    assert.match(stderr, /Session ended: shutdown/);
  } finally {
    child.kill('SIGKILL');
  }
});

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}
