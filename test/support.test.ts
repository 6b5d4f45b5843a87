/**
 * The test harness itself: a private Dovecot serves the corpus over its own POP3 exactly as
 * stored (LF turned into CRLF), and IMAP sees the same store.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { corpus, mimeMessage } from './support/corpus.js';
import { imapClient, startDovecot, type Dovecot } from './support/dovecot.js';
import { RawPop3, unstuff } from './support/pop3-client.js';

const messages = corpus();
let dovecot: Dovecot;

before(async () => {
  dovecot = await startDovecot();
  for (const m of messages) await dovecot.deliver('alice', m.data);
}, { timeout: 120_000 });

after(async () => {
  await dovecot?.stop();
}, { timeout: 60_000 });

/**
 * What Dovecot's POP3 sends for a stored message: every LF not already preceded by CR becomes
 * CRLF, and a message that does not end with LF gets a CRLF appended (so the terminator starts
 * a line of its own). LIST sizes do not count that appended CRLF.
 */
function onTheWire(stored: Buffer): { bytes: Buffer; size: number } {
  const out: number[] = [];
  for (let i = 0; i < stored.length; i++) {
    if (stored[i] === 0x0a && (i === 0 || stored[i - 1] !== 0x0d)) out.push(0x0d);
    out.push(stored[i]!);
  }
  const size = out.length;
  if (stored.length > 0 && stored[stored.length - 1] !== 0x0a) out.push(0x0d, 0x0a);
  return { bytes: Buffer.from(out), size };
}

/** Where two buffers first differ, for assertion messages. */
function difference(actual: Buffer, expected: Buffer): string {
  let i = 0;
  while (i < actual.length && i < expected.length && actual[i] === expected[i]) i++;
  const around = (b: Buffer) => JSON.stringify(b.subarray(Math.max(0, i - 20), i + 20).toString('latin1'));
  return `at byte ${i} (lengths ${actual.length} and ${expected.length}): got ${around(actual)}, expected ${around(expected)}`;
}

async function login(user = 'alice', password = 'alice-secret'): Promise<RawPop3> {
  const c = await RawPop3.connect(dovecot.pop3Port, dovecot.host);
  assert.match(c.greeting, /^\+OK/);
  assert.match(await c.command(`USER ${user}`), /^\+OK/);
  assert.match(await c.command(`PASS ${password}`), /^\+OK/);
  return c;
}

test('the corpus has unique names, Message-IDs and Subjects', { timeout: 120_000 }, () => {
  const names = new Set(messages.map((m) => m.name));
  assert.equal(names.size, messages.length);
  for (const header of ['Message-ID', 'Subject']) {
    const values = messages.map((m) => new RegExp(`^${header}: (.*)$`, 'm').exec(m.data.toString('latin1'))?.[1]);
    assert.ok(values.every((v) => v !== undefined), `every message has a ${header}`);
    assert.equal(new Set(values).size, messages.length, `${header}s are unique`);
  }
  const big = messages.find((m) => m.name === 'multipart-3mb');
  assert.ok(big && big.data.length > 2_900_000 && big.data.length < 3_300_000, 'the attachment message is about 3 MB');
  assert.ok(corpus()[0]!.data.equals(messages[0]!.data), 'the corpus is deterministic');
});

test('mimeMessage is deterministic and about the size asked for', { timeout: 120_000 }, () => {
  for (const size of [2_000, 50_000, 1_000_000]) {
    const m = mimeMessage(7, size);
    assert.ok(Math.abs(m.length - size) < 200, `asked for ${size}, got ${m.length}`);
    assert.ok(m.equals(mimeMessage(7, size)));
  }
  assert.ok(!mimeMessage(1, 10_000).equals(mimeMessage(2, 10_000)));
});

test('unstuff removes the leading dot of stuffed lines only', { timeout: 120_000 }, () => {
  const stuffed = Buffer.from('..\r\n...x\r\nplain\r\n..\r\na.b\r\n', 'latin1');
  assert.equal(unstuff(stuffed).toString('latin1'), '.\r\n..x\r\nplain\r\n.\r\na.b\r\n');
  assert.equal(unstuff(Buffer.alloc(0)).length, 0);
});

test("Dovecot's POP3 serves every corpus message byte for byte", { timeout: 120_000 }, async () => {
  const c = await login();
  const expected = messages.map((m) => onTheWire(m.data));
  const total = expected.reduce((sum, e) => sum + e.size, 0);
  assert.equal(await c.command('STAT'), `+OK ${messages.length} ${total}`);

  const list = await c.multiline('LIST');
  assert.match(list.status, /^\+OK/);
  assert.equal(list.body.toString('latin1'), expected.map((e, i) => `${i + 1} ${e.size}\r\n`).join(''));

  for (let i = 0; i < messages.length; i++) {
    const { status, body } = await c.multiline(`RETR ${i + 1}`);
    assert.equal(status, `+OK ${expected[i]!.size} octets`, messages[i]!.name);
    assert.ok(body.equals(expected[i]!.bytes), `RETR ${i + 1} (${messages[i]!.name}) differs ${difference(body, expected[i]!.bytes)}`);
  }
  assert.match(await c.command('QUIT'), /^\+OK/);
  await c.waitClose();
  assert.ok(c.closed);
});

