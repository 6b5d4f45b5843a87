/**
 * The private Postfix of test/support/postfix.ts, proven with real SMTP clients before the
 * proxy's SMTP submission relies on it: swaks, Python's smtplib and msmtp submit to it, it
 * authenticates them through the test Dovecot (passwords, and XOAUTH2/OAUTHBEARER tokens of the
 * local authorization server), and it delivers by LMTP into the Dovecot store, read back over
 * IMAP. Also its refusals: a message too large, a sender the login does not own, recipients it
 * will not take, and TLS as configured.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { testCerts, type TestCerts } from './support/certs.js';
import { NO_LOGIN_PENALTY, oauth2PassdbConfig, startDovecot, type Dovecot, type TestUser } from './support/dovecot.js';
import { startOAuthServer, type OAuthServer } from './support/oauth-server.js';
import { cannotRunPostfix, dovecotConfigForPostfix, ehloKeywords, startPostfix, type Postfix } from './support/postfix.js';
import { servedMessages, sleep } from './support/private-server.js';

const alice: TestUser = { name: 'alice', password: 'alice-secret' };
const bob: TestUser = { name: 'bob', password: 'bob-secret' };
/** A user named by address, as Microsoft 365 mailboxes are. */
const carol: TestUser = { name: 'carol@contoso.test', password: 'carol-secret' };
const CLIENT_SECRET = 'smtp-app-secret';
const SIZE_LIMIT = 64 * 1024;
const TOOL_TIMEOUT_MS = 30_000;

let work: string;
let certs: TestCerts;
let oauth: OAuthServer;
let dovecot: Dovecot;
/** STARTTLS offered, implicit TLS, size limit, sender login maps, a refused recipient. */
let relay: Postfix;
/** No TLS at all, no sender login maps. */
let plain: Postfix;
/** STARTTLS required before AUTH. */
let strict: Postfix;

interface Ran {
  code: number | null;
  out: string;
}

/** Runs a client program to its end (SIGKILL after TOOL_TIMEOUT_MS); stdout and stderr together. */
function runTool(argv: string[], input: string | Buffer = '', env: NodeJS.ProcessEnv = {}): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { env: { ...process.env, ...env }, timeout: TOOL_TIMEOUT_MS, killSignal: 'SIGKILL' });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString('latin1')));
    child.stderr.on('data', (c: Buffer) => (out += c.toString('latin1')));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out }));
    child.stdin.end(input);
  });
}

/** swaks against a relay's submission port; extra arguments as given. */
function swaks(server: Postfix, args: string[], port = server.port): Promise<Ran> {
  return runTool(['swaks', '--server', server.host, '--port', String(port), '--timeout', '20', '--hide-informational', ...args]);
}

const auth = (u: TestUser) => ['--auth', 'PLAIN', '--auth-user', u.name, '--auth-password', u.password];

/** The message of the user's INBOX with this subject, waiting (bounded) for the LMTP delivery. */
async function arrived(user: TestUser, subject: string, timeoutMs = 20_000): Promise<{ size: number; source: Buffer }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = (await servedMessages(dovecot, user)).messages.find((m) => m.subject === subject);
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`no "${subject}" for ${user.name} within ${timeoutMs} ms\n${relay.log().slice(-3000)}`);
    await sleep(200);
  }
}

async function notArrived(user: TestUser, subject: string): Promise<void> {
  // Long enough for a queued message to reach Dovecot (it takes milliseconds here).
  await sleep(1500);
  const subjects = (await servedMessages(dovecot, user)).messages.map((m) => m.subject);
  assert.ok(!subjects.includes(subject), `"${subject}" reached ${user.name}`);
}

/**
 * The stored message is exactly what was sent, after the trace headers the relay and LMTP put
 * in front (Return-Path, Delivered-To, Received, with their folded lines); returns those.
 */
