/**
 * Password-only POP3 clients in front of backends that take only OAuth tokens, as Microsoft
 * 365 and Google Workspace do: the proxy checks the client against its own users, fetches a
 * token itself (client credentials with a secret or a certificate, a Google service account's
 * JWT bearer grant, a refresh token obtained once with `oauth-login`) from a real local
 * authorization server, and logs in with XOAUTH2 to a Dovecot whose oauth2 passdb asks that
 * server about every token. Routing sends each login domain to its own backend.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { stringify as toYaml } from 'yaml';
import { hashPassword } from '../src/auth/password-hash.js';
import { NO_LOGIN_PENALTY, oauth2PassdbConfig, startDovecot, type Dovecot } from './support/dovecot.js';
import { startOAuthServer, type OAuthServer } from './support/oauth-server.js';
import { RawPop3 } from './support/pop3-client.js';
import { startProxy, type TestProxy } from './support/proxy.js';

const run = promisify(execFile);
const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/cli.js');

const CLIENT_SECRET = 'm365-client-secret-value';
const STORE_KEY = 'ab'.repeat(32);
/** Cheap hashes for tests; production hashes use the default cost. */
const FAST = { ln: 10, r: 8, p: 1 };

const mailboxes = {
  invoices: { name: 'invoices@contoso.test', password: 'never-used-by-the-proxy' },
  support: { name: 'support@fabrikam.test', password: 'never-used-by-the-proxy' },
  ceo: { name: 'ceo@delegated.test', password: 'never-used-by-the-proxy' },
  plain: { name: 'plain@other.test', password: 'plain-pw' },
};

let work: string;
let oauth: OAuthServer;
let dovecot: Dovecot;
/** A second backend, for routing: password logins only. */
let other: Dovecot;
let configFile: string;
let profiles: Record<string, unknown>;
let routes: Record<string, string>;
let usersFile: string;

before(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), 'pop3-oauth-logins-'));
  oauth = await startOAuthServer();
  oauth.addClient({ id: 'proxy-app', secret: CLIENT_SECRET });
  const certificate = await oauth.generateClientCertificateKey();
  oauth.addClient({ id: 'proxy-app-cert', publicKeyPem: certificate.publicKeyPem, x5t: certificate.x5t });
  const serviceAccount = oauth.generateServiceAccountKey('pop3-proxy@project.iam.test');
  oauth.addServiceAccount({ email: serviceAccount.json.client_email, publicKeyPem: serviceAccount.publicKeyPem, keyId: serviceAccount.json.private_key_id });
  oauth.addClient({ id: 'delegated-app' });

  dovecot = await startDovecot({
    users: [mailboxes.invoices, mailboxes.support, mailboxes.ceo],
    extraConfig: [await oauth2PassdbConfig(work, oauth.introspectUrl), NO_LOGIN_PENALTY].join('\n'),
  });
  for (const m of [mailboxes.invoices, mailboxes.support, mailboxes.ceo]) {
    for (let i = 1; i <= 3; i++) await dovecot.deliver(m.name, `Subject: ${m.name} ${i}\r\nMessage-ID: <${i}@${m.name}>\r\n\r\n.dot line\r\nbody ${i} \xe9\r\n`);
  }
  other = await startDovecot({ users: [mailboxes.plain] });
  await other.deliver(mailboxes.plain.name, 'Subject: on the other backend\r\n\r\nhello\r\n');

  const file = async (name: string, text: string) => {
    const p = path.join(work, name);
    await writeFile(p, text, { mode: 0o600 });
    return p;
  };
  const backend = { 'imap-host': '127.0.0.1', 'imap-port': dovecot.imapPort, 'imap-tls': 'none' };
  profiles = {
    m365: { ...backend, auth: { grant: 'client-credentials', 'token-url': oauth.tokenUrl, 'client-id': 'proxy-app', 'client-secret-file': await file('m365-secret', `${CLIENT_SECRET}\n`) } },
    m365cert: {
      ...backend,
      auth: {
        grant: 'client-credentials',
        'token-url': oauth.tokenUrl,
        'client-id': 'proxy-app-cert',
        'private-key-file': await file('m365.key', certificate.privateKeyPem),
        'certificate-file': await file('m365.crt', certificate.certificatePem),
      },
    },
    google: { ...backend, auth: { grant: 'jwt-bearer', 'service-account-file': await file('sa.json', JSON.stringify(serviceAccount.json)) } },
    delegated: {
      ...backend,
      auth: {
        grant: 'refresh-token',
        'token-url': oauth.tokenUrl,
        'device-url': oauth.deviceUrl,
        'client-id': 'delegated-app',
        scope: 'https://outlook.office.com/IMAP.AccessAsUser.All offline_access',
        'token-store': path.join(work, 'tokens'),
        'token-store-key-file': await file('store.key', STORE_KEY),
      },
    },
    second: { 'imap-host': '127.0.0.1', 'imap-port': other.imapPort, 'imap-tls': 'none' },
  };
  routes = { 'contoso.test': 'm365', 'scanner@contoso.test': 'm365cert', 'fabrikam.test': 'google', 'delegated.test': 'delegated', 'other.test': 'second' };
  const hash = (pw: string) => hashPassword(pw, FAST);
  usersFile = await file(
    'users.yaml',
    toYaml({
      'erp@contoso.test': { mailbox: mailboxes.invoices.name, passwords: [await hash('erp-pw'), await hash('erp-second-app-pw')] },
      'scanner@contoso.test': { mailbox: mailboxes.invoices.name, passwords: [await hash('scanner-pw')] },
      'helpdesk@fabrikam.test': { mailbox: mailboxes.support.name, passwords: [await hash('helpdesk-pw')] },
      'assistant@delegated.test': { mailbox: mailboxes.ceo.name, passwords: [await hash('assistant-pw')] },
    }),
  );
  configFile = await file('config.yaml', toYaml({ 'imap-host': '127.0.0.1', 'imap-port': dovecot.imapPort, 'imap-tls': 'none', 'users-file': usersFile, profiles, routes }));
}, { timeout: 120_000 });

