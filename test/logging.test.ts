/**
 * What the log says: one summary line per session, protocol traces at debug level, and never
 * a password, at any level.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { dovecotLog, startDovecot, type Dovecot } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { startProxy } from './support/proxy.js';

let dovecot: Dovecot;
const password = 'S3cr3t-p4ss w0rd';

before(async () => {
  // Trusted: Dovecot takes the proxy's session id (IMAP ID x-session-id) as its own.
  dovecot = await startDovecot({ users: [{ name: 'carol', password }], extraConfig: 'login_trusted_networks = 127.0.0.0/8' });
  await dovecot.deliver('carol', 'Subject: one\nMessage-ID: <1@log>\n\nhello\n');
  await dovecot.deliver('carol', 'Subject: two\nMessage-ID: <2@log>\n\nworld\n');
}, { timeout: 120_000 });

after(async () => {
  await dovecot?.stop();
}, { timeout: 60_000 });

test('a full session at debug level: traces, imapflow lines, a summary, and no password anywhere', { timeout: 120_000 }, async () => {
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

test('JSON log format: one object per line, the session summary carries stable fields', { timeout: 120_000 }, async () => {
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

/** The session ids on the lines of a text log, by line. */
const cidOf = (line: string) => /^\S+ \w+: cid=([A-Za-z0-9_-]{8}) /.exec(line)?.[1];

test('one session id on every line of a session, imapflow\'s and the lock\'s included, and the same id in the mail server\'s log', { timeout: 120_000 }, async () => {
  const proxy = await startProxy({ imapPort: dovecot.imapPort, logLevel: 'debug' });
  try {
    for (let i = 0; i < 2; i++) {
      const c = await RawPop3.connect(proxy.port);
      await c.command('USER carol');
      assert.match(await c.command(`PASS ${password}`, 30_000), /^\+OK/);
      await c.multiline('RETR 1');
      assert.match(await c.command('QUIT'), /^\+OK/);
      await c.waitClose();
    }
  } finally {
    await proxy.close();
  }
  const lines = proxy.log().trim().split('\n');
  const sessionLines = lines.filter((l) => !/POP3 listening|Metrics on|Fast path/.test(l));
  const untagged = sessionLines.filter((l) => cidOf(l) === undefined);
  assert.deepEqual(untagged, [], 'every line of a session names it');
  const ids = [...new Set(sessionLines.map(cidOf))];
  assert.equal(ids.length, 2, `two sessions, two ids: ${ids.join(', ')}`);
  for (const id of ids) {
    const own = sessionLines.filter((l) => cidOf(l) === id);
    assert.ok(own.some((l) => / debug: cid=\S+ .*imap: /.test(l)), 'imapflow lines carry the id');
    assert.ok(own.some((l) => /Session ended: quit/.test(l)));
    assert.match(dovecotLog(dovecot), new RegExp(`session=<${id}>`), 'the mail server logs the same id');
  }
});

test('client text is logged with its control characters escaped; a user name holding one is refused with [AUTH], no backend asked', { timeout: 120_000 }, async () => {
  const proxy = await startProxy({ imapPort: dovecot.imapPort, logLevel: 'debug' });
  const before = dovecotLog(dovecot).length;
  try {
    const c = await RawPop3.connect(proxy.port);
    assert.match(await c.command('USER carol\u001b[31m\rfake:line'), /^\+OK/);
    assert.match(await c.command(`PASS ${password}`, 30_000), /^-ERR \[AUTH\] /);
    // AUTH PLAIN with a NUL-free control character in the user name.
    const plain = Buffer.from(`\0ca\u0007rol\0${password}`).toString('base64');
    assert.match(await c.command(`AUTH PLAIN ${plain}`, 30_000), /^-ERR \[AUTH\] /);
    await c.command('QUIT');
    await c.waitClose();
  } finally {
    await proxy.close();
  }
  const log = proxy.log();
  assert.match(log, /C: USER carol\\x1b\[31m\\rfake:line/, 'escaped in the trace');
  assert.equal(/[\u0000-\u0009\u000b-\u001f]/.test(log), false, 'no raw control character anywhere');
  assert.equal(log.split('\n').some((l) => l.startsWith('fake:line')), false, 'no forged line');
  assert.match(log, /Login refused: the user name holds control characters/);
  assert.equal(dovecotLog(dovecot).slice(before).includes('carol'), false, 'the mail server was not asked');
});
