/**
 * AUTH (RFC 5034) over the memory store, driving Pop3Session directly: PLAIN, LOGIN, XOAUTH2
 * and OAUTHBEARER with and without an initial response, "=" for an empty one and "*" to
 * cancel, malformed and non-base64 responses, and the credentials each mechanism hands the
 * store. The long continuation lines a socket carries: pop3-connection.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { memorySession, type MemorySession } from '../support/memory-connection.js';
import { MemoryStore } from '../support/memory-maildrop.js';
import { memoryServices, type MemoryServicesOptions } from '../support/memory-proxy.js';

const T = { timeout: 30_000 };
const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
const plain = (user: string, password: string, authzid = '') => b64(`${authzid}\0${user}\0${password}`);
const xoauth2 = (user: string, token: string) => b64(`user=${user}\x01auth=Bearer ${token}\x01\x01`);
const oauthbearer = (user: string, token: string) => b64(`n,a=${user},\x01auth=Bearer ${token}\x01\x01`);
const EMPTY_CHALLENGE = '+ ';
const OK = '+OK Logged in, 1 message.';
const AUTH_FAILED = '-ERR [AUTH] Authentication failed.';

function setup(options: MemoryServicesOptions = {}) {
  const store = new MemoryStore().addUser('alice', 'pw of alice', ['tok-alice']).addUser('a,b=c', 'odd', ['tok-odd']);
  store.deliver('alice', 'Subject: hi\n\nhello\n');
  store.deliver('a,b=c', 'Subject: hi\n\nhello\n');
  const built = memoryServices({ store, ...options });
  return { ...built, s: memorySession(built.services) };
}

async function assertLoggedIn(s: MemorySession): Promise<void> {
  assert.equal(s.session.state, 'transaction');
  assert.match(await s.line('STAT'), /^\+OK 1 \d+$/);
}

async function assertStillAuthorization(s: MemorySession): Promise<void> {
  assert.equal(s.session.state, 'authorization');
  assert.equal(s.ending, 'open');
  await s.login('alice', 'pw of alice');
}

test('AUTH alone lists the mechanisms CAPA offers', T, async () => {
  const { s } = setup();
  const listing = await s.multi('AUTH');
  assert.equal(listing.status, '+OK Mechanisms follow');
  assert.equal(listing.body, 'PLAIN\r\nLOGIN\r\nXOAUTH2\r\nOAUTHBEARER\r\n');
  assert.ok((await s.multi('CAPA')).body.includes('SASL PLAIN LOGIN XOAUTH2 OAUTHBEARER\r\n'));
  await assertStillAuthorization(s);
});

test('PLAIN: with an initial response, after "+ ", after "=", in lower case, with authzid = user', T, async () => {
  for (const steps of [
    [`AUTH PLAIN ${plain('alice', 'pw of alice')}`],
    ['AUTH PLAIN', plain('alice', 'pw of alice')],
    ['AUTH PLAIN =', plain('alice', 'pw of alice')],
    [`auth plain ${plain('alice', 'pw of alice')}`],
    [`AUTH PLAIN ${plain('alice', 'pw of alice', 'alice')}`],
  ]) {
    const { s, store } = setup();
    for (const step of steps.slice(0, -1)) assert.equal(await s.line(step), EMPTY_CHALLENGE, step);
    assert.equal(await s.line(steps.at(-1)!), OK, steps.join(' / '));
    await assertLoggedIn(s);
    assert.deepEqual(store.eventsOf('authenticate'), [{ kind: 'authenticate', user: 'alice', ok: true }]);
  }
});

test('PLAIN refusals: wrong password [AUTH], another authzid, not three fields, empty user or password', T, async () => {
  const { s, store } = setup();
  assert.equal(await s.line(`AUTH PLAIN ${plain('alice', 'wrong')}`), AUTH_FAILED);
  assert.equal(await s.line(`AUTH PLAIN ${plain('alice', 'pw of alice', 'a,b=c')}`), '-ERR [AUTH] Logging in as another user is not supported.');
  for (const response of [b64('alice\0pw of alice'), b64('\0alice'), b64('\0\0pw'), b64('\0alice\0'), b64('a\0b\0c\0d')]) {
    assert.equal(await s.line(`AUTH PLAIN ${response}`), '-ERR [AUTH] Malformed PLAIN response.', response);
  }
  assert.equal(store.eventsOf('authenticate').length, 1, 'only the well-formed response reached the store');
  await assertStillAuthorization(s);
});

test('LOGIN: "Username:" then "Password:" prompts; the user name as initial response skips the first', T, async () => {
  const { s } = setup();
  assert.equal(await s.line('AUTH LOGIN'), `+ ${b64('Username:')}`);
  assert.equal(await s.line(b64('alice')), `+ ${b64('Password:')}`);
  assert.equal(await s.line(b64('pw of alice')), OK);
  await assertLoggedIn(s);
  const again = setup().s;
  assert.equal(await again.line(`AUTH LOGIN ${b64('alice')}`), `+ ${b64('Password:')}`);
  assert.equal(await again.line(b64('pw of alice')), OK);
});

test('LOGIN refusals: an empty user name or password ("="), a wrong password', T, async () => {
  const { s } = setup();
  assert.equal(await s.line('AUTH LOGIN'), `+ ${b64('Username:')}`);
  assert.equal(await s.line('='), '-ERR [AUTH] Empty user name.');
  assert.equal(await s.line(`AUTH LOGIN ${b64('alice')}`), `+ ${b64('Password:')}`);
  assert.equal(await s.line('='), '-ERR [AUTH] Empty password.');
  assert.equal(await s.line(`AUTH LOGIN ${b64('alice')}`), `+ ${b64('Password:')}`);
  assert.equal(await s.line(b64('wrong')), AUTH_FAILED);
  await assertStillAuthorization(s);
});

test('XOAUTH2 and OAUTHBEARER hand the store the token: initial response, after "+ ", after "="', T, async () => {
  for (const [mechanism, response] of [
    ['XOAUTH2', xoauth2('alice', 'tok-alice')],
    ['OAUTHBEARER', oauthbearer('alice', 'tok-alice')],
    ['OAUTHBEARER', oauthbearer('a=2Cb=3Dc', 'tok-odd')],
  ] as const) {
    for (const steps of [[`AUTH ${mechanism} ${response}`], [`AUTH ${mechanism}`, response], [`AUTH ${mechanism} =`, response]]) {
      const { s } = setup();
      for (const step of steps.slice(0, -1)) assert.equal(await s.line(step), EMPTY_CHALLENGE, step);
      assert.equal(await s.line(steps.at(-1)!), OK, steps.join(' / '));
      await assertLoggedIn(s);
    }
  }
});

test('a token the store does not take is [AUTH]; malformed OAuth responses never reach it', T, async () => {
  const { s, store } = setup();
  assert.equal(await s.line(`AUTH XOAUTH2 ${xoauth2('alice', 'tok-bad')}`), AUTH_FAILED);
  assert.equal(await s.line(`AUTH OAUTHBEARER ${oauthbearer('alice', 'tok-odd')}`), AUTH_FAILED);
  const asked = store.eventsOf('authenticate').length;
  for (const [mechanism, response, reason] of [
    ['XOAUTH2', b64('user=alice'), 'Malformed XOAUTH2 response.'],
    ['XOAUTH2', b64('auth=Bearer tok\x01\x01'), 'Malformed XOAUTH2 response.'],
    ['XOAUTH2', b64('user=alice\x01auth=Basic tok\x01\x01'), 'Malformed XOAUTH2 response.'],
    ['OAUTHBEARER', b64('n,,\x01auth=Bearer tok\x01\x01'), 'Malformed OAUTHBEARER response (it must name the user).'],
    ['OAUTHBEARER', b64('garbage'), 'Malformed OAUTHBEARER response (it must name the user).'],
  ] as const) {
    assert.equal(await s.line(`AUTH ${mechanism} ${response}`), `-ERR [AUTH] ${reason}`, response);
  }
  assert.equal(store.eventsOf('authenticate').length, asked);
  await assertStillAuthorization(s);
});

test('"*" cancels an exchange at any step; the session stays in AUTHORIZATION', T, async () => {
  const { s } = setup();
  for (const opening of ['AUTH PLAIN', 'AUTH XOAUTH2', 'AUTH OAUTHBEARER', 'AUTH LOGIN', `AUTH LOGIN ${b64('alice')}`]) {
    assert.match(await s.line(opening), /^\+ /);
    assert.equal(await s.line('*'), '-ERR Authentication cancelled.', opening);
  }
  await assertStillAuthorization(s);
});

test('bad base64 is refused, in the initial response and in a continuation', T, async () => {
  const { s, store } = setup();
  for (const bad of ['%%%not-base64%%%', 'abc', 'dXNlcg=x', 'YQ===', 'Y Q==']) {
    const reply = await s.line(`AUTH PLAIN ${bad}`);
    // "Y Q==" is two arguments, which AUTH allows, then a third: refused for its count.
    assert.match(reply, /^-ERR (Invalid base64 in the initial response\.|Wrong number of arguments for AUTH\.)$/, bad);
  }
  for (const bad of ['!!!!', 'dXNlcg=x', 'abc', '====', 'Y Q==']) {
    assert.equal(await s.line('AUTH PLAIN'), EMPTY_CHALLENGE);
    assert.equal(await s.line(bad), '-ERR Invalid base64 in the response.', bad);
  }
  assert.equal(store.eventsOf('authenticate').length, 0);
  await assertStillAuthorization(s);
});

test('a line in the middle of an exchange is a response, never a command', T, async () => {
  const { s, store } = setup();
  assert.equal(await s.line('AUTH PLAIN'), EMPTY_CHALLENGE);
  // QUIT is valid base64 (four letters): decoded, it is no PLAIN response.
  assert.equal(await s.line('QUIT'), '-ERR [AUTH] Malformed PLAIN response.');
  assert.equal(s.ending, 'open');
  assert.equal(await s.line('AUTH LOGIN'), `+ ${b64('Username:')}`);
  assert.equal(await s.line('USER'), `+ ${b64('Password:')}`);
  assert.equal(await s.line(b64('x')), AUTH_FAILED);
  // "USER" decodes to a name with a control character: refused before the store is asked.
  assert.deepEqual(store.eventsOf('authenticate'), []);
  await assertStillAuthorization(s);
});

test('unknown mechanisms, and AUTH after login, are refused', T, async () => {
  const { s } = setup();
  assert.equal(await s.line('AUTH CRAM-MD5'), '-ERR Unsupported mechanism: CRAM-MD5');
  assert.equal(await s.line('AUTH SCRAM-SHA-256 biwsbj1hbGljZSxyPW5vbmNl'), '-ERR Unsupported mechanism: SCRAM-SHA-256');
  assert.equal(await s.line(`AUTH PLAIN ${plain('alice', 'pw of alice')}`), OK);
  assert.equal(await s.line(`AUTH PLAIN ${plain('alice', 'pw of alice')}`), '-ERR AUTH is not allowed in the TRANSACTION state.');
});

test('SASL credential failures count toward maxAuthFailures like PASS ones', T, async () => {
  const { s, events } = setup({ limits: { maxAuthFailures: 2 } });
  assert.equal(await s.line(`AUTH PLAIN ${plain('alice', 'x')}`), AUTH_FAILED);
  assert.equal(await s.command(`AUTH XOAUTH2 ${xoauth2('alice', 'bad')}`), '-ERR [AUTH] Authentication failed; too many failures, closing connection.\r\n');
  assert.equal(s.ending, 'closed');
  assert.deepEqual(events.ended, ['auth-failures']);
});

test('no password or token reaches the log at debug level, in clear or in base64', T, async () => {
  const { services, log } = setup({ logLevel: 'debug' });
  const secrets = ['pw of alice', 'Wr0ng-guess-Kp4', 'tok-alice', 'tok-Bad-Hh2Lq'];
  const s = memorySession(services);
  const lines = [
    'USER alice', 'PASS Wr0ng-guess-Kp4', `AUTH PLAIN ${plain('alice', 'Wr0ng-guess-Kp4')}`, 'AUTH PLAIN', plain('alice', 'Wr0ng-guess-Kp4'),
    `AUTH LOGIN ${b64('alice')}`, b64('Wr0ng-guess-Kp4'), `AUTH XOAUTH2 ${xoauth2('alice', 'tok-Bad-Hh2Lq')}`, 'AUTH OAUTHBEARER', oauthbearer('alice', 'tok-Bad-Hh2Lq'),
    `AUTH XOAUTH2 ${xoauth2('alice', 'tok-alice')}`,
  ];
  for (const line of lines) await s.command(line);
  assert.equal(s.session.state, 'transaction');
  const other = memorySession(services);
  await other.command('AUTH PLAIN');
  await other.command(plain('alice', 'pw of alice').slice(0, 12));
  const text = log();
  assert.match(text, /alice/, 'the log is about these sessions');
  for (const secret of secrets) {
    for (const form of [secret, b64(secret), secret.slice(0, 8), secret.slice(-8)]) assert.equal(text.includes(form), false, `the log holds ${JSON.stringify(form)}`);
  }
  for (const line of lines.filter((l) => /^[A-Za-z0-9+/=]{12,}$/.test(l) || /^AUTH \S+ \S{12,}/.test(l))) {
    assert.equal(text.includes(line.split(' ').at(-1)!), false, `the log holds the response of ${JSON.stringify(line.slice(0, 20))}`);
  }
});
