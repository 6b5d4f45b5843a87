/**
 * SMTP submission when things go wrong or the client is not where it seems, against the real
 * Postfix + Dovecot of smtp-world.ts: the proxy's process SIGKILLed in the middle of DATA (the
 * real CLI), STARTTLS and implicit TLS with the plaintext rule for remote clients, the PROXY
 * protocol from a real HAProxy, and the failed-login throttle shared with POP3. Clients are
 * real: curl, msmtp, swaks and Python's smtplib.
 *
 * A "remote" client is one HAProxy announces with an address of TEST-NET-3 (203.0.113.0/24):
 * every packet stays on loopback, and only the PROXY header names that address.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, beforeEach, test } from 'node:test';
import { stringify as toYaml } from 'yaml';
import { startCli, type CliProcess } from './support/cli-process.js';
import { mimeMessage } from './support/corpus.js';
import { startHaproxy, type HAProxy } from './support/haproxy.js';
import { RawPop3 } from './support/pop3-client.js';
import { cannotRunPostfix } from './support/postfix.js';
import { freePort, sleep } from './support/private-server.js';
import type { TestProxy } from './support/proxy.js';
import { alice, bob, LOCAL, startSmtpWorld, type SmtpWorld } from './support/smtp-world.js';
import { assertDelivered, crlf, curlSmtp, msmtp, swaks, testMessage } from './support/smtp-tools.js';
import { smtplibAuthAttempts, smtplibSession, stepReply } from './support/smtplib-client.js';

const TEST = { timeout: 180_000 };
const HOOK = { timeout: 180_000 };
const skip = cannotRunPostfix();
const REMOTE = '203.0.113.25';
const REMOTE_TLS = '203.0.113.26';

let world: SmtpWorld;
/** SMTP with STARTTLS, behind HAProxy; and the implicit-TLS port, behind HAProxy too. */
let starttls: TestProxy;
let implicit: TestProxy;
let haproxy: HAProxy;
const clis = new Set<CliProcess>();

before(async () => {
  if (skip) return;
  world = await startSmtpWorld();
  const tls = { certFile: world.certs.server.chainFile, keyFile: world.certs.server.keyFile };
  // The throttle as shipped (8 s at most), so that its delays can be measured.
  const limits = { authFailDelayMs: 8000, maxAuthFailures: 3 };
  starttls = await world.proxy({ tls, proxyProtocol: true, limits });
  implicit = await world.proxy({ tls, proxyProtocol: true, limits, smtp: { implicitTls: true } });
  haproxy = await startHaproxy([
    { name: 'remote', target: starttls.smtpPort!, proxy: 'v1', source: REMOTE },
    { name: 'remote_tls', target: implicit.smtpPort!, proxy: 'v2', source: REMOTE_TLS },
    { name: 'v1', target: starttls.smtpPort!, proxy: 'v1' },
    { name: 'v2', target: starttls.smtpPort!, proxy: 'v2' },
    { name: 'tls_v2', target: implicit.smtpPort!, proxy: 'v2' },
  ]);
}, HOOK);

after(async () => {
  for (const cli of clis) await cli.kill().catch(() => undefined);
  await haproxy?.stop();
  await starttls?.close();
  await implicit?.close();
  await world?.close();
}, HOOK);

beforeEach(async () => {
  if (!skip) await world.emptyMailboxes();
}, HOOK);

/**
 * The real CLI with the world's profiles, routes and users file (alice and bob are the default
 * profile's: password grant), relaying to the Postfix with STARTTLS verified against the test CA.
 */
async function cli(smtpPort: number, extra: string[] = []): Promise<CliProcess> {
  const config = await world.file('config.yaml', toYaml({ 'users-file': world.usersFile, profiles: world.profiles, routes: world.routes }));
  const p = await startCli([
    '--config', config,
    '--imap-host', '127.0.0.1', '--imap-port', String(world.dovecot.imapPort), '--imap-tls', 'none', '--host', '127.0.0.1', '--port', '0',
    '--smtp-port', String(smtpPort), '--smtp-relay-host', '127.0.0.1', '--smtp-relay-port', String(world.postfix.port), '--smtp-relay-tls', 'starttls',
    '--smtp-relay-ca', world.certs.ca.certFile, '--smtp-relay-servername', 'localhost', '--log-level', 'info', ...extra,
  ]);
  clis.add(p);
  return p;
}

