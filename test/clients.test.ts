/**
 * Real POP3 clients that nobody here wrote download mailboxes through the proxy; what they
 * store is compared with what the IMAP store holds, and the clients that delete leave the
 * store empty.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { corpus } from './support/corpus.js';
import { imapClient, startDovecot, type Dovecot, type TestUser } from './support/dovecot.js';
import { startProxy, type TestProxy } from './support/proxy.js';

const run = promisify(execFile);
const users: TestUser[] = ['curl', 'poplib', 'fetchmail', 'mpop'].map((name) => ({ name, password: `${name}-pw` }));
const messages = corpus();
let dovecot: Dovecot;
let proxy: TestProxy;
let work: string;

before(async () => {
  dovecot = await startDovecot({ users });
  for (const u of users) for (const m of messages) await dovecot.deliver(u.name, m.data);
  proxy = await startProxy({ imapPort: dovecot.imapPort, logLevel: 'info' });
  work = await mkdtemp(path.join(os.tmpdir(), 'pop3-clients-'));
}, { timeout: 120_000 });

after(async () => {
  await proxy?.close();
  await dovecot?.stop();
  if (work) await rm(work, { recursive: true, force: true });
}, { timeout: 60_000 });

const user = (name: string) => users.find((u) => u.name === name)!;

/**
 * Carriage returns dropped and trailing line ends too: clients store line ends their own way,
 * and some drop a bare CR. The byte-exact comparisons are curl's and the differential tests'.
 */
function normalize(data: Buffer): string {
  return data.toString('latin1').replace(/\r/g, '').replace(/\n+$/, '');
}

/** Drops the Received: header a delivering client puts on top of the message. */
function withoutAddedReceived(data: Buffer): Buffer {
  const text = data.toString('latin1');
  const match = /^Received: [^\n]*\n(?:[ \t][^\n]*\n)*/.exec(text);
  return match ? Buffer.from(text.slice(match[0].length), 'latin1') : data;
}

/** Asserts that the stored messages are exactly the corpus, in any order. */
function assertSameAsCorpus(got: Buffer[], client: string): void {
  assert.equal(got.length, messages.length, `${client}: number of messages`);
  const expected = messages.map((m) => normalize(m.data)).sort();
  const actual = got.map(normalize).sort();
  for (let i = 0; i < expected.length; i++) {
    if (actual[i] === expected[i]) continue;
    const a = actual[i]!;
    const e = expected[i]!;
    let at = 0;
    while (at < a.length && a[at] === e[at]) at++;
    const around = (t: string) => JSON.stringify(t.slice(Math.max(0, at - 40), at + 40));
    assert.fail(`${client}: message ${i} differs at ${at} (lengths ${a.length}, ${e.length}): got ${around(a)}, expected ${around(e)}`);
  }
}

async function storeCount(name: string): Promise<number> {
  const imap = await imapClient(dovecot, user(name));
  try {
    const box = await imap.mailboxOpen('INBOX');
    return box.exists;
  } finally {
    await imap.logout().catch(() => undefined);
  }
}

test('curl downloads every message byte for byte', { timeout: 120_000 }, async () => {
  const got: Buffer[] = [];
  const auth = `${user('curl').name}:${user('curl').password}`;
  const list = await run('curl', ['-sS', '--max-time', '60', '-u', auth, `pop3://127.0.0.1:${proxy.port}/`]);
  const count = list.stdout.trim().split('\n').length;
  for (let n = 1; n <= count; n++) {
    const r = await run('curl', ['-sS', '--max-time', '60', '-u', auth, `pop3://127.0.0.1:${proxy.port}/${n}`], { encoding: 'buffer', maxBuffer: 64 << 20 });
    got.push(r.stdout);
  }
  assertSameAsCorpus(got, 'curl');
  // curl keeps the CRLF line ends of the wire: its bytes equal the store's in CRLF form.
  const plain = messages.findIndex((m) => m.data.toString('latin1').endsWith('\n'));
  assert.ok(got[plain]!.equals(Buffer.from(messages[plain]!.data.toString('latin1').replace(/\n/g, '\r\n'), 'latin1')));
});

test('python3 poplib downloads and deletes every message', { timeout: 120_000 }, async () => {
  const script = `
import poplib, sys, json, base64
p = poplib.POP3('127.0.0.1', int(sys.argv[1]), timeout=60)
p.user(sys.argv[2]); p.pass_(sys.argv[3])
count, size = p.stat()
out = []
for n in range(1, count + 1):
    resp, lines, octets = p.retr(n)
    out.append(base64.b64encode(b'\\r\\n'.join(lines)).decode())
    p.dele(n)
p.quit()
print(json.dumps(out))
`;
  const r = await run('python3', ['-c', script, String(proxy.port), 'poplib', user('poplib').password], { maxBuffer: 64 << 20 });
  const got = (JSON.parse(r.stdout) as string[]).map((b) => Buffer.from(b, 'base64'));
  assertSameAsCorpus(got, 'poplib');
  assert.equal(await storeCount('poplib'), 0);
});

test('fetchmail fetches and deletes every message', { timeout: 120_000 }, async () => {
  const dir = path.join(work, 'fetchmail');
  const out = path.join(dir, 'out');
  await mkdir(out, { recursive: true });
  const rc = path.join(dir, 'fetchmailrc');
  await writeFile(rc, [
    `poll 127.0.0.1 with proto POP3 port ${proxy.port} and options no dns`,
    `  user "fetchmail" there with password "${user('fetchmail').password}" is "root" here`,
    `  options fetchall no rewrite sslproto ''`,
    `  mda "/bin/sh -c 'cat > ${out}/msg.$$'"`,
    '',
  ].join('\n'));
  await chmod(rc, 0o600);
  await run('fetchmail', ['-f', rc, '--nodetach', '--silent'], { env: { ...process.env, FETCHMAILHOME: dir, HOME: dir } });
  const files = await readdir(out);
  const got = await Promise.all(files.map(async (f) => withoutAddedReceived(await readFile(path.join(out, f)))));
  assertSameAsCorpus(got, 'fetchmail');
  assert.equal(await storeCount('fetchmail'), 0);
});

test('mpop (pipelining) fetches into a maildir and deletes every message', { timeout: 120_000 }, async () => {
  const dir = path.join(work, 'mpop');
  const maildir = path.join(dir, 'Maildir');
  for (const sub of ['new', 'cur', 'tmp']) await mkdir(path.join(maildir, sub), { recursive: true });
  const rc = path.join(dir, 'mpoprc');
  await writeFile(rc, [
    'account test', 'host 127.0.0.1', `port ${proxy.port}`, 'tls off', 'auth user', 'user mpop',
    `password ${user('mpop').password}`, `delivery maildir ${maildir}`, 'keep off', 'received_header off',
    `uidls_file ${path.join(dir, 'uidls')}`, '',
  ].join('\n'));
  await chmod(rc, 0o600);
  await run('mpop', ['-C', rc, '-a', '-q']);
  const files = await readdir(path.join(maildir, 'new'));
  const got = await Promise.all(files.map((f) => readFile(path.join(maildir, 'new', f))));
  assertSameAsCorpus(got, 'mpop');
  assert.equal(await storeCount('mpop'), 0);
});
