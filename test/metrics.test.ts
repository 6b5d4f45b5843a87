/**
 * The operations endpoint seen from a scraper: counters that follow a real session, /healthz,
 * and /readyz following the backend.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startDovecot, type Dovecot } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { startProxy, type TestProxy } from './support/proxy.js';

let dovecot: Dovecot;
let proxy: TestProxy;

before(async () => {
  dovecot = await startDovecot();
  for (let n = 1; n <= 3; n++) await dovecot.deliver('alice', `Subject: m${n}\n\n${'x'.repeat(100 * n)}\n`);
  proxy = await startProxy({ imapPort: dovecot.imapPort, logLevel: 'info', metrics: true });
}, { timeout: 120_000 });

after(async () => {
  await proxy?.close();
  await dovecot?.stop();
}, { timeout: 60_000 });

async function get(path: string): Promise<{ status: number; body: string }> {
  const response = await fetch(`http://127.0.0.1:${proxy.server.metricsAddress!.port}${path}`);
  return { status: response.status, body: await response.text() };
}

/** The value of one series in Prometheus text format. */
function value(metrics: string, series: string): number {
  const line = metrics.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

test('/metrics follows a real session: logins, commands, retrieved bytes, deletes, expunges, backend latency', { timeout: 120_000 }, async () => {
  const bad = await RawPop3.connect(proxy.port);
  await bad.command('USER alice');
  assert.match(await bad.command('PASS wrong', 30_000), /^-ERR \[AUTH\]/);
  bad.destroy();
  const c = await RawPop3.connect(proxy.port);
  await c.command('USER alice');
  assert.match(await c.command('PASS alice-secret', 30_000), /^\+OK/);
  const first = await c.multiline('RETR 1');
  const second = await c.multiline('RETR 2');
  assert.match(await c.command('DELE 1'), /^\+OK/);
  assert.match(await c.command('QUIT'), /^\+OK/);
  await c.waitClose();

  const { status, body } = await get('/metrics');
  assert.equal(status, 200);
  process.stdout.write(`metrics sample:\n${body.split('\n').filter((l) => l.startsWith('pop3proxy_') && !l.startsWith('pop3proxy_process') && !l.startsWith('pop3proxy_nodejs')).join('\n')}\n`);
  assert.equal(value(body, 'pop3proxy_logins_total{outcome="ok"}'), 1);
  assert.equal(value(body, 'pop3proxy_logins_total{outcome="auth"}'), 1);
  assert.equal(value(body, 'pop3proxy_commands_total{command="RETR"}'), 2);
  assert.equal(value(body, 'pop3proxy_messages_retrieved_total'), 2);
  assert.equal(value(body, 'pop3proxy_bytes_retrieved_total'), first.body.length + second.body.length);
  assert.equal(value(body, 'pop3proxy_deletes_total'), 1);
  assert.equal(value(body, 'pop3proxy_expunged_total'), 1);
  assert.equal(value(body, 'pop3proxy_sessions_total{reason="quit"}'), 1);
  assert.ok(value(body, 'pop3proxy_backend_command_seconds_count{step="login"}') >= 2);
  assert.ok(value(body, 'pop3proxy_lock_wait_seconds_count') >= 1);
  assert.ok(value(body, 'pop3proxy_process_resident_memory_bytes') > 0);
});

test('/healthz answers while the process runs; /readyz follows the backend', { timeout: 120_000 }, async () => {
  assert.deepEqual(await get('/healthz'), { status: 200, body: 'ok\n' });
  assert.equal((await get('/readyz')).status, 200);
  const unreachable = await startProxy({ imapPort: 1, metrics: true });
  try {
    const response = await fetch(`http://127.0.0.1:${unreachable.server.metricsAddress!.port}/readyz`);
    assert.equal(response.status, 503);
    assert.match(await response.text(), /backend not reachable/);
  } finally {
    await unreachable.close();
  }
  assert.equal((await get('/nothing')).status, 404);
});