after(async () => {
  await dovecot?.stop();
  await other?.stop();
  await oauth?.close();
  if (work) await rm(work, { recursive: true, force: true });
}, { timeout: 60_000 });

function proxyWith(extra: { backendTimeoutMs?: number } = {}): Promise<TestProxy> {
  return startProxy({ imapPort: dovecot.imapPort, logLevel: 'debug', profiles, routes, usersFile, backendTimeoutMs: 20_000, ...extra });
}

async function withProxy<T>(use: (proxy: TestProxy) => Promise<T>): Promise<T> {
  const proxy = await proxyWith();
  try {
    return await use(proxy);
  } finally {
    await proxy.close();
  }
}

const requestsFor = (grantType: string) => oauth.tokenRequests.filter((r) => r.grantType === grantType && r.status === 200).length;

/** Every message of a mailbox as python3's poplib retrieves it, joined by a marker line. */
async function poplibRetrieve(port: number, user: string, password: string): Promise<string> {
  const script = [
    'import poplib, sys',
    `p = poplib.POP3("127.0.0.1", ${port}, timeout=30)`,
    'p.user(sys.argv[1]); p.pass_(sys.argv[2])',
    'count = p.stat()[0]',
    'out = sys.stdout.buffer',
    'for i in range(1, count + 1):',
    '    out.write(b"\\r\\n".join(p.retr(i)[1]) + b"\\r\\n=====\\r\\n")',
    'p.quit()',
  ].join('\n');
  const { stdout } = await run('python3', ['-c', script, user, password], { encoding: 'buffer', timeout: 60_000 });
  return stdout.toString('latin1');
}

/** The same through Dovecot's own POP3, as the mailbox's owner: the reference. */
const nativeRetrieve = (mailbox: string) => poplibRetrieve(dovecot.pop3Port, mailbox, 'never-used-by-the-proxy');

async function pass(port: number, user: string, password: string): Promise<{ client: RawPop3; reply: string }> {
  const client = await RawPop3.connect(port);
  await client.command(`USER ${user}`);
  return { client, reply: await client.command(`PASS ${password}`, 30_000) };
}

