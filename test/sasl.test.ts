/**
 * AUTH (RFC 5034) on the wire: PLAIN and LOGIN with and without initial responses, "=" and
 * "*", malformed input, long continuation lines; XOAUTH2 and OAUTHBEARER end to end against a
 * Dovecot whose oauth2 passdb asks a token introspection endpoint served here; and no secret
 * in the log at debug level, in clear or in base64.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { NO_LOGIN_PENALTY, startDovecot, type Dovecot, type TestUser } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { startProxy, type TestProxy } from './support/proxy.js';

const alice: TestUser = { name: 'alice', password: 'Al1ce-sasl-pw' };
const bob: TestUser = { name: 'bob', password: 'B0b-sasl-pw' };
/** A password so long that its PLAIN response is a line of about 4000 octets. */
const longpw: TestUser = { name: 'longpw', password: `L${'0123456789abcdef'.repeat(186)}x` };
/** For the log test only: distinctive, and never used anywhere else. */
const secretive: TestUser = { name: 'secretive', password: 'Zq9-UNIQUE-pass-7Wm' };

/** Tokens the introspection endpoint accepts, and for whom. */
const TOKENS = new Map<string, string>([
  ['tok-alice-good-5d1c', 'alice'],
  ['tok-bob-good-88e0', 'bob'],
  ['tok-secretive-good-Qv3Xn', 'secretive'],
  [`tok-long-${'Ab9_'.repeat(750)}`, 'alice'],
]);
const LONG_TOKEN = [...TOKENS.keys()].find((t) => t.startsWith('tok-long-'))!;

let dovecot: Dovecot;
let proxy: TestProxy;
let introspection: http.Server;
/** Every token the introspection endpoint was asked about. */
const introspected: string[] = [];
let work: string;

before(async () => {
  introspection = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      const token = new URLSearchParams(body).get('token') ?? '';
      introspected.push(token);
      const username = TOKENS.get(token);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(username ? { active: true, username } : { active: false }));
    });
  });
  await new Promise<void>((r) => introspection.listen(0, '127.0.0.1', r));
  work = await mkdtemp(join(os.tmpdir(), 'pop3-sasl-'));
  const oauthConf = join(work, 'dovecot-oauth2.conf.ext');
  await writeFile(
    oauthConf,
    [
      'introspection_mode = post',
      `introspection_url = http://127.0.0.1:${(introspection.address() as AddressInfo).port}/introspect`,
      'force_introspection = yes',
      'username_attribute = username',
      'active_attribute = active',
      'active_value = true',
      '',
    ].join('\n'),
  );
  dovecot = await startDovecot({
    users: [alice, bob, longpw, secretive],
    extraConfig: [
      'auth_mechanisms = plain login xoauth2 oauthbearer',
      'passdb {',
      '  driver = oauth2',
      '  mechanisms = xoauth2 oauthbearer',
      `  args = ${oauthConf}`,
      '}',
      // Failed logins are part of these tests.
      NO_LOGIN_PENALTY,
    ].join('\n'),
  });
  for (const u of [alice, bob, longpw, secretive]) {
    await dovecot.deliver(u.name, `Subject: for ${u.name}\r\nMessage-ID: <${u.name}@sasl>\r\n\r\nHello ${u.name}.\r\n`);
  }
  proxy = await startProxy({ imapPort: dovecot.imapPort, logLevel: 'debug', backendTimeoutMs: 20_000 });
}, { timeout: 120_000 });

after(async () => {
  await proxy?.close();
  await dovecot?.stop();
  await new Promise<void>((r) => (introspection ? introspection.close(() => r()) : r()));
  if (work) await rm(work, { recursive: true, force: true });
}, { timeout: 60_000 });

