/**
 * Deletion against a server that expunges a message as soon as it is flagged \Deleted (Gmail
 * with "Auto-Expunge on", played by test/support/gmail-relay.ts in front of Dovecot): DELE and
 * RSET must not touch the store, a dropped client must lose nothing, QUIT removes exactly the
 * deleted messages, and flagOnDele falls back to flag-at-QUIT there (with a log line). Every
 * check reads the store directly from Dovecot, not through the relay.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, beforeEach, test } from 'node:test';
import { ImapFlow } from 'imapflow';
import { emptyMailbox, mailboxState, startDovecot, type Dovecot } from './support/dovecot.js';
import { startGmailRelay, type GmailRelay } from './support/gmail-relay.js';
import { RawPop3 } from './support/pop3-client.js';
import { settled, startProxy, type TestProxy } from './support/proxy.js';

const GMAIL_LOG = 'expunges flagged messages at once';
const TEST = { timeout: 90_000 };
const alice = { name: 'alice', password: 'alice-secret' };

let dovecot: Dovecot;
let relay: GmailRelay;
/** Default policy, through the relay. */
let gmail: TestProxy;
/** flagOnDele, through the relay. */
let gmailFlag: TestProxy;
/** flagOnDele, straight to Dovecot. */
let plainFlag: TestProxy;

before(async () => {
  dovecot = await startDovecot();
  relay = await startGmailRelay(dovecot.imapPort);
  gmail = await startProxy({ imapPort: relay.port });
  gmailFlag = await startProxy({ imapPort: relay.port, policy: { flagOnDele: true } });
  plainFlag = await startProxy({ imapPort: dovecot.imapPort, policy: { flagOnDele: true } });
}, { timeout: 120_000 });

after(async () => {
  await gmail?.close();
  await gmailFlag?.close();
  await plainFlag?.close();
  await relay?.close();
  await dovecot?.stop();
}, { timeout: 60_000 });

/** Rejects when `promise` does not settle within `ms`. */
async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}


/** Empties alice's INBOX and fills it with `count` small messages. */
async function resetMailbox(count: number): Promise<void> {
  await emptyMailbox(dovecot, alice);
  for (let i = 1; i <= count; i++) await dovecot.deliver('alice', `Subject: message ${i}\nMessage-ID: <m${i}@gmail>\n\nbody ${i}\n`);
}

/** Subjects and flags of every message in the store, by UID order. */
const storeState = () => within(20_000, 'IMAP check', mailboxState(dovecot, alice));

const subjects = (state: Array<{ subject: string }>) => state.map((s) => s.subject);
const flagged = (state: Array<{ subject: string; deleted: boolean }>) => state.filter((s) => s.deleted).map((s) => s.subject);
const ALL = ['message 1', 'message 2', 'message 3', 'message 4', 'message 5'];
const login = (proxy: TestProxy) => within(30_000, 'POP3 login', RawPop3.login(proxy.port, alice.name, alice.password));

/**
 * A message whose body looks like IMAP to anything that does not skip literals: literal
 * markers at line ends, tagged and untagged responses, a capability line, dot lines. About
 * `size` bytes, CRLF line ends.
 */
function trickyMessage(id: string, size: number): Buffer {
  const head = [`Subject: tricky ${id}`, `Message-ID: <${id}@gmail>`, '', ''].join('\r\n');
  const lines = [
    '{123}',
    '.',
    '..',
    '.starts with a dot',
    'a line that ends in a literal {5}',
    'and another {7+}',
    '* CAPABILITY IMAP4rev1 UIDPLUS',
    '* OK [CAPABILITY IMAP4rev1] fake',
    '* 3 EXPUNGE',
    'gm1 OK fake',
    'e OK fake',
    '',
  ];
  const body: string[] = [];
  for (let i = 0; head.length + body.join('\r\n').length < size; i++) body.push(...lines, `line ${i} ${'x'.repeat(60)}`);
  return Buffer.from(`${head}${body.join('\r\n')}\r\n`, 'latin1');
}

beforeEach(async () => {
  for (const p of [gmail, gmailFlag, plainFlag]) await within(30_000, 'settling', settled(p));
  await resetMailbox(5);
}, { timeout: 120_000 });