function assertSentByteForByte(stored: { size: number; source: Buffer }, sent: Buffer): string {
  assert.equal(stored.size, stored.source.length, 'RFC822.SIZE is the length of BODY[]');
  assert.ok(stored.source.length > sent.length);
  assert.ok(stored.source.subarray(stored.source.length - sent.length).equals(sent), `stored:\n${stored.source.toString('latin1')}`);
  const trace = stored.source.subarray(0, stored.source.length - sent.length).toString('latin1');
  for (const line of trace.split('\r\n').slice(0, -1)) assert.match(line, /^(Return-Path: |Delivered-To: |Received: |\t)/);
  return trace;
}

async function tokenFor(subject: string): Promise<string> {
  oauth.addClient({ id: `smtp-app-${subject}`, secret: CLIENT_SECRET, tokenSubject: subject, anyMailbox: false });
  const res = await fetch(oauth.tokenUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', client_id: `smtp-app-${subject}`, client_secret: CLIENT_SECRET, scope: 'https://outlook.office365.com/.default' }),
    signal: AbortSignal.timeout(10_000),
  });
  assert.equal(res.status, 200);
  return ((await res.json()) as { access_token: string }).access_token;
}

/**
 * Python's smtplib: STARTTLS (verifying the test CA), AUTH XOAUTH2 with the token, then one
 * message. Prints OK, or the SMTP error's class, code and text.
 */
const SMTPLIB_XOAUTH2 = `
import os, smtplib, ssl, sys
host, port, user, token = os.environ['HOST'], int(os.environ['PORT']), os.environ['USER_NAME'], os.environ['TOKEN']
message = sys.stdin.buffer.read()
initial = 'user=%s\\x01auth=Bearer %s\\x01\\x01' % (user, token)
try:
    with smtplib.SMTP(host, port, timeout=20) as s:
        s.starttls(context=ssl.create_default_context(cafile=os.environ['CA']))
        s.ehlo()
        # On a refusal Dovecot sends a JSON challenge, answered with an empty response.
        s.auth('XOAUTH2', lambda challenge=None: initial if challenge is None else '')
        s.sendmail(os.environ['FROM'], [os.environ['TO']], message)
    print('OK')
except smtplib.SMTPResponseException as e:
    print(type(e).__name__, e.smtp_code, e.smtp_error.decode())
`;

/** Python's smtplib with password AUTH (SIZE declared at MAIL FROM, as smtplib always does). */
const SMTPLIB_PLAIN = `
import os, smtplib, sys
try:
    with smtplib.SMTP(os.environ['HOST'], int(os.environ['PORT']), timeout=20) as s:
        s.login(os.environ['USER_NAME'], os.environ['PASSWORD'])
        s.sendmail(os.environ['FROM'], [os.environ['TO']], sys.stdin.buffer.read())
    print('OK')
except smtplib.SMTPResponseException as e:
    print(type(e).__name__, e.smtp_code, e.smtp_error.decode())
`;

const skip = cannotRunPostfix();

