/**
 * Password-only applications sending mail through the proxy to a relay that takes only tokens,
 * as Microsoft 365 and Google Workspace will: each client logs in to the proxy's SMTP with its
 * local password (the users file), the proxy fetches a token from the real local authorization
 * server by the profile's grant and logs in to a real Postfix with AUTH XOAUTH2, and Postfix
 * checks that token through Dovecot's oauth2 passdb (which asks the authorization server) and
 * delivers by LMTP. Every delivery is compared with what the client sent, byte for byte. The
 * clients are real: Python's smtplib, msmtp, curl and swaks.
 */
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, beforeEach, test } from 'node:test';
import { corpus, mimeMessage } from './support/corpus.js';
import { RawPop3 } from './support/pop3-client.js';
import { cannotRunPostfix } from './support/postfix.js';
import type { TestProxy } from './support/proxy.js';
import { bob, LOCAL, MAILBOX, SMTP_SCOPE_DELEGATED, startSmtpWorld, type SmtpWorld } from './support/smtp-world.js';
import { assertDelivered, closedPort, crlf, curlSmtp, msmtp, swaks, testMessage } from './support/smtp-tools.js';
import { smtplibSession, stepReply, type SmtpReport } from './support/smtplib-client.js';

const TEST = { timeout: 180_000 };
const HOOK = { timeout: 180_000 };
const skip = cannotRunPostfix();
type Local = (typeof LOCAL)[keyof typeof LOCAL];

let world: SmtpWorld;
/** One proxy for the tests that do not need an empty token cache of their own. */
let proxy: TestProxy;

before(async () => {
  if (skip) return;
  world = await startSmtpWorld();
  proxy = await world.proxy();
}, HOOK);

after(async () => {
  await proxy?.close();
  await world?.close();
}, HOOK);

beforeEach(async () => {
  if (!skip) await world.emptyMailboxes();
}, HOOK);

/** smtplib with the local password, from the login's mailbox to bob. */
function submit(via: TestProxy, who: Local, message: Buffer, extra: Partial<Parameters<typeof smtplibSession>[0]> = {}): Promise<SmtpReport> {
  return smtplibSession({ port: via.smtpPort!, user: who.login, password: who.password, from: who.mailbox, to: ['bob@example.test'], message, ...extra });
}

const tokenRequests = () => world.oauth.tokenRequests.length;
const relayConnections = () => (world.postfix.log().match(/postfix\/submission\/smtpd\[\d+\]: connect from/g) ?? []).length;
/** What a reply may never say: which server, which port, what the token endpoint answered. */
const SERVER_DETAILS = /127\.0\.0\.1|localhost|:\d{2,5}\b|https?:|oauth|token|503|unavailable|refused|ECONN/i;

test('client credentials (secret): smtplib logs in with its local password, the proxy sends XOAUTH2, the message arrives byte for byte; POP3 and SMTP share the token', { ...TEST, skip }, async (t) => {
  const before = tokenRequests();
  const relays = relayConnections();
  const sent = testMessage('client credentials', MAILBOX.invoices.name);
  const report = await submit(proxy, LOCAL.erp, sent);
  assert.equal(report.error, undefined);
  assert.match(stepReply(report, 'auth')!, /^235 2\.7\.0 /);
  assert.match(stepReply(report, 'data')!, /^250 2\.0\.0 Ok: queued as \w+/, "the relay's own reply");
  const trace = assertDelivered((await world.arrived(bob))[0]!, sent);
  assert.match(trace, /^Return-Path: <invoices@contoso\.test>\r\n/);
  assert.match(world.postfix.log(), /sasl_method=XOAUTH2, sasl_username=invoices@contoso\.test/);
  assert.equal(relayConnections() - relays, 1, 'one relay connection, counted from the relay\'s log');
  t.diagnostic(`smtplib saw: ${report.steps.map((s) => `${s.step}: ${s.code} ${s.text.split('\n')[0]}`).join(' | ')}`);
  t.diagnostic(`stored: ${trace.split('\r\n').filter((l) => /^[A-Z]/.test(l)).map((l) => l.slice(0, 60)).join(' / ')} + the ${sent.length} octets sent`);
  const made = world.oauth.tokenRequests.slice(before);
  assert.deepEqual(made.map((r) => [r.grantType, r.authMethod, r.scope, r.status]), [['client_credentials', 'client_secret_post', 'https://outlook.office365.com/.default', 200]]);
  // The same cache serves the next SMTP session and a POP3 login.
  assert.match(stepReply(await submit(proxy, LOCAL.erp, testMessage('again', MAILBOX.invoices.name)), 'data')!, /^250 /);
  const pop = await RawPop3.login(proxy.port, LOCAL.erp.login, LOCAL.erp.password);
  assert.match(await pop.command('QUIT'), /^\+OK/);
  pop.destroy();
  assert.equal(tokenRequests() - before, 1, 'one token for two SMTP sessions and a POP3 one');
});

