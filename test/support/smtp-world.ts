/**
 * What an SMTP submission test of the proxy runs against, as a deployment in front of
 * Microsoft 365 or Google Workspace has it: a real local authorization server; a Dovecot whose
 * oauth2 passdb asks that server about every token, which a private Postfix authenticates its
 * clients through (passwords and XOAUTH2) and delivers to by LMTP; and the proxy's profiles,
 * routes and users file for every token grant (client credentials with a secret or a
 * certificate, a service account's JWT bearer grant, a stored refresh token), each profile
 * relaying to that Postfix with STARTTLS verified against the test CA.
 *
 * Messages go to bob@example.test (Dovecot user "bob"); the store is read back over IMAP.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { stringify as toYaml } from 'yaml';
import { hashPassword } from '../../src/auth/password-hash.js';
import { RefreshTokenStore } from '../../src/oauth/refresh-token-store.js';
import type { RelayEndpoint } from '../../src/smtp/relay-client.js';
import { testCerts, type TestCerts } from './certs.js';
import { emptyMailbox, NO_LOGIN_PENALTY, oauth2PassdbConfig, startDovecot, withMailbox, type Dovecot, type TestUser } from './dovecot.js';
import { startOAuthServer, type OAuthServer } from './oauth-server.js';
import { dovecotConfigForPostfix, startPostfix, type Postfix, type PostfixOptions } from './postfix.js';
import { sleep } from './private-server.js';
import { startProxy, type TestProxy, type TestProxyOptions } from './proxy.js';

/** Dovecot users: the mailboxes the tokens open, and two people with passwords of their own. */
export const MAILBOX = {
  invoices: { name: 'invoices@contoso.test', password: 'never-used-by-the-proxy' },
  support: { name: 'support@fabrikam.test', password: 'never-used-by-the-proxy' },
  ceo: { name: 'ceo@delegated.test', password: 'never-used-by-the-proxy' },
} as const;
export const alice: TestUser = { name: 'alice', password: 'alice-secret' };
export const bob: TestUser = { name: 'bob', password: 'bob-secret' };

/** The proxy's own users (the users file): the login, its local password, its mailbox (`account`). */
export const LOCAL = {
  erp: { login: 'erp@contoso.test', password: 'erp-pw', mailbox: MAILBOX.invoices.name, sendAs: ['billing@contoso.test'] },
  scanner: { login: 'scanner@contoso.test', password: 'scanner-pw', mailbox: MAILBOX.invoices.name, sendAs: [] },
  helpdesk: { login: 'helpdesk@fabrikam.test', password: 'helpdesk-pw', mailbox: MAILBOX.support.name, sendAs: [] },
  assistant: { login: 'assistant@delegated.test', password: 'assistant-pw', mailbox: MAILBOX.ceo.name, sendAs: [] },
} as const;

export const CLIENT_SECRET = 'm365-client-secret-value';
export const IMAP_SCOPE_DELEGATED = 'https://outlook.office.com/IMAP.AccessAsUser.All offline_access';
/** A profile key of its own: the delegated profile asks the relay's token with another scope. */
export const SMTP_SCOPE_DELEGATED = 'https://outlook.office.com/SMTP.Send offline_access';
const STORE_KEY = 'cd'.repeat(32);
/** Cheap hashes for tests; production hashes use the default cost. */
const FAST = { ln: 10, r: 8, p: 1 };

export interface SmtpWorld {
  work: string;
  certs: TestCerts;
  oauth: OAuthServer;
  dovecot: Dovecot;
  postfix: Postfix;
  /** STARTTLS to the Postfix, its certificate verified against the test CA. */
  relay: RelayEndpoint;
  /** As the config file writes them; tests may start proxies with altered copies. */
  profiles: Record<string, Record<string, unknown>>;
  routes: Record<string, string>;
  usersFile: string;
  /** Writes a file into the world's folder (mode 0600); its path. */
  file(name: string, text: string): Promise<string>;
  /** A proxy with SMTP submission relaying to the Postfix, with the profiles, routes and users. */
  proxy(extra?: Partial<TestProxyOptions>): Promise<TestProxy>;
  /** The messages of a user's INBOX, as stored. */
  stored(user: TestUser): Promise<Buffer[]>;
  /** Waits (bounded) until the INBOX holds at least `count` messages; returns them all. */
  arrived(user: TestUser, count?: number, timeoutMs?: number): Promise<Buffer[]>;
  /** Waits long enough for a queued message to have reached Dovecot, then says there is none. */
  nothingArrived(user: TestUser, waitMs?: number): Promise<void>;
  emptyMailboxes(): Promise<void>;
  close(): Promise<void>;
}