const b64 = (s: string | Buffer) => (typeof s === 'string' ? Buffer.from(s, 'utf8') : s).toString('base64');
const plain = (u: TestUser, authzid = '') => b64(`${authzid}\0${u.name}\0${u.password}`);
const xoauth2 = (user: string, token: string) => b64(`user=${user}\x01auth=Bearer ${token}\x01\x01`);
const oauthbearer = (user: string, token: string) => b64(`n,a=${user},\x01auth=Bearer ${token}\x01\x01`);
/** A SASL continuation request: "+", a space, and a (possibly empty) base64 challenge. */
const CONTINUATION = /^\+ [A-Za-z0-9+/=]*$/;
const LOGIN_TIMEOUT = 30_000;

async function connect(): Promise<RawPop3> {
  return RawPop3.connect(proxy.port);
}

/** Asserts the session is logged in (STAT answers) and ends it with QUIT. */
async function assertLoggedInAndQuit(c: RawPop3, what: string): Promise<void> {
  assert.match(await c.command('STAT'), /^\+OK 1 \d+$/, `${what}: STAT after AUTH`);
  const retr = await c.multiline('RETR 1');
  assert.match(retr.status, /^\+OK/);
  assert.match(retr.body.toString('latin1'), /^Subject: for /);
  assert.match(await c.command('QUIT'), /^\+OK/);
  await c.waitClose();
}

/** Asserts the session is still in AUTHORIZATION and can log in with USER/PASS. */
async function assertStillAuthorization(c: RawPop3, u: TestUser = alice): Promise<void> {
  assert.match(await c.command('STAT'), /^-ERR/, 'not logged in');
  assert.match(await c.command(`USER ${u.name}`), /^\+OK/);
  assert.match(await c.command(`PASS ${u.password}`, LOGIN_TIMEOUT), /^\+OK/);
  assert.match(await c.command('QUIT'), /^\+OK/);
  await c.waitClose();
}

async function capa(c: RawPop3): Promise<string[]> {
  assert.match(await c.command('CAPA'), /^\+OK/);
  return (await c.readMultiline()).toString('latin1').split('\r\n').filter((l) => l.length > 0);
}

/**
 * Reads the final reply of a failed OAuth exchange. A server may first send an error challenge
 * (RFC 7628 section 3.2.2); the client then answers with the dummy response, and gets -ERR.
 */
async function oauthOutcome(c: RawPop3, mechanism: 'XOAUTH2' | 'OAUTHBEARER', first: string): Promise<string> {
  if (!first.startsWith('+')) return first;
  assert.match(first, CONTINUATION, `${mechanism} error challenge`);
  c.send(mechanism === 'OAUTHBEARER' ? b64('\x01') : '');
  return c.readLine(LOGIN_TIMEOUT);
}

// ---------------------------------------------------------------------------------------------
// What is offered

test('CAPA lists SASL with PLAIN and LOGIN, and AUTH-RESP-CODE; AUTH alone lists the same mechanisms', { timeout: 120_000 }, async () => {
  const c = await connect();
  const caps = await capa(c);
  const sasl = caps.find((l) => /^SASL /i.test(l));
  assert.ok(sasl, `no SASL line in ${caps.join(' | ')}`);
  const offered = sasl.split(' ').slice(1).map((m) => m.toUpperCase());
  for (const m of ['PLAIN', 'LOGIN']) assert.ok(offered.includes(m), `SASL line: ${sasl}`);
  assert.ok(caps.some((l) => l.toUpperCase() === 'AUTH-RESP-CODE'), `CAPA: ${caps.join(' | ')}`);
  assert.ok(caps.some((l) => l.toUpperCase() === 'RESP-CODES'), `CAPA: ${caps.join(' | ')}`);

  const status = await c.command('AUTH');
  assert.match(status, /^\+OK/);
  const listed = (await c.readMultiline()).toString('latin1').split('\r\n').filter((l) => l.length > 0).map((m) => m.toUpperCase());
  assert.deepEqual([...listed].sort(), [...offered].sort(), 'AUTH lists what CAPA offers');
  // Still in AUTHORIZATION, nothing else queued.
  await assertStillAuthorization(c);
});

// ---------------------------------------------------------------------------------------------
// PLAIN

