/**
 * The command line as an operator meets it: --help, environment variables, bad values (one
 * line naming the flag, exit status 2), and a real run of the built program against Dovecot.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { imapClient, startDovecot, type Dovecot } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/cli.js');
let dovecot: Dovecot;

before(async () => {
  dovecot = await startDovecot();
  await dovecot.deliver('alice', 'Subject: cli\nMessage-ID: <cli@test>\n\nfrom the cli test\n');
  for (const n of [1, 2]) await dovecot.deliver('bob', `Subject: bob ${n}\n\nbob's message ${n}\n`);
}, { timeout: 120_000 });

after(async () => {
  await dovecot?.stop();
}, { timeout: 60_000 });

function run(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [cli, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, encoding: 'utf8', timeout: 20_000 });
}

test('--help lists every flag with its default', { timeout: 120_000 }, () => {
  const r = run(['--help']);
  assert.equal(r.status, 0);
  for (const flag of ['--imap-host', '--imap-port', '--imap-tls', '--imap-tls-verify', '--imap-ca', '--mailbox', '--host', '--port',
    '--idle-timeout', '--backend-timeout', '--uidl-format', '--log-level', '--log-format', '--shutdown-grace', '--tls-cert', '--tls-key',
    '--tls-port', '--allow-plaintext-auth', '--imap-servername', '--max-connections', '--max-connections-per-ip', '--auth-timeout',
    '--max-auth-failures', '--auth-fail-delay', '--max-errors', '--config', '--print-config', '--metrics-port', '--max-messages', '--mark-seen',
    '--delete-mode', '--greeting', '--login-delay', '--expire', '--proxy-protocol', '--lock-redis', '--lock-ttl']) {
    assert.ok(r.stdout.includes(flag), flag);
  }
  assert.match(r.stdout, /default: 600/);
  for (const flag of ['--smtp-port', '--smtp-tls-port', '--smtp-max-size', '--smtp-relay-host', '--smtp-relay-port', '--smtp-relay-tls']) {
    assert.ok(r.stdout.includes(flag), flag);
  }
  // Every administrator's command is named, with how to get its own help.
  for (const command of ['hash-password', 'oauth-login', 'healthcheck']) assert.match(r.stdout, new RegExp(`^  ${command}\\b`, 'm'), command);
  assert.match(r.stdout, /pop3-imap-proxy COMMAND --help/);
});

test('each command\'s --help prints its usage and exits 0, doing nothing else', { timeout: 120_000 }, () => {
  const usage: Record<string, RegExp> = {
    'hash-password': /^Usage: pop3-imap-proxy hash-password\n[\s\S]*standard input/,
    healthcheck: /^Usage: pop3-imap-proxy healthcheck \[STATUS_FILE\]/,
    'oauth-login': /pop3-imap-proxy oauth-login --config FILE --profile NAME --account ADDRESS[\s\S]*--account, --mailbox/,
  };
  for (const [command, expected] of Object.entries(usage)) {
    for (const flag of ['--help', '-h']) {
      if (command === 'oauth-login' && flag === '-h') continue;
      const r = run([command, flag]);
      assert.equal(r.status, 0, `${command} ${flag}: ${r.stderr}`);
      assert.match(r.stdout, expected, `${command} ${flag}`);
      assert.equal(r.stderr, '', `${command} ${flag} says nothing on stderr`);
    }
  }
});

test('bad values end the program at once with one line naming the flag and exit status 2', { timeout: 120_000 }, () => {
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

test('flags come from POP3PROXY_* environment variables, and flags win', { timeout: 120_000 }, () => {
  assert.match(run([], { POP3PROXY_IMAP_HOST: 'h', POP3PROXY_PORT: '70000' }).stderr, /POP3PROXY_PORT: 70000/);
  assert.match(run(['--port', '70001'], { POP3PROXY_IMAP_HOST: 'h', POP3PROXY_PORT: '70000' }).stderr, /--port: 70001/);
});

test('--config reads YAML or JSON; flags win over the environment, which wins over the file', { timeout: 120_000 }, async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pop3-config-'));
  try {
    const yamlFile = path.join(dir, 'proxy.yaml');
    await writeFile(yamlFile, 'imap-host: mail.example.com\nport: 2110\nidle-timeout: 300\nmax-errors: 5\n');
    const shown = (args: string[], env: Record<string, string> = {}) => {
      const r = run(['--config', yamlFile, '--print-config', ...args], env);
      assert.equal(r.status, 0, r.stderr);
      return JSON.parse(r.stdout) as Record<string, unknown>;
    };
    assert.deepEqual(
      [shown([])['imap-host'], shown([]).port, shown([])['idle-timeout'], shown([])['log-level']],
      ['mail.example.com', 2110, 300, 'info'],
    );
    assert.equal(shown([], { POP3PROXY_PORT: '3110' }).port, 3110);
    assert.equal(shown(['--port', '4110'], { POP3PROXY_PORT: '3110' }).port, 4110);
    const jsonFile = path.join(dir, 'proxy.json');
    await writeFile(jsonFile, JSON.stringify({ 'imap-host': 'json.example.com', 'max-errors': 7 }));
    const r = run(['--config', jsonFile, '--print-config']);
    assert.equal((JSON.parse(r.stdout) as Record<string, unknown>)['max-errors'], 7);
    // One validation path: the same message, naming where the bad value came from.
    for (const [file, content, message] of [
      ['bad-port.yaml', 'imap-host: h\nport: 70000\n', /^pop3-imap-proxy: port in .*bad-port\.yaml: 70000 is not a valid port/],
      ['unknown.yaml', 'imap-host: h\nbogus: 1\n', /unknown setting "bogus"/],
      ['broken.yaml', 'imap-host: [h\n', /is neither YAML nor JSON/],
    ] as const) {
      await writeFile(path.join(dir, file), content);
      const bad = run(['--config', path.join(dir, file)]);
      assert.equal(bad.status, 2);
      assert.match(bad.stderr, message);
      assert.equal(bad.stderr.trim().split('\n').length, 1);
    }
    assert.match(run(['--config', yamlFile], { POP3PROXY_MAX_ERRORS: '0' }).stderr, /POP3PROXY_MAX_ERRORS: 0 is not/);
    assert.match(run(['--config', path.join(dir, 'missing.yaml')]).stderr, /cannot read/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** Starts the built program in front of the test Dovecot; resolves once it listens. */
