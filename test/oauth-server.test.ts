/**
 * The test OAuth 2.0 authorization server (test/support/oauth-server.ts), proven with the client
 * the product uses (openid-client 6) and with Dovecot: every grant issues tokens Dovecot's
 * oauth2 passdb accepts over IMAP XOAUTH2 (imapflow), and the refusals are the ones real
 * servers give (wrong secret 401, bad assertion 400, reused rotated refresh token invalid_grant,
 * revoked or expired token refused by Dovecot, down 503).
 */
import assert from 'node:assert/strict';
import { createPrivateKey, generateKeyPairSync, webcrypto } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ImapFlow } from 'imapflow';
import { importPKCS8, SignJWT } from 'jose';
import * as client from 'openid-client';
import { dovecotLog, NO_LOGIN_PENALTY, oauth2PassdbConfig, startDovecot, type Dovecot, type TestUser } from './support/dovecot.js';
import { startOAuthServer, type ClientCertificateKey, type OAuthServer, type ServiceAccountJson } from './support/oauth-server.js';

const alice: TestUser = { name: 'alice', password: 'alice-oauth-pw' };
const bob: TestUser = { name: 'bob', password: 'bob-oauth-pw' };
const MS_SCOPE = 'https://outlook.office365.com/.default';
const GOOGLE_SCOPE = 'https://mail.google.com/';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

let work: string;
let oauth: OAuthServer;
/** Offers only XOAUTH2 besides PLAIN and LOGIN, as Microsoft 365 does: imapflow then uses XOAUTH2. */
let dovecot: Dovecot;
let cert: ClientCertificateKey;
let serviceAccount: ServiceAccountJson;

before(async () => {
  work = await mkdtemp(join(os.tmpdir(), 'pop3-oauth-server-'));
  oauth = await startOAuthServer();
  dovecot = await startDovecot({
    users: [alice, bob],
    extraConfig: [await oauth2PassdbConfig(work, oauth.introspectUrl, { mechanisms: 'xoauth2' }), NO_LOGIN_PENALTY].join('\n'),
  });
  for (const u of [alice, bob]) await dovecot.deliver(u.name, `Subject: for ${u.name}\r\n\r\nHello ${u.name}.\r\n`);

  oauth.addClient({ id: 'app-secret', secret: 'app-secret-value' });
  cert = await oauth.generateClientCertificateKey();
  oauth.addClient({ id: 'app-cert', publicKeyPem: cert.publicKeyPem, x5t: cert.x5t });
  oauth.addClient({ id: 'device-app' });
  const sa = oauth.generateServiceAccountKey('relay@pop3-proxy-test.iam.gserviceaccount.com');
  serviceAccount = sa.json;
  oauth.addServiceAccount({ email: sa.json.client_email, publicKeyPem: sa.publicKeyPem, keyId: sa.json.private_key_id });
}, { timeout: 120_000 });

after(async () => {
  await dovecot?.stop();
  await oauth?.close();
  if (work) await rm(work, { recursive: true, force: true });
}, { timeout: 60_000 });

/** openid-client for a plain token endpoint over http on loopback. */
function configure(clientId: string, auth: client.ClientAuth, server: OAuthServer = oauth): client.Configuration {
  const config = new client.Configuration(
    { issuer: server.url, token_endpoint: server.tokenUrl, device_authorization_endpoint: server.deviceUrl },
    clientId,
    undefined,
    auth,
  );
  client.allowInsecureRequests(config);
  return config;
}