test('AUTH PLAIN with an initial response logs in; the session works as after USER/PASS', { timeout: 120_000 }, async () => {
  const c = await connect();
  assert.match(await c.command(`AUTH PLAIN ${plain(alice)}`, LOGIN_TIMEOUT), /^\+OK/);
  await assertLoggedInAndQuit(c, 'PLAIN with initial response');
});

test('AUTH PLAIN without an initial response: "+ " then the response', { timeout: 120_000 }, async () => {
  const c = await connect();
  assert.match(await c.command('AUTH PLAIN'), CONTINUATION);
  assert.match(await c.command(plain(alice), LOGIN_TIMEOUT), /^\+OK/);
  await assertLoggedInAndQuit(c, 'PLAIN after a continuation');
});

test('AUTH PLAIN = (an empty initial response): the server asks with "+ "', { timeout: 120_000 }, async () => {
  const c = await connect();
  assert.match(await c.command('AUTH PLAIN ='), CONTINUATION);
  assert.match(await c.command(plain(alice), LOGIN_TIMEOUT), /^\+OK/);
  await assertLoggedInAndQuit(c, 'PLAIN after =');
});

test('AUTH PLAIN with the mechanism name in lower case', { timeout: 120_000 }, async () => {
  const c = await connect();
  assert.match(await c.command(`AUTH plain ${plain(alice)}`, LOGIN_TIMEOUT), /^\+OK/);
  await assertLoggedInAndQuit(c, 'lower-case mechanism');
});

// ---------------------------------------------------------------------------------------------
// LOGIN

test('AUTH LOGIN: two "+ " prompts, user name then password', { timeout: 120_000 }, async () => {
  const c = await connect();
  assert.match(await c.command('AUTH LOGIN'), CONTINUATION);
  assert.match(await c.command(b64(alice.name)), CONTINUATION);
  assert.match(await c.command(b64(alice.password), LOGIN_TIMEOUT), /^\+OK/);
  await assertLoggedInAndQuit(c, 'LOGIN');
});

test('AUTH LOGIN with the user name as initial response: one prompt for the password', { timeout: 120_000 }, async () => {
  const c = await connect();
  assert.match(await c.command(`AUTH LOGIN ${b64(alice.name)}`), CONTINUATION);
  assert.match(await c.command(b64(alice.password), LOGIN_TIMEOUT), /^\+OK/);
  await assertLoggedInAndQuit(c, 'LOGIN with initial response');
});

// ---------------------------------------------------------------------------------------------
// Refusals; the session stays in AUTHORIZATION

test('"*" cancels an exchange with -ERR; the session stays in AUTHORIZATION', { timeout: 120_000 }, async () => {
  const c = await connect();
  assert.match(await c.command('AUTH PLAIN'), CONTINUATION);
  assert.match(await c.command('*'), /^-ERR/);
  assert.match(await c.command('AUTH LOGIN'), CONTINUATION);
  assert.match(await c.command(b64(alice.name)), CONTINUATION);
  assert.match(await c.command('*'), /^-ERR/);
  await assertStillAuthorization(c);
});

test('bad base64 is refused, in the initial response and in a continuation', { timeout: 120_000 }, async () => {
  const c = await connect();
  assert.match(await c.command('AUTH PLAIN %%%not-base64%%%'), /^-ERR/);
  assert.match(await c.command('AUTH PLAIN'), CONTINUATION);
  assert.match(await c.command('!!!!'), /^-ERR/);
  assert.match(await c.command('AUTH LOGIN'), CONTINUATION);
  assert.match(await c.command('dXNlcg=x'), /^-ERR/);
  await assertStillAuthorization(c);
});

test('a wrong password gets -ERR [AUTH], with PLAIN and with LOGIN', { timeout: 120_000 }, async () => {
  const c = await connect();
  assert.match(await c.command(`AUTH PLAIN ${plain({ name: alice.name, password: 'not-her-password' })}`, LOGIN_TIMEOUT), /^-ERR \[AUTH\] /);
  assert.match(await c.command('AUTH LOGIN'), CONTINUATION);
  assert.match(await c.command(b64(alice.name)), CONTINUATION);
  assert.match(await c.command(b64('still-not-her-password'), LOGIN_TIMEOUT), /^-ERR \[AUTH\] /);
  assert.match(await c.command(`AUTH PLAIN ${plain({ name: 'nobody-here', password: 'x' })}`, LOGIN_TIMEOUT), /^-ERR \[AUTH\] /);
  await assertStillAuthorization(c);
});