test('a message without a final newline and a headers-only message, as Dovecot sends them', { timeout: 120_000 }, async () => {
  const c = await login();
  const index = (name: string) => messages.findIndex((m) => m.name === name) + 1;

  // No final newline: CRLF is appended before the terminator, the size does not count it.
  const n = index('no-final-newline');
  const wire = onTheWire(messages[n - 1]!.data);
  assert.equal(await c.command(`RETR ${n}`), `+OK ${wire.size} octets`);
  const raw = await c.readMultiline();
  assert.equal(raw.length, wire.size + 2);
  assert.equal(raw.subarray(-29).toString('latin1'), 'last line without a newline\r\n');

  // The last line is a lone "." without a newline: stuffed, then the CRLF.
  const d = index('dot-last-no-newline');
  assert.match(await c.command(`RETR ${d}`), /^\+OK/);
  assert.equal((await c.readMultiline()).subarray(-9).toString('latin1'), 'dot\r\n..\r\n');

  // A lone CR at the very end is not a line end: CRLF is appended after it.
  const r = index('lone-cr');
  assert.match(await c.command(`RETR ${r}`), /^\+OK/);
  assert.equal((await c.readMultiline()).subarray(-6).toString('latin1'), 'end\r\r\n');

  // Headers only: sent as stored, no blank line added, for RETR and for TOP with 0 lines.
  const h = index('headers-only');
  const headersOnly = onTheWire(messages[h - 1]!.data).bytes;
  assert.ok((await c.multiline(`RETR ${h}`)).body.equals(headersOnly));
  assert.ok((await c.multiline(`TOP ${h} 0`)).body.equals(headersOnly));

  // An empty body: TOP 0 gives the headers and the blank line.
  const e = index('empty-body');
  assert.ok((await c.multiline(`TOP ${e} 0`)).body.equals(onTheWire(messages[e - 1]!.data).bytes));
  await c.command('QUIT');
  c.destroy();
});

test('the raw client keeps stuffing in readMultiline and sees the terminator', { timeout: 120_000 }, async () => {
  const c = await login();
  const n = messages.findIndex((m) => m.name === 'dot-lines') + 1;
  c.send(`RETR ${n}`);
  assert.match(await c.readLine(), /^\+OK/);
  const stuffed = await c.readMultiline();
  assert.ok(stuffed.includes(Buffer.from('\r\n..\r\n...\r\n....\r\n')));
  assert.ok(unstuff(stuffed).equals(onTheWire(messages[n - 1]!.data).bytes));
  assert.ok(c.received().subarray(-5).equals(Buffer.from('\r\n.\r\n')));
  await assert.rejects(c.readLine(200), /timed out after 200 ms/);
  assert.equal(await c.command('NOOP'), '+OK');
  c.destroy();
});

test('IMAP sees the same store', { timeout: 120_000 }, async () => {
  const imap = await imapClient(dovecot, dovecot.users[0]!);
  try {
    const box = await imap.mailboxOpen('INBOX');
    assert.equal(box.exists, messages.length);
    const first = await imap.fetchOne('1', { source: true });
    assert.ok(first && first.source?.equals(onTheWire(messages[0]!.data).bytes));
  } finally {
    await imap.logout();
  }
  const bob = await imapClient(dovecot, dovecot.users[1]!);
  try {
    assert.equal((await bob.mailboxOpen('INBOX')).exists, 0);
  } finally {
    await bob.logout();
  }
});

test('deliveries arrive in order and are picked up by a running session', { timeout: 120_000 }, async () => {
  const bob = dovecot.users[1]!;
  await dovecot.deliver(bob.name, 'Subject: one\nMessage-ID: <one@support>\n\nfirst\n');
  await dovecot.deliver(bob.name, Buffer.from('Subject: two\nMessage-ID: <two@support>\n\nsecond\n'));
  const c = await login(bob.name, bob.password);
  assert.match(await c.command('STAT'), /^\+OK 2 /);
  assert.match((await c.multiline('RETR 1')).body.toString(), /first/);
  assert.match((await c.multiline('RETR 2')).body.toString(), /second/);
  // %08Xu%08Xv: Dovecot writes the hex digits in lower case.
  const uidl = await c.multiline('UIDL');
  assert.match(uidl.body.toString('latin1'), /^1 [0-9a-f]{16}\r\n2 [0-9a-f]{16}\r\n$/);
  assert.match(await c.command('DELE 1'), /^\+OK/);
  assert.match(await c.command('QUIT'), /^\+OK/);
  await c.waitClose();
  const again = await login(bob.name, bob.password);
  assert.match(await again.command('STAT'), /^\+OK 1 /);
  again.destroy();
});

test('closed turns true after QUIT even without a waiting read', { timeout: 120_000 }, async () => {
  const c = await login();
  assert.match(await c.command('QUIT'), /^\+OK/);
  const deadline = Date.now() + 5_000;
  while (!c.closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.ok(c.closed);
  await c.waitClose(100);
  await assert.rejects(c.readLine(1_000), /closed the connection/);
});

// Last: after a failed login Dovecot delays the next authentication from the same address.
test('a wrong password is refused', { timeout: 120_000 }, async () => {
  const c = await RawPop3.connect(dovecot.pop3Port);
  assert.match(await c.command('USER alice'), /^\+OK/);
  assert.match(await c.command('PASS wrong', 20_000), /^-ERR/);
  c.destroy();
});
