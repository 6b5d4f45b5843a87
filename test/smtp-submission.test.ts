/**
 * SMTP submission through the proxy to a real Postfix (STARTTLS, verified against the test CA)
 * that authenticates through the test Dovecot and delivers to it by LMTP. Every case compares
 * what arrived in the store with what was sent, byte for byte: the relay's trace headers
 * (Return-Path, Delivered-To, Received) come first, then exactly the client's message. Clients
 * are Python's smtplib and swaks; a raw socket only where a client would refuse to misbehave.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, beforeEach, test } from 'node:test';
import { testCerts, type TestCerts } from './support/certs.js';
import { DEFAULT_USERS, emptyMailbox, startDovecot, withMailbox, type Dovecot } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { cannotRunPostfix, dovecotConfigForPostfix, startPostfix, type Postfix } from './support/postfix.js';
import { startProxy, type TestProxy } from './support/proxy.js';
import { smtplibSession, stepReply } from './support/smtplib-client.js';
import { assertDelivered, closedPort } from './support/smtp-tools.js';

const TEST = { timeout: 120_000 };
const HOOK = { timeout: 120_000 };
const skip = cannotRunPostfix();
const alice = { name: 'alice', password: 'alice-secret' };
const bob = { name: 'bob', password: 'bob-secret' };
const dave = { name: 'dave@example.test', password: 'dave-secret' };
let dovecot: Dovecot;
let postfix: Postfix;
let certs: TestCerts;
let proxy: TestProxy;

before(async () => {
  if (skip) return;
  certs = await testCerts();
  dovecot = await startDovecot({ users: [...DEFAULT_USERS, dave], extraConfig: dovecotConfigForPostfix() });
  postfix = await startPostfix(dovecot, { refuseRecipients: { 'nobody@example.test': '550 5.1.1 No such user here' }, messageSizeLimit: 2_000_000 });
  proxy = await startProxy({
    imapPort: dovecot.imapPort,
    logLevel: 'info',
    metrics: true,
    smtp: {},
    smtpRelay: { host: '127.0.0.1', port: postfix.port, tls: 'starttls', verifyTls: true, ca: certs.ca.cert, servername: 'localhost' },
  });
}, HOOK);

after(async () => {
  await proxy?.close();
  await postfix?.stop();
  await dovecot?.stop();
}, HOOK);

beforeEach(async () => {
  if (skip) return;
  for (const user of [alice, bob]) await emptyMailbox(dovecot, user);
}, HOOK);

/** A message with lines that start with dots, 8-bit text and a line of 2000 octets. */
function message(subject: string, extra = ''): Buffer {
  const lines = [
    'From: alice@example.test',
    'To: bob@example.test',
    `Subject: ${subject}`,
    `Message-ID: <${subject.replace(/\W/g, '')}@submission.test>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
    '',
    '.a line that starts with a dot',
    '..two dots',
    '.',
    'Grüße aus Köln, 8-bit as sent',
    'x'.repeat(2000),
    extra,
  ];
  return Buffer.from(`${lines.join('\r\n')}\r\n`, 'utf8');
}

/** The messages in a user's INBOX, as stored. */
async function stored(user: { name: string; password: string }): Promise<Buffer[]> {
  return withMailbox(dovecot, user, async (imap) => (await imap.fetchAll('1:*', { source: true })).map((m) => m.source!));
}

/**
 * The messages once `count` have arrived (Postfix queues, then delivers by LMTP: a moment after
 * its 250), within 20 s; whatever is there then, if fewer.
 */
async function arrived(user: { name: string; password: string }, count: number): Promise<Buffer[]> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const inbox = await stored(user);
    if (inbox.length >= count || Date.now() > deadline) return inbox;
    await sleep(100);
  }
}


const submit = (job: Partial<Parameters<typeof smtplibSession>[0]> & { message: Buffer }) =>
  smtplibSession({ port: proxy.smtpPort!, user: alice.name, password: alice.password, from: 'alice@example.test', to: ['bob@example.test'], ...job });

test('the password grant: smtplib submits, the relay accepts, and the message is in the store byte for byte', { ...TEST, skip }, async () => {
  const sent = message('password grant');
  const report = await submit({ message: sent });
  assert.equal(report.error, undefined);
  const ehlo = stepReply(report, 'ehlo')!;
  for (const keyword of ['PIPELINING', '8BITMIME', 'ENHANCEDSTATUSCODES', 'SMTPUTF8', 'AUTH PLAIN LOGIN XOAUTH2', 'SIZE 36700160']) assert.ok(ehlo.includes(keyword), `EHLO lists ${keyword}: ${ehlo}`);
  assert.match(stepReply(report, 'auth')!, /^235 /);
  assert.match(stepReply(report, 'data')!, /^250 2\.0\.0 Ok: queued as \w+/, "the relay's own reply");
  const inbox = await arrived(bob, 1);
  assert.equal(inbox.length, 1);
  assertDelivered(inbox[0]!, sent);
});

test('a wrong password is the client\'s 535 5.7.8; the relay unreachable is a 454 4.7.0, never a 5xx', { ...TEST, skip }, async () => {
  const wrong = await submit({ password: 'wrong', message: message('wrong') });
  assert.match(stepReply(wrong, 'auth')!, /^535 5\.7\.8 /);
  const down = await startProxy({
    imapPort: dovecot.imapPort,
    logLevel: 'info',
    smtp: {},
    smtpRelay: { host: '127.0.0.1', port: await closedPort(), tls: 'starttls', verifyTls: true, ca: certs.ca.cert, servername: 'localhost' },
  });
  try {
    const report = await smtplibSession({ port: down.smtpPort!, ...alice, user: alice.name, from: 'alice@example.test', to: ['bob@example.test'], message: message('down') });
    assert.match(stepReply(report, 'auth')!, /^454 4\.7\.0 Temporary authentication failure/);
    assert.match(down.log(), /Login not completed \(relay\): cannot reach the relay 127\.0\.0\.1:\d+/);
    assert.doesNotMatch(stepReply(report, 'auth')!, /127\.0\.0\.1/, 'the reply names no server');
  } finally {
    await down.close();
  }
  assert.equal((await stored(bob)).length, 0);
});

test('a recipient the relay refuses is refused to the client alone, with the relay\'s code; the others get the message', { ...TEST, skip }, async () => {
  const sent = message('one refused');
  const report = await submit({ to: ['nobody@example.test', 'bob@example.test'], message: sent });
  assert.match(stepReply(report, 'rcpt nobody@example.test')!, /^550 5\.1\.1 /);
  assert.match(stepReply(report, 'rcpt bob@example.test')!, /^250 /);
  assert.match(stepReply(report, 'data')!, /^250 /);
  const inbox = await arrived(bob, 1);
  assert.equal(inbox.length, 1);
  assertDelivered(inbox[0]!, sent);
});

test('a message too big for the relay gets its 552 5.3.4, and nothing is delivered', { ...TEST, skip }, async () => {
  const big = message('too big', 'y'.repeat(76).concat('\r\n').repeat(40_000));
  const report = await submit({ message: big });
  const refused = stepReply(report, 'mail') ?? '';
  const answer = refused.startsWith('250') ? stepReply(report, 'data')! : refused;
  assert.match(answer, /^552 5\.3\.4 /);
  assert.equal((await stored(bob)).length, 0);
});

test('a sender the login does not own gets 553 5.7.1 before the relay is asked', { ...TEST, skip }, async () => {
  const report = await submit({ user: dave.name, password: dave.password, from: 'alice@example.test', message: message('not mine') });
  assert.match(stepReply(report, 'auth')!, /^235 /);
  assert.match(stepReply(report, 'mail')!, /^553 5\.7\.1 Sender address not allowed for this login/);
  assert.equal(postfix.log().includes('from=<alice@example.test>, size') && /not mine/.test(postfix.log()), false);
  assert.equal((await stored(bob)).length, 0);
});

test('bare LF line ends (SMTP smuggling) are refused with 554 5.6.0 and nothing reaches the store', { ...TEST, skip }, async () => {
  const replies = await rawSession(proxy.smtpPort!, [
    'EHLO raw.example',
    `AUTH PLAIN ${Buffer.from(`\0${alice.name}\0${alice.password}`).toString('base64')}`,
    'MAIL FROM:<alice@example.test>',
    'RCPT TO:<bob@example.test>',
    'DATA',
    'Subject: smuggled\r\n\r\nfirst\n.\nMAIL FROM:<alice@example.test>\r\n.',
    'QUIT',
  ]);
  assert.match(replies, /\r\n354 /);
  assert.match(replies, /554 5\.6\.0 Message refused: a bare CR or LF line end/);
  await sleep(500);
  assert.equal((await stored(bob)).length, 0);
});

test('a client cut in the middle of DATA: the relay gets no final ".", nothing is delivered; the resubmission is delivered once', { ...TEST, skip }, async () => {
  const socket = await intoData(proxy.smtpPort!);
  // Dot-stuffed as a client sends it (the message has a line of a lone "."), and cut short.
  const stuffed = Buffer.from(message('cut').toString('latin1').replace(/^\./gm, '..'), 'latin1');
  socket.write(stuffed.subarray(0, 400));
  await sleep(300);
  socket.destroy();
  await sleep(1500);
  assert.equal((await stored(bob)).length, 0, 'nothing delivered');
  const sent = message('cut');
  assert.match(stepReply(await submit({ message: sent }), 'data')!, /^250 /);
  const inbox = await arrived(bob, 1);
  assert.equal(inbox.length, 1);
  assertDelivered(inbox[0]!, sent);
});

test('shutdown while a message still arrives: at the end of the grace the client gets 421 4.3.2 and the relay no final "."', { ...TEST, skip }, async () => {
  const own = await startProxy({
    imapPort: dovecot.imapPort,
    logLevel: 'info',
    smtp: {},
    smtpRelay: { host: '127.0.0.1', port: postfix.port, tls: 'starttls', verifyTls: true, ca: certs.ca.cert, servername: 'localhost' },
  });
  const socket = await intoData(own.smtpPort!);
  try {
    socket.write('Subject: unfinished\r\n\r\nthe first lines of a message that never ends\r\n');
    let tail = '';
    socket.on('data', (d: Buffer) => (tail += d.toString('latin1')));
    const started = performance.now();
    await own.close().catch(() => undefined);
    assert.ok(performance.now() - started < 5000, 'the shutdown did not wait for the message');
    for (let i = 0; i < 40 && !tail.includes('421'); i++) await sleep(50);
    assert.match(tail, /^421 4\.3\.2 Service shutting down, try again later\r\n/);
  } finally {
    socket.destroy();
    await own.close().catch(() => undefined);
  }
  await sleep(1000);
  assert.equal((await stored(bob)).length, 0, 'nothing delivered');
});

test('sent through the proxy\'s SMTP, read back through its POP3: the same bytes', { ...TEST, skip }, async () => {
  const sent = message('round trip');
  assert.match(stepReply(await submit({ message: sent }), 'data')!, /^250 /);
  const c = await RawPop3.login(proxy.port, bob.name, bob.password);
  const retr = await c.multiline('RETR 1', 30_000);
  assert.match(await c.command('QUIT'), /^\+OK/);
  assertDelivered(retr.body, sent);
});

test('swaks, a real client of its own: STARTTLS is not offered without a certificate, AUTH LOGIN works', { ...TEST, skip }, async () => {
  const out = await new Promise<string>((resolve) =>
    execFile(
      'swaks',
      ['--server', `127.0.0.1:${proxy.smtpPort}`, '--auth', 'LOGIN', '--auth-user', alice.name, '--auth-password', alice.password,
        '--from', 'alice@example.test', '--to', 'bob@example.test', '--header', 'Subject: from swaks', '--body', 'swaks body'],
      { timeout: 60_000 },
      (_err, stdout, stderr) => resolve(stdout + stderr),
    ),
  );
  assert.doesNotMatch(out, /STARTTLS/);
  assert.match(out, /<-\s+235 2\.7\.0 /);
  assert.match(out, /<-\s+250 2\.0\.0 Ok: queued as/);
  const inbox = await arrived(bob, 1);
  assert.equal(inbox.length, 1);
  assert.match(inbox[0]!.toString('latin1'), /Subject: from swaks\r\n[\s\S]*swaks body/);
});


/** A raw session of alice's logged in and past DATA's 354: the message is the caller's to send. */
async function intoData(port: number): Promise<net.Socket> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  const login = Buffer.from(`\0${alice.name}\0${alice.password}`).toString('base64');
  const said = await converse(socket, ['EHLO raw.example', `AUTH PLAIN ${login}`, 'MAIL FROM:<alice@example.test>', 'RCPT TO:<bob@example.test>', 'DATA']);
  assert.match(said, /354 /);
  return socket;
}

/** Sends each line (CRLF added) after the previous reply; returns everything the server said. */
async function rawSession(port: number, lines: string[]): Promise<string> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  try {
    return await converse(socket, lines);
  } finally {
    socket.destroy();
  }
}

async function converse(socket: net.Socket, lines: string[]): Promise<string> {
  let said = '';
  socket.on('data', (d: Buffer) => (said += d.toString('latin1')));
  const replies = () => said.split('\r\n').filter((l) => /^\d{3} /.test(l)).length;
  const waitFor = async (count: number) => {
    for (let i = 0; i < 300 && replies() < count; i++) await sleep(50);
  };
  await waitFor(1);
  for (let i = 0; i < lines.length; i++) {
    socket.write(`${lines[i]}\r\n`);
    await waitFor(i + 2);
  }
  return said;
}