test('a PLAIN response that is not three fields is refused', { timeout: 120_000 }, async () => {
  const c = await connect();
  assert.match(await c.command(`AUTH PLAIN ${b64(`${alice.name}\0${alice.password}`)}`, LOGIN_TIMEOUT), /^-ERR/);
  assert.match(await c.command(`AUTH PLAIN ${b64(`\0${alice.name}`)}`, LOGIN_TIMEOUT), /^-ERR/);
  assert.match(await c.command(`AUTH PLAIN ${b64(`\0\0${alice.password}`)}`, LOGIN_TIMEOUT), /^-ERR/);
  await assertStillAuthorization(c);
});

test('an unknown or unsupported mechanism is refused', { timeout: 120_000 }, async () => {
  const c = await connect();
  assert.match(await c.command('AUTH FOOBAR'), /^-ERR/);
  assert.match(await c.command('AUTH CRAM-MD5'), /^-ERR/);
  assert.match(await c.command('AUTH SCRAM-SHA-256 biwsbj1hbGljZSxyPW5vbmNl'), /^-ERR/);
  await assertStillAuthorization(c);
});

test('an authorization identity other than the user is refused; the same one is fine', { timeout: 120_000 }, async () => {
  const c = await connect();
  const reply = await c.command(`AUTH PLAIN ${plain(alice, bob.name)}`, LOGIN_TIMEOUT);
  assert.match(reply, /^-ERR/, 'authzid bob for authcid alice');
  assert.match(await c.command('STAT'), /^-ERR/, 'not logged in as anybody');
  assert.match(await c.command(`AUTH PLAIN ${plain(alice, alice.name)}`, LOGIN_TIMEOUT), /^\+OK/, 'authzid equal to authcid');
  await assertLoggedInAndQuit(c, 'authzid = authcid');
});

test('AUTH after logging in is refused', { timeout: 120_000 }, async () => {
  const c = await connect();
  assert.match(await c.command(`AUTH PLAIN ${plain(alice)}`, LOGIN_TIMEOUT), /^\+OK/);
  assert.match(await c.command(`AUTH PLAIN ${plain(alice)}`), /^-ERR/);
  await assertLoggedInAndQuit(c, 'second AUTH');
});

test('a long continuation line (about 4000 octets) is accepted during AUTH', { timeout: 120_000 }, async () => {
  const response = plain(longpw);
  assert.ok(response.length > 3900, `response length ${response.length}`);
  const c = await connect();
  assert.match(await c.command('AUTH PLAIN'), CONTINUATION);
  const reply = await c.command(response, LOGIN_TIMEOUT);
  assert.doesNotMatch(reply, /too long/i);
  assert.match(reply, /^\+OK/, reply);
  await assertLoggedInAndQuit(c, 'long PLAIN response');
  // Outside an exchange, the command line limit still holds.
  const d = await connect();
  const long = await d.command(`NOOP ${'x'.repeat(4000)}`);
  assert.match(long, /^-ERR/);
  assert.match(await d.command('CAPA'), /^\+OK/, 'the session goes on after an overlong line');
  await d.readMultiline();
  d.destroy();
});

// ---------------------------------------------------------------------------------------------
// OAuth 2.0 bearer tokens

