/**
 * The AUTHORIZATION state over the memory store, driving Pop3Session directly: the greeting,
 * CAPA in each state and configuration, commands out of state and with wrong arguments,
 * USER/PASS, the refusals (credentials, plaintext, mailbox in use, LOGIN-DELAY, store and
 * lock failures) and what each leaves held, STLS, and the per-connection limits.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MaildropError } from '../../src/maildrop/errors.js';
import type { LockRegistry } from '../../src/lock/lock-registry.js';
import { memorySession } from '../support/memory-connection.js';
import { MemoryStore } from '../support/memory-maildrop.js';
import { memoryServices, type MemoryServicesOptions } from '../support/memory-proxy.js';

const REMOTE = { address: '192.0.2.7', port: 50000 };
const T = { timeout: 30_000 };

function setup(options: MemoryServicesOptions = {}) {
  const store = new MemoryStore().addUser('alice', 'alice pw', ['tok-a']).addUser('bob', 'bob-pw');
  for (let i = 1; i <= 3; i++) store.deliver('alice', `Subject: m${i}\n\nbody ${i}\n`);
  return memoryServices({ store, ...options });
}

async function capa(s: ReturnType<typeof memorySession>): Promise<string[]> {
  const { status, body } = await s.multi('CAPA');
  assert.equal(status, '+OK Capability list follows');
  return body.split('\r\n').filter((l) => l !== '');
}

const BASE = ['TOP', 'UIDL', 'RESP-CODES', 'AUTH-RESP-CODE', 'PIPELINING'];
const AUTH_CAPS = ['USER', 'SASL PLAIN LOGIN XOAUTH2 OAUTHBEARER'];

test('the greeting is +OK with the configured text and no APOP timestamp; APOP is refused', T, async () => {
  const { services } = setup({ greeting: 'Hello there.' });
  const s = memorySession(services);
  assert.equal(s.output(), '+OK Hello there.\r\n');
  assert.equal(await s.line('APOP alice 0123456789abcdef0123456789abcdef'), '-ERR APOP is not supported; use USER and PASS.');
});

test('CAPA before login, after login, with STLS, off loopback, with LOGIN-DELAY and EXPIRE', T, async () => {
  const plain = memorySession(setup().services);
  assert.deepEqual(await capa(plain), [...BASE, ...AUTH_CAPS, 'IMPLEMENTATION pop3-imap-proxy']);
  await plain.login('alice', 'alice pw');
  assert.deepEqual(await capa(plain), [...BASE, 'IMPLEMENTATION pop3-imap-proxy']);

  const tls = setup({ tlsAvailable: true, loginDelayS: 900, expire: 'NEVER' });
  const local = memorySession(tls.services);
  assert.deepEqual(await capa(local), [...BASE, 'STLS', ...AUTH_CAPS, 'LOGIN-DELAY 900', 'EXPIRE NEVER', 'IMPLEMENTATION pop3-imap-proxy']);
  // Off loopback without TLS, passwords are refused: no way to send one is offered.
  const remote = memorySession(tls.services, { client: REMOTE });
  assert.deepEqual(await capa(remote), [...BASE, 'STLS', 'LOGIN-DELAY 900', 'EXPIRE NEVER', 'IMPLEMENTATION pop3-imap-proxy']);
  assert.equal(await remote.line('STLS'), '+OK Begin TLS negotiation.');
  assert.deepEqual(await capa(remote), [...BASE, ...AUTH_CAPS, 'LOGIN-DELAY 900', 'EXPIRE NEVER', 'IMPLEMENTATION pop3-imap-proxy']);
  await remote.login('alice', 'alice pw');
  assert.deepEqual(await capa(remote), [...BASE, 'LOGIN-DELAY 900', 'EXPIRE NEVER', 'IMPLEMENTATION pop3-imap-proxy']);
});

test('every TRANSACTION command is refused in AUTHORIZATION, and the other way round', T, async () => {
  const s = memorySession(setup().services);
  for (const c of ['STAT', 'LIST', 'UIDL', 'RETR 1', 'DELE 1', 'RSET', 'NOOP', 'TOP 1 1', 'LAST']) {
    const verb = c.split(' ')[0];
    assert.equal(await s.line(c), `-ERR ${verb} is not allowed in the AUTHORIZATION state.`);
  }
  await s.login('alice', 'alice pw');
  for (const c of ['USER alice', 'PASS x', 'AUTH PLAIN', 'STLS', 'APOP a b']) {
    const verb = c.split(' ')[0];
    assert.equal(await s.line(c), `-ERR ${verb} is not allowed in the TRANSACTION state.`);
  }
  assert.match(await s.line('STAT'), /^\+OK 3 \d+$/);
});

test('wrong argument counts and unknown commands get -ERR; keywords are case-insensitive', T, async () => {
  const s = memorySession(setup().services);
  for (const c of ['USER', 'USER a b', 'CAPA x', 'QUIT now', 'STLS x', 'AUTH a b c']) {
    assert.equal(await s.line(c), `-ERR Wrong number of arguments for ${c.split(' ')[0]}.`, c);
  }
  assert.equal(await s.line('XYZZY'), '-ERR Unknown command: XYZZY');
  assert.equal(await s.line('ABCDEFGHIJ'), '-ERR Unknown command.');
  assert.equal(await s.line(''), '-ERR Unknown command.');
  assert.equal(await s.line(' USER alice'), '-ERR Unknown command.');
  assert.equal(await s.line(Buffer.from([0x53, 0x54, 0x00, 0x41, 0x54])), '-ERR Unknown command.');
  assert.equal(await s.line('uSeR alice'), '+OK Send your password.');
  assert.match(await s.line('pAsS alice pw'), /^\+OK Logged in, 3 messages\.$/);
});

test('PASS needs USER just before it; the password is the rest of the line, spaces and all', T, async () => {
  const { services, store } = setup();
  const s = memorySession(services);
  assert.equal(await s.line('PASS alice pw'), '-ERR Send USER first.');
  assert.equal(await s.line('USER alice'), '+OK Send your password.');
  assert.equal(await s.line('PASS'), '-ERR Missing password.');
  // The name was taken by that PASS.
  assert.equal(await s.line('PASS alice pw'), '-ERR Send USER first.');
  assert.equal(await s.line('USER alice'), '+OK Send your password.');
  assert.equal(await s.line('PASS alice pw'), '+OK Logged in, 3 messages.');
  assert.deepEqual(store.eventsOf('authenticate'), [{ kind: 'authenticate', user: 'alice', ok: true }]);
});

test('a wrong password and an unknown user get the same [AUTH] reply; the session may try again', T, async () => {
  const { services, events } = setup();
  const s = memorySession(services);
  await s.line('USER alice');
  const wrong = await s.line('PASS nope');
  await s.line('USER nobody');
  const unknown = await s.line('PASS nope');
  assert.equal(wrong, '-ERR [AUTH] Authentication failed.');
  assert.equal(unknown, wrong);
  await s.login('alice', 'alice pw');
  assert.deepEqual(events.logins, ['auth', 'auth', 'ok']);
});

test('a user name with control characters is refused without asking the store', T, async () => {
  const { services, store } = setup();
  const s = memorySession(services);
  await s.line(Buffer.from('USER ali\x01ce'));
  assert.equal(await s.line('PASS alice pw'), '-ERR [AUTH] Authentication failed.');
  assert.equal(store.eventsOf('authenticate').length, 0);
});

test('QUIT in AUTHORIZATION says goodbye and touches nothing', T, async () => {
  const { services, store, events } = setup();
  const s = memorySession(services);
  await s.line('USER alice');
  assert.equal(await s.command('QUIT'), '+OK Bye.\r\n');
  assert.equal(s.ending, 'closed');
  assert.deepEqual(store.events, []);
  assert.deepEqual(events.ended, ['quit']);
  // Nothing more is answered.
  assert.equal(await s.command('NOOP'), '');
});

test('plaintext passwords are refused off loopback when TLS could protect them, and allowed after STLS', T, async () => {
  const refused = '-ERR [AUTH] Plaintext authentication is disallowed on non-secure connections; use STLS or the TLS port.';
  const tls = setup({ tlsAvailable: true });
  const s = memorySession(tls.services, { client: REMOTE });
  assert.equal(await s.line('USER alice'), refused);
  assert.equal(await s.line('PASS alice pw'), refused);
  assert.equal(await s.line('AUTH PLAIN'), refused);
  assert.equal(await s.line('AUTH'), refused);
  assert.equal(tls.store.eventsOf('authenticate').length, 0);
  // What was said before STLS is forgotten.
  const t = memorySession(tls.services, { client: REMOTE });
  assert.equal(await t.line('STLS'), '+OK Begin TLS negotiation.');
  assert.equal(t.tlsStarted, 1);
  assert.equal(await t.line('STLS'), '-ERR TLS is already in use.');
  await t.login('alice', 'alice pw');
  // Allowed by configuration, and on an implicit-TLS connection.
  await memorySession(setup({ tlsAvailable: true, allowPlaintextAuth: true }).services, { client: REMOTE }).login('bob', 'bob-pw');
  await memorySession(tls.services, { client: REMOTE, secure: true }).login('bob', 'bob-pw');
});

test('STLS forgets a pending USER; without TLS it is refused', T, async () => {
  const s = memorySession(setup({ tlsAvailable: true }).services);
  await s.line('USER alice');
  await s.line('STLS');
  assert.equal(await s.line('PASS alice pw'), '-ERR Send USER first.');
  assert.equal(await memorySession(setup().services).line('STLS'), '-ERR STLS is not available on this server.');
});

test('a second session on a locked mailbox gets [IN-USE] and lets go of its maildrop; the first is unaffected', T, async () => {
  const { services, store, events } = setup();
  const first = memorySession(services);
  await first.login('alice', 'alice pw');
  const second = memorySession(services);
  await second.line('USER alice');
  assert.equal(await second.line('PASS alice pw'), '-ERR [IN-USE] Mailbox is in use by another POP3 session.');
  assert.equal(second.session.state, 'authorization');
  assert.equal(store.eventsOf('abandon').length, 1, 'the refused login gave its maildrop back');
  assert.match(await first.line('STAT'), /^\+OK 3 /);
  await first.command('QUIT');
  await second.login('alice', 'alice pw');
  assert.deepEqual(events.logins, ['ok', 'in-use', 'ok']);
});

test('a lock registry that cannot answer: [SYS/TEMP], nothing held', T, async () => {
  const broken: LockRegistry = { acquire: () => Promise.reject(new Error('redis down')) };
  const { services, store } = setup({ locks: broken });
  const s = memorySession(services);
  await s.line('USER alice');
  assert.equal(await s.line('PASS alice pw'), '-ERR [SYS/TEMP] Mailbox lock service unavailable, try again later.');
  assert.equal(store.eventsOf('abandon').length, 1);
});

test('LOGIN-DELAY: a second login within the delay gets [LOGIN-DELAY] with the seconds to wait', T, async () => {
  const { services } = setup({ loginDelayS: 60 });
  const first = memorySession(services);
  await first.login('alice', 'alice pw');
  await first.command('QUIT');
  const again = memorySession(services);
  await again.line('USER alice');
  assert.match(await again.line('PASS alice pw'), /^-ERR \[LOGIN-DELAY\] Logged in too recently; try again in (60|59) seconds\.$/);
  // Another mailbox is not delayed.
  await again.login('bob', 'bob-pw');
});

test('store failures at login: temporary [SYS/TEMP], permanent [SYS/PERM]; a failing open() frees the lock', T, async () => {
  const { services, store, locks } = setup();
  const s = memorySession(services);
  store.hooks.authenticateError = new MaildropError('temporary', 'connect ECONNREFUSED');
  await s.line('USER alice');
  assert.equal(await s.line('PASS alice pw'), '-ERR [SYS/TEMP] Mail server temporarily unavailable, try again later.');
  store.hooks.authenticateError = new MaildropError('permanent', 'no such folder');
  await s.line('USER alice');
  assert.equal(await s.line('PASS alice pw'), '-ERR [SYS/PERM] Mailbox not available; tell the administrator.');
  store.hooks.authenticateError = undefined;
  store.hooks.openError = new MaildropError('temporary', 'SELECT failed');
  await s.line('USER alice');
  assert.equal(await s.line('PASS alice pw'), '-ERR [SYS/TEMP] Mail server temporarily unavailable, try again later.');
  assert.equal((locks as { size?: number }).size, 0, 'the lock was released');
  store.hooks.openError = undefined;
  await s.login('alice', 'alice pw');
});

test('maxAuthFailures 2: the second failure is answered, then the connection closed', T, async () => {
  const { services, events } = setup({ limits: { maxAuthFailures: 2 } });
  const s = memorySession(services);
  await s.line('USER alice');
  assert.equal(await s.line('PASS x'), '-ERR [AUTH] Authentication failed.');
  await s.line('USER alice');
  assert.equal(await s.command('PASS y'), '-ERR [AUTH] Authentication failed; too many failures, closing connection.\r\n');
  assert.equal(s.ending, 'closed');
  assert.deepEqual(events.ended, ['auth-failures']);
});

test('maxErrors 3: three protocol errors in a row close; a good command in between resets the run', T, async () => {
  const { services } = setup({ limits: { maxErrors: 3 } });
  const s = memorySession(services);
  for (let i = 0; i < 5; i++) {
    assert.match(await s.line('XTND XMIT'), /^-ERR Unknown command/);
    assert.match(await s.line('STAT'), /^-ERR STAT is not allowed/);
    await s.multi('CAPA');
  }
  await s.line('FOO');
  await s.line('USER');
  assert.equal(await s.command('BAR'), '-ERR Unknown command: BAR Too many errors, closing connection.\r\n');
  assert.equal(s.ending, 'closed');
  assert.equal(await s.command('CAPA'), '');
});