async function startCli(port: number, extra: string[] = []) {
  const child = spawn(process.execPath, [cli, '--imap-host', '127.0.0.1', '--imap-port', String(dovecot.imapPort), '--imap-tls', 'none',
    '--host', '127.0.0.1', '--port', String(port), ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  const output = { stderr: '' };
  child.stderr.on('data', (d: Buffer) => (output.stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  for (let i = 0; i < 100 && !output.stderr.includes('listening'); i++) await new Promise((r) => setTimeout(r, 50));
  return { child, output, exited };
}

test('the built program serves a mailbox and stops cleanly on SIGTERM', { timeout: 120_000 }, async () => {
  const port = await freePort();
  const { child, output, exited } = await startCli(port, ['--shutdown-grace', '0']);
  const stderr = () => output.stderr;
  try {
    const c = await RawPop3.connect(port);
    await c.command('USER alice');
    assert.match(await c.command('PASS alice-secret', 30_000), /^\+OK/);
    const msg = await c.multiline('RETR 1');
    assert.match(msg.body.toString(), /from the cli test/);
    child.kill('SIGTERM');
    await c.waitClose();
    assert.equal(await exited, 0);
    assert.match(stderr(), /Session ended: shutdown/);
  } finally {
    child.kill('SIGKILL');
  }
});

test('SIGTERM with sessions in flight: no new connections, a session that QUITs within the grace expunges, the rest are ended safely', { timeout: 120_000 }, async () => {
  const port = await freePort();
  const { child, output, exited } = await startCli(port, ['--shutdown-grace', '3']);
  const timeline: string[] = [];
  const started = Date.now();
  const mark = (what: string) => timeline.push(`${((Date.now() - started) / 1000).toFixed(2)}s ${what}`);
  try {
    const login = async (user: string, password: string) => {
      const c = await RawPop3.connect(port);
      await c.command(`USER ${user}`);
      assert.match(await c.command(`PASS ${password}`, 30_000), /^\+OK/);
      return c;
    };
    const idle = await login('alice', 'alice-secret');
    assert.match(await idle.command('DELE 1'), /^\+OK/);
    const busy = await login('bob', 'bob-secret');
    assert.match(await busy.command('DELE 1'), /^\+OK/);
    mark('two sessions, each with a DELE; SIGTERM');
    child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    await assert.rejects(RawPop3.connect(port, '127.0.0.1', 2000));
    mark('a new connection is refused');
    assert.match(await busy.command('QUIT'), /^\+OK/);
    mark('bob QUITs within the grace: +OK');
    await idle.waitClose(10_000);
    mark(`alice, idle, is ended by the server: ${JSON.stringify(idle.received().toString('latin1').split('\r\n').filter(Boolean).at(-1))}`);
    assert.equal(await exited, 0);
    mark('the program exits with status 0');
    const elapsed = (Date.now() - started) / 1000;
    assert.ok(elapsed >= 2.5 && elapsed < 10, `ended after the grace (${elapsed} s)`);
    assert.match(output.stderr, /user=bob .*Session ended: quit, .*expunged=1/);
    assert.match(output.stderr, /user=alice .*Session ended: shutdown/);
  } finally {
    child.kill('SIGKILL');
  }
  const count = async (user: string, password: string) => {
    const imap = await imapClient(dovecot, { name: user, password });
    try {
      const box = await imap.mailboxOpen('INBOX');
      const flagged = box.exists ? (await imap.fetchAll('1:*', { flags: true })).filter((m) => m.flags?.has('\\Deleted')).length : 0;
      return { exists: box.exists, flagged };
    } finally {
      await imap.logout().catch(() => undefined);
    }
  };
  assert.deepEqual(await count('bob', 'bob-secret'), { exists: 1, flagged: 0 });
  assert.deepEqual(await count('alice', 'alice-secret'), { exists: 1, flagged: 0 });
  mark('store: bob 1 message left (1 expunged), alice 1 message, no \\Deleted flag');
  process.stdout.write(`shutdown timeline:\n  ${timeline.join('\n  ')}\n`);
});

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}