test('the proxy SIGKILLed in the middle of DATA: curl gets no 250, the relay none of the message; resubmitted after a restart, it is delivered exactly once', { ...TEST, skip }, async () => {
  const port = await freePort();
  const first = await cli(port);
  const sent = crlf(mimeMessage(4, 1_000_000));
  const job = { port, user: alice.name, secret: alice.password, from: 'alice@example.test', to: 'bob@example.test', message: sent };
  const logAt = world.postfix.log().length;
  // 40 KB/s: the message is still arriving when the process dies.
  const slow = curlSmtp(job, world.work, ['--limit-rate', '40k']);
  for (let i = 0; i < 200 && !/Logged in for sending/.test(first.output()); i++) await sleep(50);
  await sleep(2000);
  await first.kill();
  const cut = await slow;
  assert.notEqual(cut.code, 0, 'curl saw the submission fail');
  assert.match(cut.out, /< 354 /, 'DATA had begun');
  assert.doesNotMatch(cut.out.slice(cut.out.indexOf('< 354 ')), /< 250 /, 'no 250 after DATA');
  let lost: string | undefined;
  for (let i = 0; i < 100 && lost === undefined; i++, await sleep(100)) lost = /lost connection after DATA \((\d+) bytes\)/.exec(world.postfix.log().slice(logAt))?.[1];
  assert.ok(lost !== undefined && Number(lost) > 0 && Number(lost) < sent.length, `the relay lost the connection in DATA after ${lost} of ${sent.length} octets`);
  await world.nothingArrived(bob);

  const second = await cli(port);
  const again = await curlSmtp(job, world.work);
  assert.equal(again.code, 0, again.out);
  assert.match(again.out, /< 250 2\.0\.0 Ok: queued as /);
  const inbox = await world.arrived(bob);
  await sleep(2000);
  assert.equal((await world.stored(bob)).length, 1, 'delivered exactly once');
  assertDelivered(inbox[0]!, sent);
  const lastLines = cut.out.trim().split('\n').filter((l) => /^[<*]|^curl:/.test(l)).slice(-3).map((l) => l.trim());
  process.stdout.write(`# killed after ${lost} octets of ${sent.length} had reached the relay; curl exit ${cut.code}: ${JSON.stringify(lastLines)}\n`);
  await second.kill();
});

test('STARTTLS: offered in EHLO; a remote client\'s AUTH before it gets 538 5.7.11 (smtplib, swaks, msmtp), after it 235 (msmtp); byte for byte', { ...TEST, skip }, async () => {
  const port = haproxy.port('remote');
  const logAt = world.postfix.log().length;
  const message = testMessage('over starttls', 'alice@example.test');
  const plain = await smtplibSession({ port, user: alice.name, password: alice.password, from: 'alice@example.test', to: ['bob@example.test'], message });
  assert.match(stepReply(plain, 'ehlo')!, /STARTTLS/);
  assert.match(stepReply(plain, 'auth')!, /^538 5\.7\.11 Encryption required: use STARTTLS or the TLS port$/);
  const bySwaks = await swaks({ port, user: alice.name, secret: alice.password, from: 'alice@example.test', to: 'bob@example.test', message }, world.work);
  assert.match(bySwaks.out, /<\*\* +538 5\.7\.11 /);
  const byMsmtp = await msmtp({ port, user: alice.name, secret: alice.password, from: 'alice@example.test', to: 'bob@example.test', message });
  assert.notEqual(byMsmtp.code, 0);
  assert.match(byMsmtp.out, /<-- 538 5\.7\.11 /);
  await world.nothingArrived(bob, 500);
  assert.doesNotMatch(world.postfix.log().slice(logAt), /connect from/, 'the refused password never reached the relay');

  const secure = await msmtp({ port, user: alice.name, secret: alice.password, from: 'alice@example.test', to: 'bob@example.test', message, tls: 'starttls', caFile: world.certs.ca.certFile });
  assert.equal(secure.code, 0, secure.out);
  assert.match(secure.out, /<-- 220 2\.0\.0 /);
  assert.match(secure.out, /<-- 235 2\.7\.0 /);
  assertDelivered((await world.arrived(bob))[0]!, message);
  assert.match(starttls.log(), new RegExp(`client=${REMOTE.replace(/\./g, '\\.')}:\\d+.*Logged in for sending|Logged in for sending.*client=${REMOTE.replace(/\./g, '\\.')}`));
});

