/**
 * Token health an operator can alert on, against the real local authorization server: token
 * requests per profile and result (ok, refused, unreachable) and the time of the last success
 * in /metrics; a refused refresh token (invalid_grant) logged once per mailbox with the command
 * that mends it; `oauth-status` listing the stored refresh tokens without printing one.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { stringify as toYaml } from 'yaml';
import { hashPassword } from '../src/auth/password-hash.js';
import { RefreshTokenStore } from '../src/oauth/refresh-token-store.js';
import { NO_LOGIN_PENALTY, oauth2PassdbConfig, startDovecot, type Dovecot } from './support/dovecot.js';
import { startOAuthServer, type OAuthServer } from './support/oauth-server.js';
import { RawPop3 } from './support/pop3-client.js';
import { startProxy, type TestProxy } from './support/proxy.js';

const run = promisify(execFile);
const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/cli.js');
const STORE_KEY = 'ef'.repeat(32);
const MAILBOXES = [
  { name: 'invoices@contoso.test', password: 'never-used' },
  { name: 'ceo@delegated.test', password: 'never-used' },
  { name: 'cfo@delegated.test', password: 'never-used' },
];

let work: string;
let oauth: OAuthServer;
let dovecot: Dovecot;
let configFile: string;
let storeDir: string;
let options: Parameters<typeof startProxy>[0];

before(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), 'pop3-token-health-'));
  oauth = await startOAuthServer();
  oauth.addClient({ id: 'proxy-app', secret: 'the-right-secret' });
  oauth.addClient({ id: 'delegated-app' });
  dovecot = await startDovecot({ users: MAILBOXES, extraConfig: [await oauth2PassdbConfig(work, oauth.introspectUrl), NO_LOGIN_PENALTY].join('\n') });
  for (const m of MAILBOXES) await dovecot.deliver(m.name, `Subject: for ${m.name}\r\n\r\nhello\r\n`);
  const file = async (name: string, text: string) => {
    const p = path.join(work, name);
    await writeFile(p, text, { mode: 0o600 });
    return p;
  };
  storeDir = path.join(work, 'tokens');
  const backend = { 'imap-host': '127.0.0.1', 'imap-port': dovecot.imapPort, 'imap-tls': 'none' };
  const cc = (secretFile: string) => ({ grant: 'client-credentials', 'token-url': oauth.tokenUrl, 'client-id': 'proxy-app', 'client-secret-file': secretFile });
  const profiles = {
    m365: { ...backend, auth: cc(await file('secret', 'the-right-secret\n')) },
    misconfigured: { ...backend, auth: cc(await file('wrong-secret', 'a-wrong-secret\n')) },
    delegated: {
      ...backend,
      auth: {
        grant: 'refresh-token',
        'token-url': oauth.tokenUrl,
        'client-id': 'delegated-app',
        scope: 'IMAP.AccessAsUser.All offline_access',
        'token-store': storeDir,
        'token-store-key-file': await file('store.key', STORE_KEY),
      },
    },
  };
  const routes = { 'contoso.test': 'm365', 'wrong.test': 'misconfigured', 'delegated.test': 'delegated' };
  const hash = (pw: string) => hashPassword(pw, { ln: 10, r: 8, p: 1 });
  const usersFile = await file(
    'users.yaml',
    toYaml({
      'erp@contoso.test': { mailbox: MAILBOXES[0]!.name, passwords: [await hash('pw')] },
      'erp@wrong.test': { mailbox: MAILBOXES[0]!.name, passwords: [await hash('pw')] },
      'assistant@delegated.test': { mailbox: MAILBOXES[1]!.name, passwords: [await hash('pw')] },
      'cfo-app@delegated.test': { mailbox: MAILBOXES[2]!.name, passwords: [await hash('pw')] },
    }),
  );
  configFile = await file('config.yaml', toYaml({ ...backend, 'users-file': usersFile, profiles, routes }));
  options = { imapPort: dovecot.imapPort, profiles, routes, usersFile, metrics: true, configFile, backendTimeoutMs: 20_000, logLevel: 'info' };
  // Two accounts signed in (as oauth-login would have saved them).
  const store = new RefreshTokenStore(storeDir, STORE_KEY);
  for (const m of MAILBOXES.slice(1)) await store.save(m.name, oauth.addRefreshToken({ clientId: 'delegated-app', subject: m.name, scope: 'IMAP.AccessAsUser.All offline_access' }));
}, { timeout: 120_000 });

after(async () => {
  await dovecot?.stop();
  await oauth?.close();
  if (work) await rm(work, { recursive: true, force: true });
}, { timeout: 60_000 });

async function pass(proxy: TestProxy, user: string): Promise<string> {
  const client = await RawPop3.connect(proxy.port);
  try {
    await client.command(`USER ${user}`);
    const reply = await client.command('PASS pw', 30_000);
    if (reply.startsWith('+OK')) await client.command('QUIT');
    return reply;
  } finally {
    client.destroy();
  }
}

async function metrics(proxy: TestProxy): Promise<string> {
  const address = proxy.server.metricsAddress!;
  return (await fetch(`http://127.0.0.1:${address.port}/metrics`)).text();
}

function value(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

test('metrics: token requests by profile and result, and the last success', { timeout: 120_000 }, async () => {
  const proxy = await startProxy(options);
  try {
    const started = Date.now() / 1000;
    assert.match(await pass(proxy, 'erp@contoso.test'), /^\+OK/);
    assert.match(await pass(proxy, 'erp@wrong.test'), /^-ERR \[SYS\/PERM\] /, 'a wrong client secret is the administrator\'s');
    oauth.setDown(true);
    try {
      oauth.expireAll();
      // A fresh proxy's empty cache, so that the next login must ask the (down) endpoint.
      const second = await startProxy(options);
      try {
        assert.match(await pass(second, 'erp@contoso.test'), /^-ERR \[SYS\/TEMP\] /);
        assert.equal(value(await metrics(second), 'pop3proxy_token_fetches_total{profile="m365",result="unreachable"}'), 1);
      } finally {
        await second.close();
      }
    } finally {
      oauth.setDown(false);
    }
    const text = await metrics(proxy);
    assert.equal(value(text, 'pop3proxy_token_fetches_total{profile="m365",result="ok"}'), 1);
    assert.equal(value(text, 'pop3proxy_token_fetches_total{profile="misconfigured",result="refused"}'), 1);
    const last = value(text, 'pop3proxy_token_last_success_timestamp_seconds{profile="m365"}')!;
    assert.ok(last >= started - 1 && last <= Date.now() / 1000 + 1, `last success ${last}`);
    assert.equal(value(text, 'pop3proxy_token_last_success_timestamp_seconds{profile="misconfigured"}'), undefined);
  } finally {
    await proxy.close();
  }
});

test('a refused refresh token: one error line per mailbox, naming the oauth-login command; never a token', { timeout: 120_000 }, async () => {
  const store = new RefreshTokenStore(storeDir, STORE_KEY);
  const refresh = (await store.load(MAILBOXES[2]!.name))!;
  oauth.revokeRefreshToken(refresh);
  const proxy = await startProxy(options);
  try {
    for (let i = 0; i < 3; i++) assert.match(await pass(proxy, 'cfo-app@delegated.test'), /^-ERR \[SYS\/PERM\] /);
    assert.match(await pass(proxy, 'assistant@delegated.test'), /^\+OK/, `the other mailbox of the profile is fine: ${proxy.log()}`);
    const log = proxy.log();
    const lines = log.split('\n').filter((l) => /invalid_grant/.test(l) && /oauth-login/.test(l));
    assert.equal(lines.length, 1, log);
    const command = `pop3-imap-proxy oauth-login --config ${configFile} --profile delegated --account cfo@delegated.test`;
    assert.ok(lines[0]!.includes(command), lines[0]);
    assert.match(lines[0]!, /error/);
    for (const token of [refresh, ...oauth.issued.flatMap((i) => [i.accessToken, i.refreshToken ?? 'none'])]) {
      assert.equal(log.includes(token), false, 'a token in the log');
    }
    assert.equal(value(await metrics(proxy), 'pop3proxy_token_fetches_total{profile="delegated",result="refused"}'), 3);
  } finally {
    await proxy.close();
  }
});

test('oauth-status lists the stored refresh tokens (profile, account, rotation, use), never a token', { timeout: 120_000 }, async () => {
  const help = await run(process.execPath, [cli, 'oauth-status', '--help'], { timeout: 20_000 });
  assert.match(help.stdout, /^Usage: pop3-imap-proxy oauth-status --config FILE/);
  const mainHelp = await run(process.execPath, [cli, '--help'], { timeout: 20_000 });
  assert.match(mainHelp.stdout, /oauth-status +List the stored refresh tokens/);
  const { stdout } = await run(process.execPath, [cli, 'oauth-status', '--config', configFile], { timeout: 20_000 });
  const lines = stdout.trim().split('\n');
  assert.match(lines[0]!, /^PROFILE +ACCOUNT +LAST ROTATION +LAST USE$/);
  const ceo = lines.find((l) => l.includes('ceo@delegated.test'))!;
  // The earlier test refreshed ceo's token: rotated (this server rotates) and used since.
  assert.match(ceo, /^delegated +ceo@delegated\.test +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ +\d{4}-\d\d-\d\dT/);
  assert.ok(lines.some((l) => l.includes('cfo@delegated.test')));
  for (const name of await readdir(storeDir)) assert.equal(stdout.includes(name.slice(0, 20)), false);
  const store = new RefreshTokenStore(storeDir, STORE_KEY);
  for (const m of MAILBOXES.slice(1)) assert.equal(stdout.includes((await store.load(m.name))!), false, 'a token printed');
  const files = await Promise.all((await readdir(storeDir)).map((n) => readFile(path.join(storeDir, n), 'utf8')));
  assert.ok(files.every((f) => !f.includes('@')), 'addresses are stored encrypted too');
  const other = await run(process.execPath, [cli, 'oauth-status', '--config', configFile, '--profile', 'm365'], { timeout: 20_000 }).catch((e: unknown) => e);
  assert.equal((other as { code?: number }).code, 2);
  assert.match((other as { stderr: string }).stderr, /m365 does not use grant refresh-token/);
});

test('the last use is written at most once an hour per account', { timeout: 60_000 }, async () => {
  let now = Date.parse('2026-03-01T10:00:00Z');
  const dir = path.join(work, 'clock-store');
  const store = new RefreshTokenStore(dir, STORE_KEY, () => now);
  await store.save('a@x.test', 'refresh-1');
  const [file] = await readdir(dir);
  const read = () => readFile(path.join(dir, file!), 'utf8');
  const saved = await read();
  now += 30 * 60 * 1000;
  await store.used('a@x.test');
  assert.equal(await read(), saved, 'half an hour later: not rewritten');
  now += 31 * 60 * 1000;
  await store.used('a@x.test');
  assert.notEqual(await read(), saved, 'an hour later: the use is recorded');
  const [info] = await store.list();
  assert.equal(info!.account, 'a@x.test');
  assert.equal(info!.usedAt, now);
  assert.equal(info!.rotatedAt, Date.parse('2026-03-01T10:00:00Z'));
  assert.equal(await store.load('a@x.test'), 'refresh-1');
});
