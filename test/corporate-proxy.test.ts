/**
 * Corporate proxies: the token endpoint (the real local authorization server) listens on
 * 127.0.0.2, and the proxy's token requests, its routing lookups and oauth-login's device
 * sign-in go through a real tinyproxy (test/support/tinyproxy.ts) as HTTP_PROXY/HTTPS_PROXY or
 * --http-proxy say; NO_PROXY exempts a host; with the proxy down a login is [SYS/TEMP].
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { stringify as toYaml } from 'yaml';
import { hashPassword } from '../src/auth/password-hash.js';
import { NO_LOGIN_PENALTY, oauth2PassdbConfig, startDovecot, type Dovecot } from './support/dovecot.js';
import { startLookupService, type LookupService } from './support/lookup-service.js';
import { startOAuthServer, type OAuthServer } from './support/oauth-server.js';
import { RawPop3 } from './support/pop3-client.js';
import { freePort } from './support/private-server.js';
import { startProxy, type TestProxyOptions } from './support/proxy.js';
import { startTinyproxy, type Tinyproxy } from './support/tinyproxy.js';

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/cli.js');
const MAILBOX = { name: 'invoices@contoso.test', password: 'never-used-by-the-proxy' };
const PROXY_VARIABLES = ['HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy', 'NO_PROXY', 'no_proxy'];

let work: string;
let oauth: OAuthServer;
let dovecot: Dovecot;
let tinyproxy: Tinyproxy;
let lookup: LookupService;
let base: Omit<TestProxyOptions, 'httpProxy'>;
let configFile: string;

before(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), 'pop3-corporate-proxy-'));
  oauth = await startOAuthServer({ host: '127.0.0.2' });
  oauth.addClient({ id: 'proxy-app', secret: 'm365-client-secret-value' });
  oauth.addClient({ id: 'delegated-app' });
  dovecot = await startDovecot({ users: [MAILBOX], extraConfig: [await oauth2PassdbConfig(work, oauth.introspectUrl), NO_LOGIN_PENALTY].join('\n') });
  await dovecot.deliver(MAILBOX.name, 'Subject: through the proxy\r\n\r\nhello\r\n');
  tinyproxy = await startTinyproxy();
  lookup = await startLookupService({ 'Auth-Status': 'OK', 'Auth-Profile': 'm365' });
  const file = async (name: string, text: string) => {
    const p = path.join(work, name);
    await writeFile(p, text, { mode: 0o600 });
    return p;
  };
  const backend = { 'imap-host': '127.0.0.1', 'imap-port': dovecot.imapPort, 'imap-tls': 'none' };
  const secret = await file('secret', 'm365-client-secret-value\n');
  const profiles = {
    m365: { ...backend, auth: { grant: 'client-credentials', 'token-url': oauth.tokenUrl, 'client-id': 'proxy-app', 'client-secret-file': secret } },
    delegated: {
      ...backend,
      auth: {
        grant: 'refresh-token',
        'token-url': oauth.tokenUrl,
        'device-url': oauth.deviceUrl,
        'client-id': 'delegated-app',
        scope: 'IMAP.AccessAsUser.All offline_access',
        'token-store': path.join(work, 'tokens'),
        'token-store-key-file': await file('store.key', 'cd'.repeat(32)),
      },
    },
  };
  const routes = { 'contoso.test': 'm365' };
  const usersFile = await file('users.yaml', toYaml({ 'erp@contoso.test': { mailbox: MAILBOX.name, passwords: [await hashPassword('erp-pw', { ln: 10, r: 8, p: 1 })] } }));
  base = { imapPort: dovecot.imapPort, profiles, routes, usersFile, backendTimeoutMs: 20_000 };
  configFile = await file('config.yaml', toYaml({ ...backend, 'users-file': usersFile, profiles, routes }));
}, { timeout: 120_000 });

after(async () => {
  await dovecot?.stop();
  await tinyproxy?.stop();
  await oauth?.close();
  await lookup?.close();
  if (work) await rm(work, { recursive: true, force: true });
}, { timeout: 60_000 });

/** Runs `use` with the proxy variables set as given (the agent reads them when it is made). */
async function withEnvironment<T>(env: Record<string, string>, use: () => Promise<T>): Promise<T> {
  const saved = new Map(PROXY_VARIABLES.map((name) => [name, process.env[name]] as const));
  for (const name of PROXY_VARIABLES) delete process.env[name];
  Object.assign(process.env, env);
  try {
    return await use();
  } finally {
    for (const [name, value] of saved) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
}

async function login(options: Partial<TestProxyOptions>): Promise<{ reply: string; log: string }> {
  const proxy = await startProxy({ ...base, ...options });
  try {
    const client = await RawPop3.connect(proxy.port);
    await client.command('USER erp@contoso.test');
    const reply = await client.command('PASS erp-pw', 30_000);
    if (reply.startsWith('+OK')) await client.command('QUIT');
    client.destroy();
    return { reply, log: proxy.log() };
  } finally {
    await proxy.close();
  }
}

const relayed = (from: number) => tinyproxy.log().slice(from);
const TOKEN_HOST = /(CONNECT|GET) (http:\/\/)?127\.0\.0\.2:\d+/;

test('HTTP_PROXY (no NO_PROXY): the token request goes through tinyproxy', { timeout: 120_000 }, async (t) => {
  const mark = tinyproxy.log().length;
  const { reply } = await withEnvironment({ HTTP_PROXY: tinyproxy.url, HTTPS_PROXY: tinyproxy.url }, () => login({}));
  assert.match(reply, /^\+OK Logged in, 1 message\./);
  assert.match(relayed(mark), TOKEN_HOST, relayed(mark));
  t.diagnostic(relayed(mark).split('\n').find((l) => TOKEN_HOST.test(l)) ?? '');
});

test('--http-proxy wins over HTTP_PROXY; the lookup goes through it too', { timeout: 120_000 }, async () => {
  const mark = tinyproxy.log().length;
  const dead = `http://127.0.0.1:${await freePort()}`;
  const lookupConfig = { url: lookup.url, sendPassword: false, timeoutMs: 3000, cacheMs: 0 };
  const { reply } = await withEnvironment({ HTTP_PROXY: dead }, () => login({ httpProxy: tinyproxy.url, lookup: lookupConfig }));
  assert.match(reply, /^\+OK/);
  assert.match(relayed(mark), TOKEN_HOST);
  assert.match(relayed(mark), /(CONNECT|GET) (http:\/\/)?127\.0\.0\.1:\d+/, 'the lookup went through the proxy');
});

test('NO_PROXY exempts a host: with HTTP_PROXY dead, the token endpoint is asked directly', { timeout: 120_000 }, async () => {
  const dead = `http://127.0.0.1:${await freePort()}`;
  const { reply } = await withEnvironment({ HTTP_PROXY: dead, NO_PROXY: '127.0.0.2' }, () => login({}));
  assert.match(reply, /^\+OK/);
});

test('the proxy down: -ERR [SYS/TEMP], never a credentials error', { timeout: 120_000 }, async () => {
  const dead = `http://127.0.0.1:${await freePort()}`;
  const { reply, log } = await withEnvironment({}, () => login({ httpProxy: dead }));
  assert.match(reply, /^-ERR \[SYS\/TEMP\] /);
  assert.match(log, /token endpoint unreachable/);
});

test('oauth-login\'s device sign-in goes through HTTPS_PROXY/HTTP_PROXY too', { timeout: 120_000 }, async () => {
  const mark = tinyproxy.log().length;
  const env: NodeJS.ProcessEnv = { ...process.env, HTTP_PROXY: tinyproxy.url, HTTPS_PROXY: tinyproxy.url };
  for (const name of ['NO_PROXY', 'no_proxy']) delete env[name];
  const child = spawn(process.execPath, [cli, 'oauth-login', '--config', configFile, '--profile', 'delegated', '--account', MAILBOX.name], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
  });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  try {
    for (let i = 0; i < 200 && !/enter the code/.test(output); i++) await new Promise((r) => setTimeout(r, 50));
    const code = /enter the code ([A-Z-]+)/.exec(output)?.[1];
    assert.ok(code, output);
    oauth.approveDevice(code, MAILBOX.name);
    const status = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 30_000))]);
    assert.equal(status, 0, output);
  } finally {
    child.kill('SIGKILL');
  }
  assert.match(relayed(mark), TOKEN_HOST);
});