test('client credentials (certificate): swaks logs in; the assertion is private_key_jwt; the message arrives byte for byte', { ...TEST, skip }, async () => {
  const before = tokenRequests();
  const message = testMessage('certificate', MAILBOX.invoices.name);
  const r = await swaks({ port: proxy.smtpPort!, user: LOCAL.scanner.login, secret: LOCAL.scanner.password, from: MAILBOX.invoices.name, to: 'bob@example.test', message }, world.work);
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /<- {2}235 2\.7\.0 /);
  assertDelivered((await world.arrived(bob))[0]!, r.sent);
  assert.deepEqual(world.oauth.tokenRequests.slice(before).map((t) => [t.grantType, t.authMethod, t.status]), [['client_credentials', 'private_key_jwt', 200]]);
});

test('JWT bearer (service account): msmtp logs in; the token is the mailbox\'s own (sub); the message arrives byte for byte', { ...TEST, skip }, async () => {
  const before = tokenRequests();
  const message = testMessage('jwt bearer', MAILBOX.support.name);
  const r = await msmtp({ port: proxy.smtpPort!, user: LOCAL.helpdesk.login, secret: LOCAL.helpdesk.password, from: MAILBOX.support.name, to: 'bob@example.test', message });
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /<-- 235 2\.7\.0 /);
  assertDelivered((await world.arrived(bob))[0]!, message);
  const made = world.oauth.tokenRequests.slice(before);
  assert.deepEqual(made.map((t) => [t.grantType, t.subject, t.scope, t.status]), [['urn:ietf:params:oauth:grant-type:jwt-bearer', MAILBOX.support.name, 'https://mail.google.com/', 200]]);
  assert.match(world.postfix.log(), /sasl_method=XOAUTH2, sasl_username=support@fabrikam\.test/);
});

test('refresh token: curl logs in; the token is asked with the profile\'s smtp-scope, the rotated refresh token is saved; byte for byte', { ...TEST, skip }, async () => {
  const storeDir = path.join(world.work, 'tokens');
  const [file] = await readdir(storeDir);
  const saved = await readFile(path.join(storeDir, file!), 'utf8');
  const before = tokenRequests();
  const message = testMessage('refresh token', MAILBOX.ceo.name);
  const r = await curlSmtp({ port: proxy.smtpPort!, user: LOCAL.assistant.login, secret: LOCAL.assistant.password, from: MAILBOX.ceo.name, to: 'bob@example.test', message }, world.work);
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /< 235 2\.7\.0 /);
  assertDelivered((await world.arrived(bob))[0]!, message);
  const made = world.oauth.tokenRequests.slice(before);
  assert.deepEqual(made.map((t) => [t.grantType, t.subject, t.scope, t.status]), [['refresh_token', MAILBOX.ceo.name, SMTP_SCOPE_DELEGATED, 200]]);
  assert.notEqual(await readFile(path.join(storeDir, file!), 'utf8'), saved, 'the rotated refresh token replaced the used one');
});

test('a wrong local password, an unknown login, another user\'s password: 535 5.7.8, and neither a token request nor a relay connection', { ...TEST, skip }, async () => {
  const tokens = tokenRequests();
  const relays = relayConnections();
  const message = testMessage('wrong', MAILBOX.invoices.name);
  for (const [user, password] of [[LOCAL.erp.login, 'wrong'], ['nobody@contoso.test', LOCAL.erp.password], [LOCAL.helpdesk.login, LOCAL.erp.password]] as const) {
    const report = await smtplibSession({ port: proxy.smtpPort!, user, password, from: MAILBOX.invoices.name, to: ['bob@example.test'], message });
    assert.match(stepReply(report, 'auth')!, /^535 5\.7\.8 Authentication credentials invalid$/, user);
  }
  const viaCurl = await curlSmtp({ port: proxy.smtpPort!, user: LOCAL.assistant.login, secret: 'wrong', from: MAILBOX.ceo.name, to: 'bob@example.test', message }, world.work);
  assert.notEqual(viaCurl.code, 0);
  assert.match(viaCurl.out, /< 535 5\.7\.8 /);
  assert.equal(tokenRequests(), tokens, 'no token request for a client the proxy refused');
  assert.equal(relayConnections(), relays, 'the relay was never asked');
  await world.nothingArrived(bob, 500);
});