/** The PKCS#8 PEM key as the non-extractable WebCrypto signing key PrivateKeyJwt wants (RS256). */
async function rs256Key(pem: string): Promise<client.CryptoKey> {
  const der = createPrivateKey(pem).export({ type: 'pkcs8', format: 'der' });
  return webcrypto.subtle.importKey('pkcs8', der, { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, false, ['sign']) as Promise<client.CryptoKey>;
}

/** A service account's signed assertion (RFC 7523 section 2.1) as Google wants it. */
async function serviceAccountAssertion(
  sa: ServiceAccountJson,
  claims: { sub?: string; scope?: string; aud?: string; lifetime?: number } = {},
): Promise<string> {
  const key = await importPKCS8(sa.private_key, 'RS256');
  const now = Math.floor(Date.now() / 1000);
  const payload: Record<string, string> = {};
  if (claims.scope !== '') payload.scope = claims.scope ?? GOOGLE_SCOPE;
  const jwt = new SignJWT(payload)
    .setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid: sa.private_key_id })
    .setIssuer(sa.client_email)
    .setAudience(claims.aud ?? sa.token_uri)
    .setIssuedAt(now)
    .setExpirationTime(now + (claims.lifetime ?? 3600));
  if (claims.sub !== undefined) jwt.setSubject(claims.sub);
  return jwt.sign(key);
}

function imap(user: string, accessToken: string, d: Dovecot = dovecot): ImapFlow {
  const c = new ImapFlow({ host: d.host, port: d.imapPort, secure: false, doSTARTTLS: false, auth: { user, accessToken }, logger: false });
  c.on('error', () => {
    // Seen by the command that fails.
  });
  return c;
}

/** Logs in with the token and opens INBOX, which holds the user's message. */
async function assertImapAccepts(user: string, accessToken: string, d: Dovecot = dovecot): Promise<void> {
  const c = imap(user, accessToken, d);
  await c.connect();
  try {
    const box = await c.mailboxOpen('INBOX');
    assert.equal(box.exists, 1, `${user}'s INBOX`);
  } finally {
    await c.logout().catch(() => undefined);
  }
}

async function assertImapRefuses(user: string, accessToken: string, d: Dovecot = dovecot): Promise<void> {
  const c = imap(user, accessToken, d);
  await assert.rejects(c.connect(), (err: Error & { authenticationFailed?: boolean; serverResponseCode?: string }) => {
    assert.equal(err.authenticationFailed, true, `not an authentication failure: ${err.message}`);
    assert.equal(err.serverResponseCode, 'AUTHENTICATIONFAILED');
    return true;
  });
  c.close();
}

interface Refusal {
  status: number;
  error: string;
  description: string;
  /** Which openid-client error carried it. */
  kind: 'ResponseBodyError' | 'WWWAuthenticateChallengeError' | 'ClientError';
}

/**
 * The OAuth error of a refused token request, from each of the ways openid-client reports one:
 * ResponseBodyError for a 4xx JSON error; WWWAuthenticateChallengeError when the answer carries
 * WWW-Authenticate (a 401 to client_secret_basic), its body unread; ClientError with code
 * OAUTH_RESPONSE_IS_NOT_CONFORM and the Response as cause for any other status (5xx).
 */
async function refusal(p: Promise<unknown>): Promise<Refusal> {
  try {
    await p;
  } catch (err) {
    if (err instanceof client.ResponseBodyError) {
      return { status: err.status, error: err.error, description: err.error_description ?? '', kind: 'ResponseBodyError' };
    }
    let response: Response | undefined;
    let kind: Refusal['kind'];
    if (err instanceof client.WWWAuthenticateChallengeError) {
      response = err.response;
      kind = 'WWWAuthenticateChallengeError';
    } else if (err instanceof client.ClientError && err.code === 'OAUTH_RESPONSE_IS_NOT_CONFORM' && err.cause instanceof Response) {
      response = err.cause;
      kind = 'ClientError';
    } else {
      throw err;
    }
    const body = (await response.json()) as { error: string; error_description?: string };
    return { status: response.status, error: body.error, description: body.error_description ?? '', kind };
  }
  assert.fail('the token request succeeded');
}

/** A raw form POST, for what openid-client would not send. */
async function post(url: string, form: Record<string, string>, headers: Record<string, string> = {}): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(form).toString(),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown>, headers: res.headers };
}

