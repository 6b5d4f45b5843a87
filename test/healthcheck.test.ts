/**
 * `pop3-imap-proxy healthcheck` and the status file behind it, as the container image uses them
 * (test/docker.test.ts runs them inside the image where Docker can be had): the proxy writes the
 * addresses it really listens on, the health check asks /healthz there and says why it fails.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/cli.js');
let work: string;

before(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), 'pop3-health-'));
}, { timeout: 30_000 });

after(async () => {
  if (work) await rm(work, { recursive: true, force: true });
}, { timeout: 30_000 });

function healthcheck(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [cli, 'healthcheck', ...args], { env: { PATH: process.env.PATH ?? '', ...env }, encoding: 'utf8', timeout: 20_000 });
}

/** Starts the proxy (no backend is needed until someone logs in) and waits for its status file. */
async function startProxy(statusFile: string, extra: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, [cli, '--imap-host', '127.0.0.1', '--imap-port', '1', '--imap-tls', 'none', '--host', '127.0.0.1', '--port', '0', ...extra], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  for (let i = 0; i < 200 && !existsSync(statusFile); i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(existsSync(statusFile), `the proxy wrote ${statusFile} (${stderr})`);
  return { child, exited, stderr: () => stderr };
}

test('the status file holds the addresses really listened on (port 0 included), and the health check asks /healthz there', { timeout: 120_000 }, async () => {
  const statusFile = path.join(work, 'flag.json');
  const proxy = await startProxy(statusFile, ['--metrics-host', '127.0.0.1', '--metrics-port', '0', '--status-file', statusFile]);
  try {
    const status = JSON.parse(await readFile(statusFile, 'utf8')) as { pid: number; pop3: { port: number }; metrics: { host: string; port: number } };
    assert.equal(status.pid, proxy.child.pid);
    assert.ok(status.pop3.port > 0 && status.metrics.port > 0, 'the ports the system picked, not 0');
    assert.equal(status.metrics.host, '127.0.0.1');

    const byArgument = healthcheck([statusFile]);
    assert.equal(byArgument.status, 0, byArgument.stderr);
    assert.equal(byArgument.stdout, `ok: http://127.0.0.1:${status.metrics.port}/healthz\n`);
    // As in the image: the path from the environment variable the proxy's own flag reads.
    assert.equal(healthcheck([], { POP3PROXY_STATUS_FILE: statusFile }).status, 0);
  } finally {
    proxy.child.kill('SIGTERM');
  }
  assert.equal(await proxy.exited, 0);
  assert.ok(!existsSync(statusFile), 'a clean exit removes the status file');
  const gone = healthcheck([statusFile]);
  assert.equal(gone.status, 1);
  assert.match(gone.stderr, /^pop3-imap-proxy healthcheck: cannot read .*flag\.json/);
});

test('the health check fails, saying why: no status file named, no metrics endpoint, a proxy that is gone', { timeout: 120_000 }, async () => {
  const none = healthcheck([]);
  assert.equal(none.status, 1);
  assert.match(none.stderr, /no status file: give its path, or set POP3PROXY_STATUS_FILE/);

  const statusFile = path.join(work, 'env.json');
  // The variable names the file for the proxy too (POP3PROXY_STATUS_FILE is --status-file).
  const proxy = await startProxy(statusFile, [], { POP3PROXY_STATUS_FILE: statusFile });
  try {
    const noMetrics = healthcheck([statusFile]);
    assert.equal(noMetrics.status, 1);
    assert.match(noMetrics.stderr, /serves no metrics endpoint to ask: give it --metrics-port/);
  } finally {
    proxy.child.kill('SIGKILL');
  }
  await proxy.exited;
  // Killed: the file stays behind, naming a process that is no more.
  const stale = healthcheck([statusFile]);
  assert.equal(stale.status, 1);
  assert.match(stale.stderr, /\(pid \d+\) is not running/);
});