test("a client's own AUTH XOAUTH2 is passed on as it is: curl and msmtp with their own tokens; a revoked one is the client's 535", { ...TEST, skip }, async () => {
  world.oauth.addClient({ id: 'own-app', secret: 'own-secret', tokenSubject: MAILBOX.invoices.name, anyMailbox: false });
  const ownToken = async () => {
    const res = await fetch(world.oauth.tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', client_id: 'own-app', client_secret: 'own-secret', scope: 'https://outlook.office365.com/.default' }),
      signal: AbortSignal.timeout(10_000),
    });
    assert.equal(res.status, 200);
    return ((await res.json()) as { access_token: string }).access_token;
  };
  const [first, second] = [await ownToken(), await ownToken()];
  const before = tokenRequests();
  const one = testMessage('own token curl', MAILBOX.invoices.name);
  const job = { port: proxy.smtpPort!, user: MAILBOX.invoices.name, bearer: true, from: MAILBOX.invoices.name, to: 'bob@example.test' };
  const viaCurl = await curlSmtp({ ...job, secret: first, message: one }, world.work);
  assert.equal(viaCurl.code, 0, viaCurl.out);
  assert.match(viaCurl.out, /> AUTH XOAUTH2\r?\n< 334/);
  const two = testMessage('own token msmtp', MAILBOX.invoices.name);
  const viaMsmtp = await msmtp({ ...job, secret: second, message: two });
  assert.equal(viaMsmtp.code, 0, viaMsmtp.out);
  const inbox = await world.arrived(bob, 2);
  assertDelivered(inbox[0]!, one);
  assertDelivered(inbox[1]!, two);
  assert.equal(tokenRequests(), before, 'the proxy fetched no token of its own');
  for (const token of [first, second]) assert.ok(world.oauth.introspections.some((i) => i.token === token && i.active), 'Dovecot was asked about the client\'s own token');

  world.oauth.revoke(first);
  const refused = await smtplibSession({ port: proxy.smtpPort!, user: MAILBOX.invoices.name, accessToken: first, from: MAILBOX.invoices.name, to: ['bob@example.test'], message: one });
  assert.match(stepReply(refused, 'auth')!, /^535 5\.7\.8 /);
  assert.equal(tokenRequests(), before);
});

test('the token endpoint down (503) or unreachable: AUTH gets 454 4.7.0, never a 5xx, naming no server; back up, the login works', { ...TEST, skip }, async (t) => {
  const unreachable = structuredClone(world.profiles);
  (unreachable.m365!.auth as Record<string, unknown>)['token-url'] = `http://127.0.0.1:${await closedPort()}/token`;
  for (const [what, profiles] of [['503', world.profiles], ['unreachable', unreachable]] as const) {
    const own = await world.proxy({ profiles });
    world.oauth.setDown(what === '503');
    try {
      const started = performance.now();
      const report = await submit(own, LOCAL.erp, testMessage(`down ${what}`, MAILBOX.invoices.name));
      const auth = stepReply(report, 'auth')!;
      assert.match(auth, /^454 4\.7\.0 Temporary authentication failure, try again later$/, what);
      assert.doesNotMatch(auth.slice(4), SERVER_DETAILS, `the reply says nothing of the server (${what})`);
      const took = Math.round(performance.now() - started);
      assert.ok(took < 30_000, `answered after ${took} ms`);
      t.diagnostic(`token endpoint ${what}: AUTH answered "${auth}" after ${took} ms`);
      assert.match(own.log(), /Login not completed \(token\)/);
    } finally {
      world.oauth.setDown(false);
    }
    if (what === '503') assert.match(stepReply(await submit(own, LOCAL.erp, testMessage('back up', MAILBOX.invoices.name)), 'data')!, /^250 /, 'back up');
    await own.close();
  }
  assert.equal((await world.arrived(bob)).length, 1, 'only the message sent once the endpoint was back');
});

test('a cached token revoked at the authorization server: the relay refuses it, one fresh token is fetched, the client sees only 235 and 250', { ...TEST, skip }, async () => {
  const own = await world.proxy();
  try {
    assert.match(stepReply(await submit(own, LOCAL.helpdesk, testMessage('first', MAILBOX.support.name)), 'data')!, /^250 /);
    const cached = world.oauth.issued.at(-1)!;
    assert.equal(cached.subject, MAILBOX.support.name);
    world.oauth.revoke(cached.accessToken);
    const before = tokenRequests();
    const sent = testMessage('after revocation', MAILBOX.support.name);
    const report = await submit(own, LOCAL.helpdesk, sent);
    assert.match(stepReply(report, 'auth')!, /^235 /);
    assert.match(stepReply(report, 'data')!, /^250 /);
    assert.equal(tokenRequests() - before, 1, 'one fresh token');
    assert.ok(world.oauth.introspections.some((i) => i.token === cached.accessToken && !i.active), 'the relay was offered the revoked token and refused it');
    assertDelivered((await world.arrived(bob, 2))[1]!, sent);
  } finally {
    await own.close();
  }
});