test('the relay auto-expunges: an IMAP client that flags \\Deleted sees the message gone at once', TEST, async () => {
  const imap = new ImapFlow({ host: '127.0.0.1', port: relay.port, secure: false, doSTARTTLS: false, auth: { user: alice.name, pass: alice.password }, logger: false });
  imap.on('error', () => undefined);
  const before = { expunged: relay.expunged, autoExpunges: relay.autoExpunges };
  try {
    await within(20_000, 'connect', imap.connect());
    assert.ok(imap.capabilities.has('X-GM-EXT-1'), 'the relay advertises X-GM-EXT-1');
    await within(20_000, 'open', imap.mailboxOpen('INBOX'));
    // fetchOne sends X-GM-MSGID because of X-GM-EXT-1: the relay must keep Dovecot from refusing it.
    const second = await within(20_000, 'fetch', imap.fetchOne('2', { uid: true }));
    assert.ok(second && second.uid > 0);
    // UID STORE: the relay answers with UID EXPUNGE of the same set.
    assert.equal(await within(20_000, 'uid store', imap.messageFlagsAdd(String(second.uid), ['\\Deleted'], { uid: true })), true);
    let state = await storeState();
    assert.deepEqual(subjects(state), ['message 1', 'message 3', 'message 4', 'message 5']);
    assert.deepEqual(flagged(state), []);
    // Plain STORE by sequence number: the relay answers with EXPUNGE.
    assert.equal(await within(20_000, 'store', imap.messageFlagsAdd('1', ['\\Deleted'])), true);
    state = await storeState();
    assert.deepEqual(subjects(state), ['message 3', 'message 4', 'message 5']);
    assert.deepEqual(flagged(state), []);
    assert.equal((imap.mailbox as { exists: number }).exists, 3, 'the client was told of both expunges');
    assert.equal(relay.expunged - before.expunged, 2);
    assert.equal(relay.autoExpunges - before.autoExpunges, 2);
  } finally {
    await within(10_000, 'logout', imap.logout()).catch(() => imap.close());
  }
});

test('the relay on the wire: literals both ways, byte-exact FETCH in tiny chunks, EXPUNGE before the held STORE OK', TEST, async () => {
  const message = trickyMessage('wire', 300_000);
  await dovecot.deliver('alice', message);
  const socket = net.connect(relay.port, '127.0.0.1');
  socket.setNoDelay(true);
  let received = Buffer.alloc(0);
  socket.on('data', (d: Buffer) => (received = Buffer.concat([received, d])));
  socket.on('error', () => undefined);
  /** Waits until the output holds `text` (a tagged reply), or fails after 15 s. */
  const waitFor = async (text: string) => {
    for (let i = 0; i < 600; i++) {
      if (received.includes(text, 0, 'latin1')) return;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`no ${JSON.stringify(text)} from the relay; got ${JSON.stringify(received.subarray(-300).toString('latin1'))}`);
  };
  /** Writes in 1-byte pieces, each its own TCP write. */
  const trickle = async (text: string) => {
    for (const byte of Buffer.from(text, 'latin1')) {
      socket.write(Buffer.of(byte));
      await new Promise((r) => setImmediate(r));
    }
  };
  try {
    await waitFor('\r\n');
    assert.match(received.toString('latin1').split('\r\n')[0]!, /^\* OK \[CAPABILITY [^\]]* X-GM-EXT-1\]/);
    // A non-synchronizing literal for the password.
    await trickle('a LOGIN alice {12+}\r\nalice-secret\r\n');
    await waitFor('\r\na OK');
    await trickle('b CAPABILITY\r\n');
    await waitFor('\r\nb OK');
    const caps = /\* CAPABILITY ([^\r\n]*)\r\n/.exec(received.toString('latin1'))?.[1] ?? '';
    assert.match(caps, / X-GM-EXT-1$/);
    assert.doesNotMatch(caps, /COMPRESS/);
    await trickle('c SELECT INBOX\r\n');
    await waitFor('\r\nc OK');
    const start = received.length;
    await trickle('d FETCH 6 (UID BODY.PEEK[] X-GM-MSGID)\r\n');
    await waitFor('\r\nd OK');
    const reply = received.subarray(start);
    const m = /^\* 6 FETCH \(UID (\d+) BODY\[\] \{(\d+)\}\r\n/.exec(reply.toString('latin1'));
    assert.ok(m, `a FETCH response with a literal: ${JSON.stringify(reply.subarray(0, 100).toString('latin1'))}`);
    const literalStart = m[0].length;
    const body = reply.subarray(literalStart, literalStart + Number(m[2]));
    assert.ok(body.equals(message), `the body arrives byte-exact (${body.length} of ${message.length} bytes)`);
    // STORE and a pipelined NOOP: the expunge comes before the STORE's OK, the NOOP after it,
    // and the relay's own tagged reply never reaches the client.
    const uid = m[1]!;
    const at = received.length;
    socket.write(`e UID STORE ${uid} +FLAGS.SILENT (\\Deleted)\r\nf NOOP\r\n`);
    await waitFor('\r\nf OK');
    const lines = received.subarray(at).toString('latin1').split('\r\n');
    const expunge = lines.findIndex((l) => /^\* 6 EXPUNGE$/.test(l));
    const storeOk = lines.findIndex((l) => l.startsWith('e OK'));
    const noopOk = lines.findIndex((l) => l.startsWith('f OK'));
    assert.ok(expunge >= 0 && expunge < storeOk && storeOk < noopOk, `order of replies: ${JSON.stringify(lines)}`);
    assert.equal(lines.some((l) => l.startsWith('gm')), false, 'the relay\'s own tagged reply is swallowed');
    socket.write('g LOGOUT\r\n');
    await waitFor('\r\ng OK');
  } finally {
    socket.destroy();
  }
  const state = await storeState();
  assert.deepEqual(subjects(state), ALL);
  assert.deepEqual(flagged(state), []);
});