test('XOAUTH2 with a token Dovecot accepts logs in; a bad token gets -ERR [AUTH]', { timeout: 120_000 }, async () => {
  const c = await connect();
  assert.match(await c.command(`AUTH XOAUTH2 ${xoauth2('alice', 'tok-alice-good-5d1c')}`, LOGIN_TIMEOUT), /^\+OK/);
  await assertLoggedInAndQuit(c, 'XOAUTH2');
  assert.ok(introspected.includes('tok-alice-good-5d1c'), 'Dovecot asked about the token');

  const bad = await connect();
  const first = await bad.command(`AUTH XOAUTH2 ${xoauth2('alice', 'tok-bad-7c2e')}`, LOGIN_TIMEOUT);
  assert.match(await oauthOutcome(bad, 'XOAUTH2', first), /^-ERR \[AUTH\] /);
  assert.ok(introspected.includes('tok-bad-7c2e'), 'the bad token reached Dovecot');
  // A token of another user.
  const other = await oauthOutcome(bad, 'XOAUTH2', await bad.command(`AUTH XOAUTH2 ${xoauth2('alice', 'tok-bob-good-88e0')}`, LOGIN_TIMEOUT));
  assert.match(other, /^-ERR \[AUTH\] /);
  await assertStillAuthorization(bad);
});

test('OAUTHBEARER with a token Dovecot accepts logs in; a bad token gets -ERR [AUTH]', { timeout: 120_000 }, async () => {
  const c = await connect();
  assert.match(await c.command(`AUTH OAUTHBEARER ${oauthbearer('bob', 'tok-bob-good-88e0')}`, LOGIN_TIMEOUT), /^\+OK/);
  await assertLoggedInAndQuit(c, 'OAUTHBEARER');

  const bad = await connect();
  const first = await bad.command(`AUTH OAUTHBEARER ${oauthbearer('bob', 'tok-bad-1f9a')}`, LOGIN_TIMEOUT);
  assert.match(await oauthOutcome(bad, 'OAUTHBEARER', first), /^-ERR \[AUTH\] /);
  assert.ok(introspected.includes('tok-bad-1f9a'), 'the bad token reached Dovecot');
  await assertStillAuthorization(bad, bob);
});

test('XOAUTH2 with a 3000-octet token sent as a continuation line', { timeout: 120_000 }, async () => {
  const response = xoauth2('alice', LONG_TOKEN);
  assert.ok(response.length > 4000);
  const c = await connect();
  assert.match(await c.command('AUTH XOAUTH2'), CONTINUATION);
  const reply = await c.command(response, LOGIN_TIMEOUT);
  assert.doesNotMatch(reply, /too long/i);
  assert.match(reply, /^\+OK/, reply);
  await assertLoggedInAndQuit(c, 'long XOAUTH2 token');
});

test('malformed OAuth responses are refused and no token is looked up', { timeout: 120_000 }, async () => {
  const c = await connect();
  const asked = introspected.length;
  for (const [mechanism, response] of [
    ['XOAUTH2', b64('user=alice')],
    ['XOAUTH2', b64('auth=Bearer tok-x\x01\x01')],
    ['XOAUTH2', b64('\x01\x01\x01')],
    ['OAUTHBEARER', b64('n,,\x01\x01')],
    ['OAUTHBEARER', b64('garbage')],
  ] as const) {
    const first = await c.command(`AUTH ${mechanism} ${response}`, LOGIN_TIMEOUT);
    assert.match(await oauthOutcome(c, mechanism, first), /^-ERR/, `${mechanism} ${response}`);
  }
  assert.equal(introspected.length, asked, 'no token was asked about');
  await assertStillAuthorization(c);
});

// ---------------------------------------------------------------------------------------------
// No secrets in the log

