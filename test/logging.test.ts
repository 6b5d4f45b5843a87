/**
 * What the log says: one summary line per session, protocol traces at debug level, and never
 * a password, at any level.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startDovecot, type Dovecot } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { startProxy } from './support/proxy.js';

let dovecot: Dovecot;
const password = 'S3cr3t-p4ss w0rd';

before(async () => {
  dovecot = await startDovecot({ users: [{ name: 'carol', password }] });
  await dovecot.deliver('carol', 'Subject: one\nMessage-ID: <1@log>\n\nhello\n');
  await dovecot.deliver('carol', 'Subject: two\nMessage-ID: <2@log>\n\nworld\n');
});

after(async () => {
  await dovecot?.stop();
});

test('a full session at debug level: traces, imapflow lines, a summary, and no password anywhere', async () => {
  const proxy = await startProxy({ imapPort: dovecot.imapPort, logLevel: 'debug' });
  try {
    const c = await RawPop3.connect(proxy.port);
    // An APOP digest is derived from the password: it must not be logged either.
    assert.match(await c.command('APOP carol 0123456789abcdef0123456789abcdef'), /^-ERR/);
    await c.command('USER carol');
    assert.match(await c.command('PASS wrong-guess-123', 30_000), /^-ERR \[AUTH\]/);
    await c.command('USER carol');
    assert.match(await c.command(`PASS ${password}`, 30_000), /^\+OK/);
    await c.multiline('RETR 1');
    await c.multiline('TOP 2 0');
    await c.command('DELE 2');
    assert.match(await c.command('QUIT'), /^\+OK/);
    await c.waitClose();
  } finally {
    await proxy.close();
  }
  const log = proxy.log();
  assert.match(log, /C: USER carol/);
  assert.match(log, /C: PASS \*\*\*/);
  assert.match(log, /imap: /, 'imapflow log lines are routed in at debug');
  assert.match(log, /Session ended: quit, top=1\/\d+, retr=1\/\d+, del=1, expunged=1/);
  for (const secret of [password, 'wrong-guess-123', '0123456789abcdef0123456789abcdef', Buffer.from(`\0carol\0${password}`).toString('base64')]) {
    assert.equal(log.includes(secret), false, `log contains ${secret}`);
  }
  // imapflow sends LOGIN with the password as a literal or quoted string: neither part may show.
  assert.equal(log.includes('S3cr3t'), false);
});

test('JSON log format: one object per line, the session summary carries stable fields', async () => {
  const proxy = await startProxy({ imapPort: dovecot.imapPort, logLevel: 'info', logFormat: 'json' });
  try {
    const c = await RawPop3.connect(proxy.port);
    await c.command('USER carol');
    await c.command(`PASS ${password}`, 30_000);
    await c.command('QUIT');
    await c.waitClose();
  } finally {
    await proxy.close();
  }
  const entries = proxy.log().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const end = entries.find((e) => e.event === 'session-end');
  assert.ok(end, 'a session-end entry');
  assert.equal(end.user, 'carol');
  assert.equal(end.reason, 'quit');
  assert.match(String(end.client), /^127\.0\.0\.1:\d+$/);
  for (const key of ['retrieved', 'retrievedBytes', 'deleted', 'expunged', 'durationSeconds']) assert.ok(key in end, key);
  assert.equal(JSON.stringify(entries).includes('S3cr3t'), false);
});