/** msmtp and smtplib (SMTP_SSL) each submit one message over the implicit-TLS port; their replies. */
async function overImplicitTls(port: number, label: string) {
  const one = testMessage(`${label} msmtp`, 'alice@example.test');
  const byMsmtp = await msmtp({ port, user: alice.name, secret: alice.password, from: 'alice@example.test', to: 'bob@example.test', message: one, tls: 'implicit', caFile: world.certs.ca.certFile });
  const two = testMessage(`${label} smtplib`, 'alice@example.test');
  const bySmtplib = await smtplibSession({ port, implicitTls: true, caFile: world.certs.ca.certFile, user: alice.name, password: alice.password, from: 'alice@example.test', to: ['bob@example.test'], message: two });
  return { one, two, byMsmtp, bySmtplib };
}

test('implicit TLS from a loopback client: msmtp and smtplib (SMTP_SSL) submit over it, byte for byte', { ...TEST, skip }, async () => {
  const { one, two, byMsmtp, bySmtplib } = await overImplicitTls(haproxy.port('tls_v2'), 'implicit');
  assert.equal(byMsmtp.code, 0, byMsmtp.out);
  assert.match(byMsmtp.out, /TLS session parameters:[\s\S]*<-- 220 [\s\S]*<-- 235 2\.7\.0 /, 'TLS from the first byte');
  assert.match(stepReply(bySmtplib, 'auth')!, /^235 /);
  assert.match(stepReply(bySmtplib, 'data')!, /^250 /);
  const inbox = await world.arrived(bob, 2);
  assertDelivered(inbox[0]!, one);
  assertDelivered(inbox[1]!, two);
});

// smtp-server takes `secure` from its server options, never from the socket: on --smtp-tls-port
// every session once counted as plaintext (538 5.7.11 for remote clients, STARTTLS inside TLS).
test('implicit TLS from a remote client: the connection is encrypted, so AUTH is taken and STARTTLS is not offered again', { ...TEST, skip }, async () => {
  const { one, byMsmtp, bySmtplib } = await overImplicitTls(haproxy.port('remote_tls'), 'remote implicit');
  assert.doesNotMatch(stepReply(bySmtplib, 'ehlo')!, /STARTTLS/, 'no STARTTLS inside TLS');
  assert.match(stepReply(bySmtplib, 'auth')!, /^235 /);
  assert.equal(byMsmtp.code, 0, byMsmtp.out);
  assertDelivered((await world.arrived(bob, 2))[0]!, one);
  assert.match(implicit.log(), new RegExp(`client=${REMOTE_TLS.replace(/\./g, '\\.')}:\\d+ Logged in for sending`));
});