test('Microsoft 365 style (client credentials, secret): python3 poplib with a local password downloads byte for byte; one token serves every login', { timeout: 120_000 }, async (t) => {
  await withProxy(async (proxy) => {
    const before = requestsFor('client_credentials');
    const native = await nativeRetrieve(mailboxes.invoices.name);
    assert.equal(await poplibRetrieve(proxy.port, 'erp@contoso.test', 'erp-pw'), native);
    // A second application with its own password for the same mailbox, and another session.
    assert.equal(await poplibRetrieve(proxy.port, 'ERP@contoso.test', 'erp-second-app-pw'), native);
    assert.equal(requestsFor('client_credentials') - before, 1, 'one token for both sessions');
    t.diagnostic(`token requests (client_credentials): ${requestsFor('client_credentials') - before} for 2 sessions`);
    const last = oauth.tokenRequests.at(-1)!;
    assert.equal(last.authMethod, 'client_secret_post');
    assert.equal(last.scope, 'https://outlook.office365.com/.default');
  });
});

test('Microsoft 365 style with a certificate: the client assertion carries x5t and the token endpoint as audience', { timeout: 120_000 }, async () => {
  await withProxy(async (proxy) => {
    const before = oauth.tokenRequests.length;
    const { client, reply } = await pass(proxy.port, 'scanner@contoso.test', 'scanner-pw');
    assert.match(reply, /^\+OK Logged in, 3 messages/);
    assert.match(await client.command('QUIT'), /^\+OK/);
    client.destroy();
    const made = oauth.tokenRequests.slice(before);
    assert.deepEqual(made.map((r) => [r.grantType, r.authMethod, r.status]), [['client_credentials', 'private_key_jwt', 200]]);
  });
});

test('Google Workspace style (service account, JWT bearer): a token per mailbox, sub = the mailbox', { timeout: 120_000 }, async () => {
  await withProxy(async (proxy) => {
    const before = oauth.tokenRequests.length;
    assert.equal(await poplibRetrieve(proxy.port, 'helpdesk@fabrikam.test', 'helpdesk-pw'), await nativeRetrieve(mailboxes.support.name));
    const made = oauth.tokenRequests.slice(before);
    assert.deepEqual(made.map((r) => [r.grantType, r.subject, r.scope, r.status]), [['urn:ietf:params:oauth:grant-type:jwt-bearer', mailboxes.support.name, 'https://mail.google.com/', 200]]);
  });
});

test('a wrong local password gets -ERR [AUTH] and touches no token; an unknown login likewise', { timeout: 120_000 }, async () => {
  await withProxy(async (proxy) => {
    const before = oauth.tokenRequests.length;
    for (const [user, password] of [['erp@contoso.test', 'wrong'], ['helpdesk@fabrikam.test', 'erp-pw'], ['nobody@contoso.test', 'erp-pw']] as const) {
      const { client, reply } = await pass(proxy.port, user, password);
      assert.match(reply, /^-ERR \[AUTH\] Authentication failed\./, user);
      client.destroy();
    }
    assert.equal(oauth.tokenRequests.length, before, 'no token request for a client the proxy refused');
  });
});

test('fifty concurrent logins make one token request', { timeout: 120_000 }, async () => {
  await withProxy(async (proxy) => {
    oauth.setDelay(300);
    const before = requestsFor('client_credentials');
    try {
      const results = await Promise.all(Array.from({ length: 50 }, () => pass(proxy.port, 'erp@contoso.test', 'erp-pw')));
      const ok = results.filter((r) => r.reply.startsWith('+OK'));
      const inUse = results.filter((r) => /^-ERR \[IN-USE\]/.test(r.reply));
      assert.equal(ok.length, 1, 'one session has the mailbox');
      assert.equal(inUse.length, 49, 'the others are told it is in use');
      for (const r of results) r.client.destroy();
    } finally {
      oauth.setDelay(0);
    }
    assert.equal(requestsFor('client_credentials') - before, 1);
  });
});