test('client credentials with client_secret_post and _basic: one app-only token opens every mailbox over XOAUTH2', { timeout: 120_000 }, async () => {
  const before = oauth.tokenRequests.length;
  const tokens = await client.clientCredentialsGrant(configure('app-secret', client.ClientSecretPost('app-secret-value')), { scope: MS_SCOPE });
  assert.equal(tokens.token_type, 'bearer', 'openid-client lower-cases token_type');
  assert.equal(tokens.expires_in, 3599);
  assert.equal(tokens.scope, MS_SCOPE);
  assert.equal(tokens.refresh_token, undefined);
  assert.ok(tokens.expiresIn()! > 3500);
  await assertImapAccepts('alice', tokens.access_token);
  await assertImapAccepts('bob', tokens.access_token);

  const basic = await client.clientCredentialsGrant(configure('app-secret', client.ClientSecretBasic('app-secret-value')), { scope: MS_SCOPE });
  await assertImapAccepts('alice', basic.access_token);

  // Discovery of the server metadata works too.
  const discovered = await client.discovery(new URL(oauth.url), 'app-secret', 'app-secret-value', undefined, { execute: [client.allowInsecureRequests] });
  assert.equal(discovered.serverMetadata().token_endpoint, oauth.tokenUrl);

  const requests = oauth.tokenRequests.slice(before);
  assert.deepEqual(
    requests.map((r) => [r.grantType, r.clientId, r.authMethod, r.subject, r.scope, r.status]),
    [
      ['client_credentials', 'app-secret', 'client_secret_post', 'app-secret', MS_SCOPE, 200],
      ['client_credentials', 'app-secret', 'client_secret_basic', 'app-secret', MS_SCOPE, 200],
    ],
  );
  const issued = oauth.issued.find((t) => t.accessToken === tokens.access_token)!;
  assert.equal(issued.subject, 'app-secret');
  assert.equal(issued.anyMailbox, true);
  assert.match(dovecotLog(dovecot), /Login: user=<bob>, method=XOAUTH2/);
});

test('a client credentials token bound to its subject opens that mailbox only', { timeout: 120_000 }, async () => {
  oauth.addClient({ id: 'app-alice-only', secret: 's3cret', tokenSubject: 'alice', anyMailbox: false });
  const tokens = await client.clientCredentialsGrant(configure('app-alice-only', client.ClientSecretPost('s3cret')), { scope: MS_SCOPE });
  await assertImapAccepts('alice', tokens.access_token);
  await assertImapRefuses('bob', tokens.access_token);
});

test('client credentials with private_key_jwt and the certificate x5t (Microsoft Entra certificate credential)', { timeout: 120_000 }, async () => {
  assert.match(cert.x5t, /^[A-Za-z0-9_-]{27}$/, 'base64url SHA-1');
  const key = await rs256Key(cert.privateKeyPem);
  const entra = client.PrivateKeyJwt(key, {
    [client.modifyAssertion]: (header, payload) => {
      header.x5t = cert.x5t;
      payload.aud = oauth.tokenUrl;
    },
  });
  const tokens = await client.clientCredentialsGrant(configure('app-cert', entra), { scope: MS_SCOPE });
  await assertImapAccepts('alice', tokens.access_token);
  assert.equal(oauth.tokenRequests.at(-1)!.authMethod, 'private_key_jwt');

  // Without the x5t header.
  const noX5t = client.PrivateKeyJwt(key, { [client.modifyAssertion]: (_h, p) => void (p.aud = oauth.tokenUrl) });
  let r = await refusal(client.clientCredentialsGrant(configure('app-cert', noX5t), { scope: MS_SCOPE }));
  assert.deepEqual([r.status, r.error], [401, 'invalid_client'], r.description);
  assert.match(r.description, /x5t/);
  // openid-client's default audience is the issuer, not the token endpoint.
  r = await refusal(client.clientCredentialsGrant(configure('app-cert', client.PrivateKeyJwt(key, { [client.modifyAssertion]: (h) => void (h.x5t = cert.x5t) })), { scope: MS_SCOPE }));
  assert.deepEqual([r.status, r.error], [401, 'invalid_client'], r.description);
  assert.match(r.description, /aud/);
  // Signed with another key.
  const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const forged = client.PrivateKeyJwt(await rs256Key(other), {
    [client.modifyAssertion]: (h, p) => {
      h.x5t = cert.x5t;
      p.aud = oauth.tokenUrl;
    },
  });
  r = await refusal(client.clientCredentialsGrant(configure('app-cert', forged), { scope: MS_SCOPE }));
  assert.deepEqual([r.status, r.error], [401, 'invalid_client'], r.description);
  assert.match(r.description, /signature/);
});