test('the PROXY protocol (v1, v2) from HAProxy: the proxy logs and throttles the announced client address, not the balancer\'s', { ...TEST, skip }, async () => {
  const message = testMessage('behind haproxy', 'alice@example.test');
  for (const [frontend, source] of [['v1', '127.0.0.2'], ['v2', '127.0.0.3']] as const) {
    const report = await smtplibSession({ port: haproxy.port(frontend), sourceAddress: source, user: alice.name, password: alice.password, from: 'alice@example.test', to: ['bob@example.test'], message });
    assert.match(stepReply(report, 'data')!, /^250 /, frontend);
    // A loopback client may log in without TLS: the announced address is loopback too.
  }
  await sleep(300);
  const ended = starttls.log().split('\n').filter((l) => /SMTP session ended/.test(l));
  for (const source of ['127.0.0.2', '127.0.0.3']) assert.ok(ended.some((l) => l.includes(`client=${source}:`)), `a session of ${source}: ${ended.join('\n')}`);
  assert.equal((await world.arrived(bob, 2)).length, 2);

  // Three failures from one announced address, then one from another: each address has its own count.
  // Local users: the relay is not asked, so the delays are the proxy's alone.
  const wrong = { user: LOCAL.erp.login, password: 'wrong' };
  const a = await smtplibAuthAttempts({ port: haproxy.port('v2'), sourceAddress: '127.0.0.4', attempts: [wrong, wrong, wrong] });
  const b = await smtplibAuthAttempts({ port: haproxy.port('v2'), sourceAddress: '127.0.0.5', attempts: [wrong] });
  process.stdout.write(`# failed-login delays behind HAProxy: 127.0.0.4 ${a.replies.map((x) => x.ms).join(', ')} ms; 127.0.0.5 ${b.replies.map((x) => x.ms).join(', ')} ms\n`);
  assert.deepEqual([...a.replies, ...b.replies].map((x) => x.code), [535, 535, 535, 535]);
  assert.ok(a.replies[2]!.ms > a.replies[0]!.ms + 400, 'the failures of 127.0.0.4 waited longer each time');
  assert.ok(b.replies[0]!.ms < a.replies[2]!.ms - 400, 'the first failure of 127.0.0.5 is not counted with 127.0.0.4\'s (nor with the balancer\'s 127.0.0.1)');
  assert.match(starttls.log(), /Login failed.*client=127\.0\.0\.4:|client=127\.0\.0\.4:\d+.*Login failed/);
});

test('three failed logins in a row (the real CLI, --max-auth-failures 3): 0.25, 0.5, 1 s, then the connection is closed; POP3 from that address goes on counting, another address does not', { ...TEST, skip }, async () => {
  const proc = await cli(0, ['--max-auth-failures', '3', '--auth-fail-delay', '8']);
  // Local users: the relay is not asked, so the delays are the proxy's alone.
  const wrong = { user: LOCAL.erp.login, password: 'wrong' };
  const smtp = await smtplibAuthAttempts({ port: proc.smtpPort!, sourceAddress: '127.0.0.6', attempts: [wrong, wrong, wrong, { user: LOCAL.erp.login, password: LOCAL.erp.password }] });
  const ms = smtp.replies.map((r) => r.ms);
  process.stdout.write(`# SMTP failed-login delays from 127.0.0.6: ${ms.join(', ')} ms; then ${smtp.end}\n`);
  assert.deepEqual(smtp.replies.map((r) => `${r.code} ${r.text.slice(0, 5)}`), ['535 5.7.8', '535 5.7.8', '535 5.7.8']);
  assert.equal(smtp.end, 'closed', 'the fourth AUTH never got an answer: the connection was closed');
  const expected = [250, 500, 1000];
  expected.forEach((least, i) => assert.ok(ms[i]! >= least - 20 && ms[i]! < least + 1500, `failure ${i + 1} answered after ${ms[i]} ms (${least} ms expected)`));

  // POP3 on the same address: the fourth failure, 2 s.
  const socket = net.connect({ port: proc.pop3Port, host: '127.0.0.1', localAddress: '127.0.0.6' });
  const pop = new (RawPop3 as unknown as new (socket: net.Socket) => RawPop3)(socket);
  pop.greeting = await pop.readLine();
  await pop.command(`USER ${LOCAL.erp.login}`);
  const started = performance.now();
  assert.match(await pop.command('PASS wrong', 30_000), /^-ERR \[AUTH\] /);
  const popMs = Math.round(performance.now() - started);
  pop.destroy();
  // Another address starts at 0.25 s.
  const other = await smtplibAuthAttempts({ port: proc.smtpPort!, sourceAddress: '127.0.0.7', attempts: [wrong] });
  process.stdout.write(`# POP3 failure from 127.0.0.6 after the SMTP ones: ${popMs} ms; SMTP from 127.0.0.7: ${other.replies[0]?.ms} ms\n`);
  assert.ok(popMs >= 1980 && popMs < 3500, `POP3 after three SMTP failures: ${popMs} ms (2000 expected)`);
  assert.ok(other.replies[0]!.ms < 1000, `another address: ${other.replies[0]!.ms} ms`);
  await proc.kill();
});