describe('the private Postfix relay', { skip, timeout: 600_000 }, () => {
  before(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), 'pop3-postfix-support-'));
    certs = await testCerts();
    oauth = await startOAuthServer();
    dovecot = await startDovecot({
      users: [alice, bob, carol],
      extraConfig: [await oauth2PassdbConfig(work, oauth.introspectUrl), NO_LOGIN_PENALTY, dovecotConfigForPostfix()].join('\n'),
    });
    [relay, plain, strict] = await Promise.all([
      startPostfix(dovecot, {
        messageSizeLimit: SIZE_LIMIT,
        senderLoginMaps: true,
        implicitTls: true,
        refuseRecipients: { 'blocked@example.test': '550 5.7.1 Delivery not authorized, message refused' },
      }),
      startPostfix(dovecot, { starttls: 'off' }),
      startPostfix(dovecot, { starttls: 'required' }),
    ]);
  }, { timeout: 120_000 });

  after(async () => {
    await Promise.all([relay?.stop(), plain?.stop(), strict?.stop()]);
    await dovecot?.stop();
    await oauth?.close();
    if (work) await rm(work, { recursive: true, force: true });
  }, { timeout: 60_000 });

  test('swaks submits with AUTH PLAIN as a Dovecot user; the message arrives in the store byte for byte', { timeout: 90_000 }, async () => {
    const subject = 'swaks plain 1';
    // 8-bit bytes, a line swaks must dot-stuff, a tab, and a line longer than SMTP's 998.
    const file = Buffer.concat([
      Buffer.from(`From: Alice <alice@example.test>\r\nTo: bob@example.test, carol@contoso.test\r\nSubject: ${subject}\r\nMessage-ID: <swaks-1@example.test>\r\n`),
      Buffer.from('Content-Type: text/plain; charset=iso-8859-1\r\n\r\ncaf\xe9 \xfcber\r\n.leading dot\r\n\tindented\r\n', 'latin1'),
      Buffer.from(`${'x'.repeat(1500)}\r\nlast line`),
    ]);
    const msgFile = path.join(work, 'swaks-1.eml');
    await writeFile(msgFile, file);
    const r = await swaks(relay, [...auth(alice), '--from', 'alice@example.test', '--to', 'bob@example.test,carol@contoso.test', '--data', `@${msgFile}`]);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /<- {2}235 2\.7\.0 Authentication successful/);
    // swaks ends the data with a CRLF of its own: that is what went over the wire.
    const sent = Buffer.concat([file, Buffer.from('\r\n')]);
    for (const user of [bob, carol]) {
      const trace = assertSentByteForByte(await arrived(user, subject), sent);
      assert.match(trace, new RegExp(`^Return-Path: <alice@example\\.test>\\r\\nDelivered-To: ${relay.address(user).replace(/\./g, '\\.')}\\r\\n`));
      assert.match(trace, /with ESMTPA id/);
    }
    // The stored file has CRLF line ends (mail_save_crlf for LMTP).
    // (in cur/ by now: IMAP has seen it)
    const files = ['new', 'cur'].flatMap((d) => readdirSync(path.join(dovecot.maildir(bob.name), d)).map((f) => path.join(dovecot.maildir(bob.name), d, f)));
    const stored = files.map((f) => readFileSync(f)).find((b) => b.includes(subject));
    assert.ok(stored?.subarray(stored.length - sent.length).equals(sent));
    assert.match(relay.log(), /sasl_method=PLAIN, sasl_username=alice\b/);

    const wrong = await swaks(relay, ['--auth', 'PLAIN', '--auth-user', 'alice', '--auth-password', 'wrong', '--from', 'alice@example.test', '--to', 'bob@example.test']);
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.out, /<\*\* 535 5\.7\.8 Error: authentication failed/);
  });

  test("Python's smtplib does STARTTLS and AUTH XOAUTH2 with a token from the local authorization server", { timeout: 90_000 }, async () => {
    const token = await tokenFor(carol.name);
    const subject = 'smtplib xoauth2 1';
    const message = Buffer.from(`From: carol@contoso.test\r\nTo: alice@example.test\r\nSubject: ${subject}\r\n\r\nsent with a bearer token\r\n`);
    const env = { HOST: relay.host, PORT: String(relay.port), USER_NAME: carol.name, TOKEN: token, CA: certs.ca.certFile, FROM: carol.name, TO: 'alice@example.test' };
    const r = await runTool(['python3', '-c', SMTPLIB_XOAUTH2], message, env);
    assert.equal(r.out.trim(), 'OK');
    const trace = assertSentByteForByte(await arrived(alice, subject), message);
    assert.match(trace, /\(using TLSv1\.[23] with cipher /);
    assert.match(relay.log(), /sasl_method=XOAUTH2, sasl_username=carol@contoso\.test/);
    assert.ok(oauth.introspections.some((i) => i.token === token && i.active), 'Dovecot asked the authorization server');

    // A token the authorization server no longer calls active is refused.
    oauth.revoke(token);
    const refused = await runTool(['python3', '-c', SMTPLIB_XOAUTH2], message, env);
    assert.match(refused.out.trim(), /^SMTPAuthenticationError 535 5\.7\.8 /);
  });

  test('a message larger than messageSizeLimit gets 552 5.3.4, declared or not', { timeout: 90_000 }, async () => {
    const subject = 'too large';
    const big = Buffer.from(`Subject: ${subject}\r\n\r\n${`${'y'.repeat(76)}\r\n`.repeat(Math.ceil((2 * SIZE_LIMIT) / 78))}`);
    assert.ok((await ehloKeywords(relay.port)).includes(`SIZE ${SIZE_LIMIT}`));
    // smtplib declares SIZE=: refused at MAIL FROM.
    const env = { HOST: relay.host, PORT: String(relay.port), USER_NAME: alice.name, PASSWORD: alice.password, FROM: 'alice@example.test', TO: 'bob@example.test' };
    const declared = await runTool(['python3', '-c', SMTPLIB_PLAIN], big, env);
    assert.equal(declared.out.trim(), 'SMTPSenderRefused 552 5.3.4 Message size exceeds fixed limit');
    // swaks declares nothing: refused once the data is in (in other words).
    const msgFile = path.join(work, 'big.eml');
    await writeFile(msgFile, big);
    const undeclared = await swaks(relay, [...auth(alice), '--from', 'alice@example.test', '--to', 'bob@example.test', '--data', `@${msgFile}`]);
    assert.notEqual(undeclared.code, 0);
    assert.match(undeclared.out, /<\*\* 552 5\.3\.4 Error: message file too big/);
    await notArrived(bob, subject);
  });

  test('with senderLoginMaps a sender address the login does not own gets 553 5.7.1; without, it passes', { timeout: 90_000 }, async () => {
    const args = (subject: string) => [...auth(alice), '--from', 'bob@example.test', '--to', 'carol@contoso.test', '--header', `Subject: ${subject}`];
    const refused = await swaks(relay, args('not alice'));
    assert.notEqual(refused.code, 0);
    // Postfix delays the refusal of MAIL FROM to the RCPT TO reply (smtpd_delay_reject).
    assert.match(refused.out, / -> RCPT TO:<carol@contoso\.test>\r?\n<\*\* 553 5\.7\.1 <bob@example\.test>: Sender address rejected: not owned by user alice/);
    await notArrived(carol, 'not alice');
    // Her own address passes the same check.
    const own = await swaks(relay, [...auth(alice), '--from', 'alice@example.test', '--to', 'carol@contoso.test', '--header', 'Subject: alice as alice']);
    assert.equal(own.code, 0, own.out);
    await arrived(carol, 'alice as alice');
    const unchecked = await swaks(plain, args('bob by alice'));
    assert.equal(unchecked.code, 0, unchecked.out);
    await arrived(carol, 'bob by alice');
  });

  test('recipients the relay will not take get a 5xx at RCPT TO', { timeout: 90_000 }, async () => {
    const rcpt = async (to: string) => {
      const r = await swaks(relay, [...auth(alice), '--from', 'alice@example.test', '--to', to, '--quit-after', 'RCPT']);
      assert.notEqual(r.code, 0, r.out);
      return r.out.split('\n').find((l) => l.startsWith('<** '))?.slice(4) ?? r.out;
    };
    // Not a Dovecot user.
    assert.match(await rcpt('nobody@example.test'), /^550 5\.1\.1 <nobody@example\.test>: Recipient address rejected: User unknown in virtual mailbox table/);
    // refuseRecipients.
    assert.match(await rcpt('blocked@example.test'), /^550 5\.7\.1 <blocked@example\.test>: Recipient address rejected: Delivery not authorized, message refused/);
    // Outside the test domains: nothing leaves this machine.
    assert.match(await rcpt('someone@elsewhere.test'), /^554 5\.7\.1 <someone@elsewhere\.test>: Recipient address rejected: Access denied/);
    // Without AUTH nothing is relayed at all (with sender login maps the sender check says so first).
    const anonymous = ['--from', 'alice@example.test', '--to', 'bob@example.test', '--quit-after', 'RCPT'];
    assert.match((await swaks(relay, anonymous)).out, /<\*\* 553 5\.7\.1 <alice@example\.test>: Sender address rejected: not logged in/);
    assert.match((await swaks(plain, anonymous)).out, /<\*\* 554 5\.7\.1 <bob@example\.test>: Recipient address rejected: Access denied/);
  });

  test('STARTTLS and implicit TLS work against the test CA, and TLS is off or required as configured', { timeout: 120_000 }, async () => {
    const tls = ['--tls-verify', '--tls-ca-path', certs.ca.certFile];
    const viaStarttls = await swaks(relay, ['--tls', ...tls, ...auth(bob), '--from', 'bob@example.test', '--to', 'alice@example.test', '--header', 'Subject: over starttls']);
    assert.equal(viaStarttls.code, 0, viaStarttls.out);
    assert.match(viaStarttls.out, /<- {2}220 2\.0\.0 Ready to start TLS/);
    assert.match(assertTrace(await arrived(alice, 'over starttls')), /\(using TLSv1\.[23] with cipher /);

    // Implicit TLS with msmtp, which logs in with OAUTHBEARER through the same Dovecot oauth2 passdb.
    const token = await tokenFor(bob.name);
    const message = 'From: bob@example.test\r\nTo: alice@example.test\r\nSubject: over implicit tls\r\n\r\nhello\r\n';
    const msmtp = await runTool(
      ['msmtp', '--file=/dev/null', `--host=${relay.host}`, `--port=${relay.implicitTlsPort}`, '--tls=on', '--tls-starttls=off', `--tls-trust-file=${certs.ca.certFile}`,
        '--auth=oauthbearer', `--user=${bob.name}`, '--passwordeval=printf %s "$TOKEN"', '--from=bob@example.test', '--', 'alice@example.test'],
      message,
      { TOKEN: token },
    );
    assert.equal(msmtp.code, 0, msmtp.out);
    assert.match(assertTrace(await arrived(alice, 'over implicit tls')), /\(using TLSv1\.[23] with cipher /);
    assert.match(relay.log(), /sasl_method=OAUTHBEARER, sasl_username=bob\b/);

    // An unrelated certificate fails the client's verification.
    const other = await runTool(['swaks', '--server', relay.host, '--port', String(relay.port), '--tls', '--tls-verify', '--tls-ca-path', certs.other.certFile, '--quit-after', 'TLS']);
    assert.notEqual(other.code, 0, other.out);

    // starttls 'off': not offered; a client that insists gives up.
    assert.ok(!(await ehloKeywords(plain.port)).includes('STARTTLS'));
    const insist = await swaks(plain, ['--tls', '--quit-after', 'TLS']);
    assert.notEqual(insist.code, 0);
    assert.match(insist.out, /STARTTLS/);

    // starttls 'required': no AUTH before TLS and no mail; after STARTTLS both.
    const before = await ehloKeywords(strict.port);
    assert.ok(before.includes('STARTTLS') && !before.some((k) => k.startsWith('AUTH')), before.join(' | '));
    const noTls = await swaks(strict, ['--from', 'alice@example.test', '--to', 'bob@example.test', '--quit-after', 'MAIL']);
    assert.match(noTls.out, /<\*\* 530 5\.7\.0 Must issue a STARTTLS command first/);
    const withTls = await swaks(strict, ['--tls', ...tls, ...auth(alice), '--from', 'alice@example.test', '--to', 'bob@example.test', '--header', 'Subject: required tls']);
    assert.equal(withTls.code, 0, withTls.out);
    await arrived(bob, 'required tls');
  });

  test('stop() ends every process of the instance and removes its directory', { timeout: 60_000 }, async () => {
    const extra = await startPostfix(dovecot, { starttls: 'off' });
    const mine = () =>
      readdirSync('/proc')
        .filter((p) => /^\d+$/.test(p))
        .filter((p) => {
          try {
            return readFileSync(`/proc/${p}/environ`, 'latin1').includes(extra.dir) || readFileSync(`/proc/${p}/cmdline`, 'latin1').includes(extra.dir);
          } catch {
            return false;
          }
        });
    assert.ok(mine().length > 0, 'the master and its daemons name their configuration');
    await extra.stop();
    assert.deepEqual(mine(), []);
    assert.ok(!existsSync(extra.dir));
    await assert.rejects(ehloKeywords(extra.port, 2000));
    // The others are untouched.
    assert.ok((await ehloKeywords(relay.port)).length > 0);
  });
});

/** The trace headers in front of a message sent by a client that may change its line ends. */
function assertTrace(stored: { source: Buffer }): string {
  const text = stored.source.toString('latin1');
  return text.slice(0, text.indexOf('\r\n\r\n'));
}