test('jwt-bearer (Google service account with domain-wide delegation): the token is for the mailbox in sub', { timeout: 120_000 }, async () => {
  // Google's jwt-bearer grant has no client authentication. client.None() would still send
  // client_id; a ClientAuth that adds nothing sends only grant_type and assertion.
  const noClientAuth: client.ClientAuth = () => undefined;
  const config = configure(serviceAccount.client_email, noClientAuth);
  const assertion = await serviceAccountAssertion(serviceAccount, { sub: 'alice' });
  const tokens = await client.genericGrantRequest(config, JWT_BEARER, { assertion });
  assert.equal(tokens.scope, GOOGLE_SCOPE);
  await assertImapAccepts('alice', tokens.access_token);
  await assertImapRefuses('bob', tokens.access_token);
  const last = oauth.tokenRequests.at(-1)!;
  assert.deepEqual([last.grantType, last.subject, last.clientId, last.status], [JWT_BEARER, 'alice', serviceAccount.client_email, 200]);
  assert.deepEqual(last.parameters, ['assertion', 'grant_type']);

  // A bad signature: the same claims signed with another key.
  const impostor = { ...serviceAccount, private_key: generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
  let r = await refusal(client.genericGrantRequest(config, JWT_BEARER, { assertion: await serviceAccountAssertion(impostor, { sub: 'alice' }) }));
  assert.deepEqual([r.status, r.error], [400, 'invalid_grant'], r.description);
  assert.match(r.description, /signature/);
  // A tampered payload under a good signature.
  const [h, , s] = assertion.split('.');
  const payload = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(assertion.split('.')[1]!, 'base64url').toString()), sub: 'bob' })).toString('base64url');
  r = await refusal(client.genericGrantRequest(config, JWT_BEARER, { assertion: `${h}.${payload}.${s}` }));
  assert.deepEqual([r.status, r.error], [400, 'invalid_grant'], r.description);
  // Wrong audience, too long a lifetime, no scope.
  r = await refusal(client.genericGrantRequest(config, JWT_BEARER, { assertion: await serviceAccountAssertion(serviceAccount, { sub: 'alice', aud: oauth.url }) }));
  assert.deepEqual([r.status, r.error], [400, 'invalid_grant'], r.description);
  r = await refusal(client.genericGrantRequest(config, JWT_BEARER, { assertion: await serviceAccountAssertion(serviceAccount, { sub: 'alice', lifetime: 3601 }) }));
  assert.deepEqual([r.status, r.error], [400, 'invalid_grant'], r.description);
  r = await refusal(client.genericGrantRequest(config, JWT_BEARER, { assertion: await serviceAccountAssertion(serviceAccount, { sub: 'alice', scope: '' }) }));
  assert.deepEqual([r.status, r.error], [400, 'invalid_grant'], r.description);
  // No assertion at all.
  r = await refusal(client.genericGrantRequest(config, JWT_BEARER, {}));
  assert.deepEqual([r.status, r.error], [400, 'invalid_request'], r.description);
});