export async function startSmtpWorld(options: { postfix?: PostfixOptions; dovecotConfig?: string } = {}): Promise<SmtpWorld> {
  const work = await mkdtemp(path.join(os.tmpdir(), 'pop3-smtp-world-'));
  const certs = await testCerts();
  const oauth = await startOAuthServer();
  const file = async (name: string, text: string) => {
    const p = path.join(work, name);
    await writeFile(p, text, { mode: 0o600 });
    return p;
  };
  oauth.addClient({ id: 'proxy-app', secret: CLIENT_SECRET });
  const certificate = await oauth.generateClientCertificateKey();
  oauth.addClient({ id: 'proxy-app-cert', publicKeyPem: certificate.publicKeyPem, x5t: certificate.x5t });
  const serviceAccount = oauth.generateServiceAccountKey('pop3-proxy@project.iam.test');
  oauth.addServiceAccount({ email: serviceAccount.json.client_email, publicKeyPem: serviceAccount.publicKeyPem, keyId: serviceAccount.json.private_key_id });
  oauth.addClient({ id: 'delegated-app' });

  const dovecot = await startDovecot({
    users: [alice, bob, MAILBOX.invoices, MAILBOX.support, MAILBOX.ceo],
    extraConfig: [await oauth2PassdbConfig(work, oauth.introspectUrl), NO_LOGIN_PENALTY, dovecotConfigForPostfix(), options.dovecotConfig ?? ''].join('\n'),
  });
  const postfix = await startPostfix(dovecot, options.postfix);

  // As `oauth-login` would have left it: one refresh token, granted for both IMAP and SMTP.
  const tokenStore = path.join(work, 'tokens');
  const scopes = [...new Set(`${IMAP_SCOPE_DELEGATED} ${SMTP_SCOPE_DELEGATED}`.split(' '))].join(' ');
  const refreshToken = oauth.addRefreshToken({ clientId: 'delegated-app', subject: MAILBOX.ceo.name, scope: scopes });
  await new RefreshTokenStore(tokenStore, STORE_KEY).save(MAILBOX.ceo.name, refreshToken);

  const backend = { 'imap-host': '127.0.0.1', 'imap-port': dovecot.imapPort, 'imap-tls': 'none' };
  const profiles: Record<string, Record<string, unknown>> = {
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
      'smtp-scope': SMTP_SCOPE_DELEGATED,
      auth: {
        grant: 'refresh-token',
        'token-url': oauth.tokenUrl,
        'client-id': 'delegated-app',
        scope: IMAP_SCOPE_DELEGATED,
        'token-store': tokenStore,
        'token-store-key-file': await file('store.key', STORE_KEY),
      },
    },
  };
  const routes = { 'contoso.test': 'm365', 'scanner@contoso.test': 'm365cert', 'fabrikam.test': 'google', 'delegated.test': 'delegated' };
  const users: Record<string, unknown> = {};
  for (const u of Object.values(LOCAL)) {
    users[u.login] = { account: u.mailbox, passwords: [await hashPassword(u.password, FAST)], ...(u.sendAs.length > 0 ? { 'send-as': [...u.sendAs] } : {}) };
  }
  const usersFile = await file('users.yaml', toYaml(users));
  const relay: RelayEndpoint = { host: '127.0.0.1', port: postfix.port, tls: 'starttls', verifyTls: true, ca: certs.ca.cert, servername: 'localhost' };

  const stored = (user: TestUser) => withMailbox(dovecot, user, async (imap) => (await imap.fetchAll('1:*', { source: true })).map((m) => m.source!));
  return {
    work,
    certs,
    oauth,
    dovecot,
    postfix,
    relay,
    profiles,
    routes,
    usersFile,
    file,
    proxy: (extra = {}) => startProxy({ imapPort: dovecot.imapPort, logLevel: 'info', smtp: {}, smtpRelay: relay, profiles, routes, usersFile, backendTimeoutMs: 20_000, ...extra }),
    stored,
    arrived: async (user, count = 1, timeoutMs = 20_000) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = await stored(user);
        if (found.length >= count) return found;
        if (Date.now() > deadline) throw new Error(`${found.length} of ${count} messages for ${user.name} within ${timeoutMs} ms\n${postfix.log().slice(-3000)}`);
        await sleep(200);
      }
    },
    nothingArrived: async (user, waitMs = 2000) => {
      // LMTP delivery takes milliseconds here, and Postfix retries every second.
      await sleep(waitMs);
      assert.equal((await stored(user)).length, 0, `nothing may have reached ${user.name}`);
    },
    emptyMailboxes: async () => {
      for (const user of [alice, bob]) await emptyMailbox(dovecot, user);
    },
    close: async () => {
      await postfix?.stop();
      await dovecot?.stop();
      await oauth?.close();
      await rm(work, { recursive: true, force: true });
    },
  };
}