test('a relay that refuses every token (the app lacks the mailbox permission): one fresh token, then 454 4.7.0, nothing sent', { ...TEST, skip }, async () => {
  world.oauth.addClient({ id: 'proxy-app-limited', secret: 'limited-secret', anyMailbox: false, tokenSubject: 'someone-else@contoso.test' });
  const profiles = structuredClone(world.profiles);
  const auth = profiles.m365!.auth as Record<string, unknown>;
  Object.assign(auth, { 'client-id': 'proxy-app-limited', 'client-secret-file': await world.file('limited-secret', 'limited-secret\n') });
  const own = await world.proxy({ profiles });
  try {
    const before = tokenRequests();
    const report = await submit(own, LOCAL.erp, testMessage('refused token', MAILBOX.invoices.name));
    const reply = stepReply(report, 'auth')!;
    assert.match(reply, /^454 4\.7\.0 Temporary authentication failure, try again later$/);
    assert.doesNotMatch(reply.slice(4), SERVER_DETAILS);
    assert.deepEqual(world.oauth.tokenRequests.slice(before).map((t) => [t.grantType, t.status]), [['client_credentials', 200], ['client_credentials', 200]]);
    assert.match(own.log(), /Login not completed \(token\): the relay refused the login: 535 5\.7\.8/);
  } finally {
    await own.close();
  }
  await world.nothingArrived(bob, 500);
});

test('send-as: an address of the login\'s send-as list is taken as MAIL FROM; another address gets 553 5.7.1 before the relay is asked', { ...TEST, skip }, async () => {
  const sent = testMessage('send as', 'billing@contoso.test');
  const report = await submit(proxy, LOCAL.erp, sent, { from: 'Billing@Contoso.test' });
  assert.match(stepReply(report, 'mail')!, /^250 /);
  assert.match(stepReply(report, 'data')!, /^250 /);
  assert.match(assertDelivered((await world.arrived(bob))[0]!, sent), /^Return-Path: <Billing@Contoso\.test>\r\n/, 'the envelope sender as given');

  const logAt = world.postfix.log().length;
  const refused = await submit(proxy, LOCAL.erp, testMessage('not mine', MAILBOX.ceo.name), { from: MAILBOX.ceo.name });
  assert.match(stepReply(refused, 'auth')!, /^235 /);
  assert.match(stepReply(refused, 'mail')!, /^553 5\.7\.1 Sender address not allowed for this login$/);
  assert.match(proxy.log(), /Sender <ceo@delegated\.test> refused: not an address of this login/);
  // Postfix counts each session's commands when it ends: this one had no MAIL.
  let ended: string | undefined;
  for (let i = 0; i < 50 && ended === undefined; i++, await new Promise((r) => setTimeout(r, 100))) {
    ended = /disconnect from \S+ (.*)/.exec(world.postfix.log().slice(logAt))?.[1];
  }
  assert.ok(ended !== undefined && /auth=1/.test(ended) && !/mail=/.test(ended), `the relay's session: ${ended}`);
  assert.equal((await world.stored(bob)).length, 1);
});

test('a 5 MB base64 attachment arrives byte for byte (smtplib, SIZE declared)', { ...TEST, skip }, async () => {
  const sent = crlf(mimeMessage(5, 5 * 1024 * 1024));
  const started = performance.now();
  const report = await submit(proxy, LOCAL.erp, sent);
  assert.match(stepReply(report, 'data')!, /^250 /);
  const inbox = await world.arrived(bob, 1, 60_000);
  assertDelivered(inbox[0]!, sent);
  process.stdout.write(`# 5 MB submission: ${sent.length} octets, ${Math.round(performance.now() - started)} ms to the store\n`);
});

test('the corpus (dot lines, 8-bit, long lines, no final line end, 3 MB MIME) byte for byte; a lone CR is refused with 554 5.6.0', { ...TEST, skip }, async () => {
  const delivered: string[] = [];
  for (const m of corpus()) {
    await world.emptyMailboxes();
    const message = crlf(m.data);
    const report = await submit(proxy, LOCAL.helpdesk, message, { from: MAILBOX.support.name });
    if (/\r(?!\n)/.test(message.toString('latin1'))) {
      assert.match(stepReply(report, 'data')!, /^554 5\.6\.0 /, m.name);
      await world.nothingArrived(bob, 1000);
      continue;
    }
    assert.match(stepReply(report, 'data')!, /^250 /, m.name);
    // smtplib ends a message without a final line end with CRLF: that is what went over the wire.
    const sent = message.subarray(-2).toString() === '\r\n' ? message : Buffer.concat([message, Buffer.from('\r\n')]);
    assertDelivered((await world.arrived(bob, 1, 30_000))[0]!, sent);
    delivered.push(m.name);
  }
  assert.equal(delivered.length, corpus().length - 1, `delivered: ${delivered.join(', ')}`);
});