test('device code grant, then rotating refresh tokens: a used refresh token gets invalid_grant', { timeout: 120_000 }, async () => {
  const config = configure('device-app', client.None());
  const scope = 'https://outlook.office365.com/IMAP.AccessAsUser.All offline_access';
  const device = await client.initiateDeviceAuthorization(config, { scope });
  assert.match(device.user_code, /^[A-Z]{4}-[A-Z]{4}$/);
  assert.equal(device.verification_uri, oauth.verificationUrl);
  assert.equal(device.interval, 1);
  const polled = client.pollDeviceAuthorizationGrant(config, device);
  // The client polls and hears authorization_pending until the user approves.
  const pending = oauth.deviceAuthorizations.find((d) => d.userCode === device.user_code)!;
  for (let i = 0; pending.polls < 2 && i < 100; i++) await new Promise((r) => setTimeout(r, 100));
  assert.ok(pending.polls >= 2, `polls: ${pending.polls}`);
  assert.ok(oauth.tokenRequests.some((t) => t.grantType === 'urn:ietf:params:oauth:grant-type:device_code' && t.error === 'authorization_pending'));
  oauth.approveDevice(device.user_code, 'bob');
  const first = await polled;
  assert.ok(first.refresh_token, 'a refresh token');
  assert.equal(first.scope, scope);
  await assertImapAccepts('bob', first.access_token);
  await assertImapRefuses('alice', first.access_token);
  // The device code is single-use.
  const again = await post(oauth.tokenUrl, { grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: device.device_code, client_id: 'device-app' });
  assert.deepEqual([again.status, again.body.error], [400, 'invalid_grant']);

  const second = await client.refreshTokenGrant(config, first.refresh_token!);
  assert.ok(second.refresh_token && second.refresh_token !== first.refresh_token, 'rotated');
  assert.notEqual(second.access_token, first.access_token);
  await assertImapAccepts('bob', second.access_token);
  let r = await refusal(client.refreshTokenGrant(config, first.refresh_token!));
  assert.deepEqual([r.status, r.error], [400, 'invalid_grant'], r.description);
  const third = await client.refreshTokenGrant(config, second.refresh_token!);
  await assertImapAccepts('bob', third.access_token);
  // The access tokens of earlier rounds live on until they expire.
  await assertImapAccepts('bob', first.access_token);

  // A denied device authorization.
  const denied = await client.initiateDeviceAuthorization(config, { scope });
  oauth.denyDevice(denied.user_code);
  r = await refusal(client.pollDeviceAuthorizationGrant(config, denied));
  assert.deepEqual([r.status, r.error], [400, 'access_denied']);
});

test('refresh tokens of a confidential client need its authentication; addRefreshToken seeds one', { timeout: 120_000 }, async () => {
  const refresh = oauth.addRefreshToken({ clientId: 'app-secret', subject: 'alice', scope: GOOGLE_SCOPE });
  let r = await refusal(client.refreshTokenGrant(configure('app-secret', client.None()), refresh));
  assert.deepEqual([r.status, r.error], [401, 'invalid_client'], r.description);
  r = await refusal(client.refreshTokenGrant(configure('device-app', client.None()), refresh));
  assert.deepEqual([r.status, r.error], [400, 'invalid_grant'], 'another client');
  const tokens = await client.refreshTokenGrant(configure('app-secret', client.ClientSecretPost('app-secret-value')), refresh);
  assert.equal(tokens.scope, GOOGLE_SCOPE);
  await assertImapAccepts('alice', tokens.access_token);
});