test('an expired or revoked token is dropped and fetched again once, transparently', { timeout: 120_000 }, async () => {
  await withProxy(async (proxy) => {
    let { client, reply } = await pass(proxy.port, 'helpdesk@fabrikam.test', 'helpdesk-pw');
    assert.match(reply, /^\+OK/);
    await client.command('QUIT');
    client.destroy();
    const before = requestsFor('urn:ietf:params:oauth:grant-type:jwt-bearer');
    oauth.expireAll();
    ({ client, reply } = await pass(proxy.port, 'helpdesk@fabrikam.test', 'helpdesk-pw'));
    assert.match(reply, /^\+OK/, 'the expired token was replaced');
    await client.command('QUIT');
    client.destroy();
    oauth.revoke(oauth.issued.at(-1)!.accessToken);
    ({ client, reply } = await pass(proxy.port, 'helpdesk@fabrikam.test', 'helpdesk-pw'));
    assert.match(reply, /^\+OK/, 'the revoked token was replaced');
    await client.command('QUIT');
    client.destroy();
    assert.equal(requestsFor('urn:ietf:params:oauth:grant-type:jwt-bearer') - before, 2);
    assert.match(proxy.log(), /The backend refused the token for support@fabrikam\.test; fetching a new one/);
  });
});

test('the token endpoint down: -ERR [SYS/TEMP] at once, and logins work again when it is back', { timeout: 120_000 }, async () => {
  await withProxy(async (proxy) => {
    oauth.setDown(true);
    try {
      const started = Date.now();
      const { client, reply } = await pass(proxy.port, 'erp@contoso.test', 'erp-pw');
      assert.match(reply, /^-ERR \[SYS\/TEMP\] /);
      assert.ok(Date.now() - started < 5000, `answered after ${Date.now() - started} ms`);
      client.destroy();
    } finally {
      oauth.setDown(false);
    }
    const { client, reply } = await pass(proxy.port, 'erp@contoso.test', 'erp-pw');
    assert.match(reply, /^\+OK/);
    await client.command('QUIT');
    client.destroy();
  });
});

test('a token the backend refuses twice is an administrator\'s problem: -ERR [SYS/PERM], two token requests', { timeout: 120_000 }, async () => {
  // The app's token opens only its own mailbox, as when Add-MailboxPermission was forgotten.
  oauth.addClient({ id: 'proxy-app-limited', secret: CLIENT_SECRET, anyMailbox: false, tokenSubject: 'someone-else@contoso.test' });
  const limited = { ...(profiles.m365 as Record<string, unknown>), auth: { ...((profiles.m365 as { auth: Record<string, unknown> }).auth), 'client-id': 'proxy-app-limited' } };
  const proxy = await startProxy({ imapPort: dovecot.imapPort, logLevel: 'info', profiles: { ...profiles, m365: limited }, routes, usersFile });
  try {
    const before = oauth.tokenRequests.length;
    const { client, reply } = await pass(proxy.port, 'erp@contoso.test', 'erp-pw');
    // The mailbox and the server's words are the log's; the client hears whose problem it is.
    assert.equal(reply, '-ERR [SYS/PERM] Mailbox not available; tell the administrator.');
    assert.match(proxy.log(), /Login failed: .*refuses the proxy's token for invoices@contoso\.test/);
    client.destroy();
    assert.equal(oauth.tokenRequests.length - before, 2);
  } finally {
    await proxy.close();
  }
});

test('a refresh token from `oauth-login` (device code): the proxy refreshes it and saves each rotated one', { timeout: 120_000 }, async (t) => {
  const login = spawn(process.execPath, [cli, 'oauth-login', '--config', configFile, '--profile', 'delegated', '--mailbox', mailboxes.ceo.name], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  login.stdout.on('data', (d: Buffer) => (output += d.toString()));
  login.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number | null>((resolve) => login.once('exit', resolve));
  try {
    for (let i = 0; i < 100 && !/enter the code/.test(output); i++) await new Promise((r) => setTimeout(r, 50));
    const code = /enter the code ([A-Z-]+)/.exec(output)?.[1];
    assert.ok(code, output);
    oauth.approveDevice(code, mailboxes.ceo.name);
    const status = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 20_000))]);
    assert.equal(status, 0, output);
  } finally {
    login.kill('SIGKILL');
  }
  assert.match(output, /Saved the refresh token for ceo@delegated\.test/);
  const storeDir = path.join(work, 'tokens');
  const [file] = await readdir(storeDir);
  const saved = await readFile(path.join(storeDir, file!), 'utf8');
  const firstRefresh = oauth.issued.filter((i) => i.grantType === 'urn:ietf:params:oauth:grant-type:device_code').at(-1)!.refreshToken!;
  assert.doesNotMatch(saved, new RegExp(firstRefresh), 'stored encrypted');

  await withProxy(async (proxy) => {
    assert.equal(await poplibRetrieve(proxy.port, 'assistant@delegated.test', 'assistant-pw'), await nativeRetrieve(mailboxes.ceo.name));
  });
  const rotated = await readFile(path.join(storeDir, file!), 'utf8');
  assert.notEqual(rotated, saved, 'the rotated refresh token replaced the first one');
  // The first refresh token no longer works (rotation), and the proxy did not need it: a new
  // proxy (empty token cache) logs in with the rotated one from the store.
  await withProxy(async (proxy) => {
    const { client, reply } = await pass(proxy.port, 'assistant@delegated.test', 'assistant-pw');
    assert.match(reply, /^\+OK/);
    await client.command('QUIT');
    client.destroy();
  });
  const refreshes = oauth.tokenRequests.filter((r) => r.grantType === 'refresh_token');
  assert.deepEqual(refreshes.map((r) => r.status), [200, 200]);
  t.diagnostic(`device code polls: ${oauth.deviceAuthorizations.at(-1)!.polls}, refresh requests: ${refreshes.length}`);
});