test('no password or token reaches the log at debug level, in clear or in base64', { timeout: 120_000 }, async () => {
  const p = await startProxy({ imapPort: dovecot.imapPort, logLevel: 'debug', backendTimeoutMs: 20_000 });
  const wrong = 'Wr0ng-UNIQUE-guess-Kp4';
  const badToken = 'tok-UNIQUE-bad-Hh2Lq';
  const goodToken = 'tok-secretive-good-Qv3Xn';
  const secrets = [secretive.password, wrong, badToken, goodToken];
  const sent: string[] = [];
  const send = async (c: RawPop3, line: string, timeout = LOGIN_TIMEOUT) => {
    sent.push(line);
    return c.command(line, timeout);
  };
  try {
    const run = async (steps: (c: RawPop3) => Promise<void>) => {
      const c = await RawPop3.connect(p.port);
      await steps(c);
      c.destroy();
      await new Promise((r) => setTimeout(r, 50));
    };
    const quit = async (c: RawPop3) => {
      assert.match(await c.command('QUIT'), /^\+OK/);
      await c.waitClose();
    };
    await run(async (c) => {
      await send(c, `USER ${secretive.name}`);
      assert.match(await send(c, `PASS ${wrong}`), /^-ERR \[AUTH\]/);
      await send(c, `USER ${secretive.name}`);
      assert.match(await send(c, `PASS ${secretive.password}`), /^\+OK/);
      await quit(c);
    });
    await run(async (c) => {
      assert.match(await send(c, `AUTH PLAIN ${plain({ name: secretive.name, password: wrong })}`), /^-ERR \[AUTH\]/);
      assert.match(await send(c, `AUTH PLAIN ${plain(secretive)}`), /^\+OK/);
      await quit(c);
    });
    await run(async (c) => {
      assert.match(await send(c, 'AUTH PLAIN'), CONTINUATION);
      assert.match(await send(c, plain(secretive)), /^\+OK/);
      await quit(c);
    });
    await run(async (c) => {
      assert.match(await send(c, `AUTH LOGIN ${b64(secretive.name)}`), CONTINUATION);
      assert.match(await send(c, b64(wrong)), /^-ERR \[AUTH\]/);
      assert.match(await send(c, 'AUTH LOGIN'), CONTINUATION);
      assert.match(await send(c, b64(secretive.name)), CONTINUATION);
      assert.match(await send(c, b64(secretive.password)), /^\+OK/);
      await quit(c);
    });
    await run(async (c) => {
      const first = await send(c, `AUTH XOAUTH2 ${xoauth2(secretive.name, badToken)}`);
      assert.match(await oauthOutcome(c, 'XOAUTH2', first), /^-ERR \[AUTH\]/);
      assert.match(await send(c, `AUTH XOAUTH2 ${xoauth2(secretive.name, goodToken)}`), /^\+OK/);
      await quit(c);
    });
    await run(async (c) => {
      const first = await send(c, `AUTH OAUTHBEARER ${oauthbearer(secretive.name, badToken)}`);
      assert.match(await oauthOutcome(c, 'OAUTHBEARER', first), /^-ERR \[AUTH\]/);
      assert.match(await send(c, 'AUTH OAUTHBEARER'), CONTINUATION);
      assert.match(await send(c, oauthbearer(secretive.name, goodToken)), /^\+OK/);
      await quit(c);
    });
    // An exchange cut off half-way, with the secret already sent.
    await run(async (c) => {
      assert.match(await send(c, 'AUTH LOGIN'), CONTINUATION);
      assert.match(await send(c, b64(secretive.name)), CONTINUATION);
      c.send(b64(secretive.password).slice(0, 12));
    });
  } finally {
    await p.close();
  }
  const log = p.log();
  assert.match(log, /secretive/, 'the log is about these sessions');
  const forbidden = new Set<string>();
  for (const s of secrets) {
    forbidden.add(s);
    forbidden.add(b64(s));
  }
  // Every SASL response line that carried a secret, whole.
  for (const line of sent) {
    const response = line.startsWith('AUTH ') ? line.split(' ')[2] : /^[A-Za-z0-9+/=]{8,}$/.test(line) ? line : undefined;
    if (response !== undefined && response !== b64(secretive.name)) forbidden.add(response);
  }
  for (const f of forbidden) assert.equal(log.includes(f), false, `the log contains ${JSON.stringify(f.slice(0, 40))}`);
  // Parts of secrets too (a password split across log fields, a base64 shifted by one byte).
  for (const s of secrets) {
    assert.equal(log.includes(s.slice(0, 10)), false, `the log contains the start of ${JSON.stringify(s)}`);
    assert.equal(log.includes(s.slice(-10)), false, `the log contains the end of ${JSON.stringify(s)}`);
  }
});