test('a wrong client secret gets 401 invalid_client, with either secret method; an unknown client too', { timeout: 120_000 }, async () => {
  let r = await refusal(client.clientCredentialsGrant(configure('app-secret', client.ClientSecretPost('wrong')), { scope: MS_SCOPE }));
  assert.deepEqual([r.status, r.error, r.kind], [401, 'invalid_client', 'ResponseBodyError']);
  // RFC 6749 section 5.2: a 401 to Authorization: Basic carries WWW-Authenticate, and
  // openid-client then throws WWWAuthenticateChallengeError instead of ResponseBodyError.
  r = await refusal(client.clientCredentialsGrant(configure('app-secret', client.ClientSecretBasic('wrong')), { scope: MS_SCOPE }));
  assert.deepEqual([r.status, r.error, r.kind], [401, 'invalid_client', 'WWWAuthenticateChallengeError']);
  r = await refusal(client.clientCredentialsGrant(configure('nobody', client.ClientSecretPost('x')), { scope: MS_SCOPE }));
  assert.deepEqual([r.status, r.error], [401, 'invalid_client']);
  const raw = await post(oauth.tokenUrl, { grant_type: 'client_credentials', scope: MS_SCOPE }, { authorization: `Basic ${Buffer.from('app-secret:wrong').toString('base64')}` });
  assert.equal(raw.status, 401);
  assert.match(raw.headers.get('www-authenticate') ?? '', /^Basic /);
  assert.equal(oauth.tokenRequests.at(-1)!.error, 'invalid_client');
});

test('malformed token requests get the RFC 6749 errors', { timeout: 120_000 }, async () => {
  const ok = { client_id: 'app-secret', client_secret: 'app-secret-value' };
  let r = await post(oauth.tokenUrl, { ...ok, grant_type: 'password', username: 'alice', password: 'x' });
  assert.deepEqual([r.status, r.body.error], [400, 'unsupported_grant_type']);
  r = await post(oauth.tokenUrl, { ...ok, grant_type: 'client_credentials' });
  assert.deepEqual([r.status, r.body.error], [400, 'invalid_request'], 'no scope');
  r = await post(oauth.tokenUrl, { ...ok, scope: MS_SCOPE });
  assert.deepEqual([r.status, r.body.error], [400, 'invalid_request'], 'no grant_type');
  r = await post(oauth.tokenUrl, { ...ok, grant_type: 'client_credentials', scope: MS_SCOPE }, { authorization: `Basic ${Buffer.from('app-secret:app-secret-value').toString('base64')}` });
  assert.deepEqual([r.status, r.body.error], [400, 'invalid_request'], 'two client authentication methods');
  r = await post(oauth.tokenUrl, { grant_type: 'refresh_token', refresh_token: 'never-issued', client_id: 'device-app' });
  assert.deepEqual([r.status, r.body.error], [400, 'invalid_grant']);
  const json = await fetch(oauth.tokenUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ grant_type: 'client_credentials' }) });
  assert.deepEqual([json.status, ((await json.json()) as { error: string }).error], [400, 'invalid_request']);
  assert.equal((await fetch(oauth.tokenUrl)).status, 405);
  // Introspection of a token never issued.
  const i = await post(oauth.introspectUrl, { token: 'never-issued' });
  assert.deepEqual(i.body, { active: false });
});

test('a revoked token and expired tokens are refused by Dovecot; new tokens work', { timeout: 120_000 }, async () => {
  const config = configure('app-secret', client.ClientSecretPost('app-secret-value'));
  const a = await client.clientCredentialsGrant(config, { scope: MS_SCOPE });
  const b = await client.clientCredentialsGrant(config, { scope: MS_SCOPE });
  await assertImapAccepts('alice', a.access_token);
  oauth.revoke(a.access_token);
  await assertImapRefuses('alice', a.access_token);
  assert.deepEqual(oauth.introspections.filter((x) => x.token === a.access_token).map((x) => x.active).slice(0, 1), [true]);
  await assertImapAccepts('alice', b.access_token);

  oauth.expireAll();
  await assertImapRefuses('alice', b.access_token);
  await assertImapRefuses('bob', b.access_token);
  const i = await post(oauth.introspectUrl, { token: b.access_token });
  assert.deepEqual(i.body, { active: false });
  const c = await client.clientCredentialsGrant(config, { scope: MS_SCOPE });
  await assertImapAccepts('alice', c.access_token);
  const live = await post(oauth.introspectUrl, { token: c.access_token });
  assert.equal(live.body.active, true);
  assert.equal(live.body.username, 'app-secret');
  assert.ok(typeof live.body.exp === 'number' && live.body.exp > Date.now() / 1000 + 3500);
});