test('RETR through proxy and relay is byte-exact: the same bytes as Dovecot\'s own POP3', TEST, async () => {
  await dovecot.deliver('alice', trickyMessage('small', 3_000));
  await dovecot.deliver('alice', trickyMessage('large', 400_000));
  const retr = async (port: number, n: number) => {
    const c = await within(30_000, 'POP3 login', RawPop3.login(port, alice.name, alice.password));
    try {
      assert.match(await c.command(`RETR ${n}`, 30_000), /^\+OK/);
      return await c.readMultiline(30_000);
    } finally {
      await c.command('QUIT').catch(() => undefined);
      c.destroy();
    }
  };
  for (const n of [6, 7]) {
    const proxied = await retr(gmail.port, n);
    await within(30_000, 'settling', settled(gmail));
    const native = await retr(dovecot.pop3Port, n);
    assert.ok(native.length > 1000);
    assert.ok(proxied.equals(native), `message ${n}: ${proxied.length} bytes through the relay, ${native.length} from Dovecot`);
  }
});

for (const [mode, proxy] of [['default', () => gmail], ['flagOnDele', () => gmailFlag]] as const) {
  const gmailLogged = () => {
    if (mode === 'flagOnDele') assert.ok(proxy().log().includes(GMAIL_LOG), `the proxy logs that it falls back ("${GMAIL_LOG}")`);
  };

  test(`Gmail, ${mode}: a client that drops after DELE 1 loses nothing and leaves no flag`, TEST, async () => {
    const c = await login(proxy());
    assert.match(await c.command('DELE 1'), /^\+OK/);
    c.destroy();
    await within(30_000, 'settling', settled(proxy()));
    const state = await storeState();
    assert.deepEqual(subjects(state), ALL);
    assert.deepEqual(flagged(state), []);
    gmailLogged();
  });

  test(`Gmail, ${mode}: DELE 1, RSET, QUIT leaves the INBOX intact and unflagged`, TEST, async () => {
    const c = await login(proxy());
    assert.match(await c.command('DELE 1'), /^\+OK/);
    assert.match(await c.command('RSET'), /^\+OK/);
    assert.match(await c.command('STAT'), /^\+OK 5 /);
    assert.match(await c.command('QUIT'), /^\+OK/);
    await c.waitClose();
    const state = await storeState();
    assert.deepEqual(subjects(state), ALL);
    assert.deepEqual(flagged(state), []);
    gmailLogged();
  });

  test(`Gmail, ${mode}: DELE 2, QUIT removes exactly message 2`, TEST, async () => {
    const c = await login(proxy());
    assert.match(await c.command('DELE 2'), /^\+OK/);
    assert.match(await c.command('QUIT', 30_000), /^\+OK/);
    await c.waitClose();
    const state = await storeState();
    assert.deepEqual(subjects(state), ['message 1', 'message 3', 'message 4', 'message 5']);
    assert.deepEqual(flagged(state), []);
    gmailLogged();
  });
}

test('plain Dovecot, flagOnDele: \\Deleted is stored at DELE and taken back at RSET; QUIT removes exactly that message', TEST, async () => {
  const c = await login(plainFlag);
  assert.match(await c.command('DELE 2'), /^\+OK/);
  assert.deepEqual(flagged(await storeState()), ['message 2'], 'flagged at DELE, before QUIT');
  assert.match(await c.command('DELE 4'), /^\+OK/);
  assert.deepEqual(flagged(await storeState()), ['message 2', 'message 4']);
  assert.match(await c.command('RSET'), /^\+OK/);
  assert.deepEqual(flagged(await storeState()), [], 'RSET takes the flags back');
  assert.match(await c.command('DELE 2'), /^\+OK/);
  assert.deepEqual(flagged(await storeState()), ['message 2']);
  assert.match(await c.command('QUIT', 30_000), /^\+OK/);
  await c.waitClose();
  const state = await storeState();
  assert.deepEqual(subjects(state), ['message 1', 'message 3', 'message 4', 'message 5']);
  assert.deepEqual(flagged(state), []);
  assert.equal(plainFlag.log().includes(GMAIL_LOG), false, 'no Gmail fallback on plain Dovecot');
});