test('routing: each login domain lands on its own backend; the default profile takes the rest', { timeout: 120_000 }, async () => {
  await withProxy(async (proxy) => {
    const { client, reply } = await pass(proxy.port, mailboxes.plain.name, mailboxes.plain.password);
    assert.match(reply, /^\+OK Logged in, 1 message\./, 'plain@other.test is on the second Dovecot');
    const top = await client.multiline('TOP 1 0');
    assert.match(top.body.toString(), /Subject: on the other backend/);
    await client.command('QUIT');
    client.destroy();
    // No route: the default profile (the flags), whose Dovecot has no such user.
    const unrouted = await pass(proxy.port, 'plain@elsewhere.test', mailboxes.plain.password);
    assert.match(unrouted.reply, /^-ERR \[AUTH\]/);
    unrouted.client.destroy();
  });
});

test('no secret reaches the log or --print-config: client secret, keys, tokens, refresh tokens, local passwords', { timeout: 120_000 }, async () => {
  const proxy = await proxyWith();
  try {
    const { client } = await pass(proxy.port, 'erp@contoso.test', 'erp-pw');
    await client.command('QUIT');
    client.destroy();
    (await pass(proxy.port, 'erp@contoso.test', 'wrong-local-pw')).client.destroy();
  } finally {
    await proxy.close();
  }
  const secrets = [CLIENT_SECRET, STORE_KEY, 'erp-pw', 'wrong-local-pw', ...oauth.issued.map((i) => i.accessToken), ...oauth.issued.flatMap((i) => (i.refreshToken ? [i.refreshToken] : []))];
  const log = proxy.log();
  for (const secret of secrets) {
    assert.equal(log.includes(secret), false, `a secret in the log: ${secret.slice(0, 6)}...`);
    assert.equal(log.includes(Buffer.from(secret).toString('base64')), false, 'a secret in base64 in the log');
  }
  const { stdout } = await run(process.execPath, [cli, '--config', configFile, '--print-config'], { timeout: 20_000 });
  const printed = JSON.parse(stdout) as { profiles: Record<string, { auth: Record<string, string> }> };
  assert.equal(printed.profiles.m365!.auth['client-secret-file'], path.join(work, 'm365-secret'));
  for (const secret of [CLIENT_SECRET, STORE_KEY]) assert.equal(stdout.includes(secret), false);
});
