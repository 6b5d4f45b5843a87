/**
 * What the container runs: the package as `npm pack` makes it, installed into an empty folder
 * with production dependencies only, its `pop3-imap-proxy` command serving a real mailbox.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { startDovecot, type Dovecot } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { repoRoot } from './support/system.js';

const run = promisify(execFile);
let dovecot: Dovecot;
let work: string;

before(async () => {
  dovecot = await startDovecot();
  await dovecot.deliver('alice', 'Subject: packaged\nMessage-ID: <pack@test>\n\nserved by the installed package\n');
  work = await mkdtemp(path.join(os.tmpdir(), 'pop3-package-'));
}, { timeout: 120_000 });

after(async () => {
  await dovecot?.stop();
  if (work) await rm(work, { recursive: true, force: true });
}, { timeout: 60_000 });

test('npm pack, install with production dependencies only, and the installed command serves a mailbox', { timeout: 240_000 }, async () => {
  const root = repoRoot();
  const packed = await run('npm', ['pack', '--json', '--pack-destination', work], { cwd: root, maxBuffer: 16 << 20 });
  const [{ filename, files }] = JSON.parse(packed.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
  const paths = files.map((f) => f.path);
  assert.ok(paths.includes('dist/cli.js'), 'the package holds the built program');
  assert.ok(!paths.some((p) => p.startsWith('src/') || p.startsWith('test/')), 'and no sources or tests');

  // npm applies `overrides` of the top-level package only: an installing project repeats ours.
  const { overrides } = JSON.parse(await readFile(path.join(root, 'package.json'), 'utf8')) as { overrides: unknown };
  const app = path.join(work, 'app');
  await run('mkdir', ['-p', app]);
  await writeFile(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, overrides }));
  await run('npm', ['install', '--omit=dev', '--no-audit', '--no-fund', '--prefer-offline', path.join(work, filename)], { cwd: app, maxBuffer: 16 << 20 });
  const installed = await readFile(path.join(app, 'node_modules/pop3-imap-proxy/package.json'), 'utf8');
  assert.match(installed, /"name": "pop3-imap-proxy"/);

  const bin = path.join(app, 'node_modules/.bin/pop3-imap-proxy');
  const child = spawn(bin, ['--imap-host', dovecot.host, '--imap-port', String(dovecot.imapPort), '--imap-tls', 'none', '--host', '127.0.0.1', '--port', '0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  try {
    let port: number | undefined;
    for (let i = 0; i < 200 && port === undefined; i++) {
      port = Number(/POP3 listening on [\d.]+:(\d+)/.exec(stderr)?.[1]) || undefined;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(port, `the installed command listens (${stderr})`);
    const c = await RawPop3.connect(port);
    await c.command('USER alice');
    assert.match(await c.command('PASS alice-secret', 30_000), /^\+OK/);
    const message = await c.multiline('RETR 1');
    assert.match(message.body.toString(), /served by the installed package/);
    assert.match(await c.command('QUIT'), /^\+OK/);
  } finally {
    child.kill('SIGTERM');
  }
});