test('while down, the token endpoint answers 503 temporarily_unavailable; tokens issued before still work', { timeout: 120_000 }, async () => {
  const config = configure('app-secret', client.ClientSecretPost('app-secret-value'));
  const before = await client.clientCredentialsGrant(config, { scope: MS_SCOPE });
  oauth.setDown(true);
  try {
    // openid-client parses only 4xx error bodies: a 503 is a ClientError whose cause is the Response.
    const r = await refusal(client.clientCredentialsGrant(config, { scope: MS_SCOPE }));
    assert.deepEqual([r.status, r.error, r.kind], [503, 'temporarily_unavailable', 'ClientError']);
    assert.deepEqual([oauth.tokenRequests.at(-1)!.status, oauth.tokenRequests.at(-1)!.grantType], [503, 'client_credentials']);
    const device = await post(oauth.deviceUrl, { client_id: 'device-app', scope: 'x' });
    assert.equal(device.status, 503);
    await assertImapAccepts('bob', before.access_token);
  } finally {
    oauth.setDown(false);
  }
  const after = await client.clientCredentialsGrant(config, { scope: MS_SCOPE });
  await assertImapAccepts('bob', after.access_token);
});

test('concurrent requests overlap while the server is slow (setDelay), each one recorded', { timeout: 120_000 }, async () => {
  const config = configure('app-secret', client.ClientSecretPost('app-secret-value'));
  const count = oauth.tokenRequests.length;
  oauth.setDelay(500);
  try {
    const started = Date.now();
    const all = await Promise.all([1, 2, 3].map(() => client.clientCredentialsGrant(config, { scope: MS_SCOPE })));
    const took = Date.now() - started;
    assert.ok(took >= 500 && took < 1400, `answered concurrently after the delay (${took} ms)`);
    assert.equal(new Set(all.map((t) => t.access_token)).size, 3);
  } finally {
    oauth.setDelay(0);
  }
  assert.equal(oauth.tokenRequests.length - count, 3);
});

test('options.expiresIn: tokens expire by themselves', { timeout: 120_000 }, async () => {
  const short = await startOAuthServer({ expiresIn: 1 });
  try {
    short.addClient({ id: 'c', secret: 's' });
    const tokens = await client.clientCredentialsGrant(configure('c', client.ClientSecretPost('s'), short), { scope: MS_SCOPE });
    assert.equal(tokens.expires_in, 1);
    assert.equal((await post(short.introspectUrl, { token: tokens.access_token })).body.active, true);
    await new Promise((r) => setTimeout(r, 1100));
    assert.deepEqual((await post(short.introspectUrl, { token: tokens.access_token })).body, { active: false });
  } finally {
    await short.close();
  }
});

test('the default oauth2PassdbConfig offers XOAUTH2 and OAUTHBEARER (imapflow then picks OAUTHBEARER)', { timeout: 120_000 }, async () => {
  const dir = await mkdtemp(join(os.tmpdir(), 'pop3-oauth-server-default-'));
  const d = await startDovecot({ users: [alice], extraConfig: [await oauth2PassdbConfig(dir, oauth.introspectUrl), NO_LOGIN_PENALTY].join('\n') });
  try {
    await d.deliver('alice', 'Subject: x\r\n\r\nx\r\n');
    const tokens = await client.clientCredentialsGrant(configure('app-secret', client.ClientSecretPost('app-secret-value')), { scope: MS_SCOPE });
    await assertImapAccepts('alice', tokens.access_token, d);
    assert.match(dovecotLog(d), /Login: user=<alice>, method=OAUTHBEARER/);
    // Passwords still work.
    const c = new ImapFlow({ host: d.host, port: d.imapPort, secure: false, doSTARTTLS: false, auth: { user: 'alice', pass: alice.password }, logger: false });
    await c.connect();
    await c.logout();
  } finally {
    await d.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
