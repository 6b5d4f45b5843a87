/**
 * A real OAuth 2.0 authorization server on loopback for tests, built from node:http and `jose`
 * (the JOSE library openid-client itself uses): real HTTP, real form bodies, real signature
 * checks, no mocks.
 *
 * Endpoints (all POST, application/x-www-form-urlencoded, JSON answers):
 * - /token (RFC 6749): client_credentials (client_secret_post, client_secret_basic or
 *   private_key_jwt per RFC 7523 section 2.2, with the x5t header Microsoft Entra requires for
 *   certificate credentials), urn:ietf:params:oauth:grant-type:jwt-bearer (RFC 7523 section 2.1,
 *   as Google service accounts with domain-wide delegation use it), refresh_token (rotating:
 *   every use answers a new refresh token and ends the used one), and
 *   urn:ietf:params:oauth:grant-type:device_code (RFC 8628).
 * - /device: the device authorization endpoint (RFC 8628 section 3.1).
 * - /introspect (RFC 7662): what Dovecot's oauth2 passdb asks (see oauth2PassdbConfig in
 *   dovecot.ts).
 * - GET /.well-known/oauth-authorization-server and /.well-known/openid-configuration: the
 *   server metadata, for clients that discover it.
 *
 * Access tokens are opaque random strings. A token from the client credentials grant is the
 * application's token (Microsoft 365 app-only access): by default it opens every mailbox, which
 * the introspection answer says with `any_mailbox: true` (and /introspect?any_mailbox=required
 * answers active only for such tokens); every other token is bound to its subject (`username`
 * in the introspection answer).
 */
import { execFile } from 'node:child_process';
import { createHash, createPublicKey, generateKeyPairSync, randomBytes, randomInt, timingSafeEqual, X509Certificate, type KeyObject } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { decodeJwt, decodeProtectedHeader, jwtVerify, type JWTPayload } from 'jose';

const GRANT_CLIENT_CREDENTIALS = 'client_credentials';
const GRANT_REFRESH_TOKEN = 'refresh_token';
const GRANT_JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const GRANT_DEVICE_CODE = 'urn:ietf:params:oauth:grant-type:device_code';
const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
/** Signature algorithms accepted for client assertions and jwt-bearer assertions. */
const ASSERTION_ALGORITHMS = ['RS256', 'PS256'];
/** Seconds of clock difference tolerated when checking exp, nbf and iat. */
const CLOCK_TOLERANCE = 5;
const MAX_BODY = 64 * 1024;

export interface OAuthServerOptions {
  /** Lifetime of issued access tokens in seconds (the `expires_in` answered). Default 3599. */
  expiresIn?: number;
  /** `interval` of device authorization answers, in seconds. Default 1 (RFC 8628's is 5). */
  deviceInterval?: number;
  /** `expires_in` of device codes, in seconds. Default 600. */
  deviceExpiresIn?: number;
  /** The loopback address to listen on. Default 127.0.0.1 (127.0.0.2: a host only a proxy reaches). */
  host?: string;
}

export interface ClientRegistration {
  id: string;
  /** For client_secret_post and client_secret_basic. */
  secret?: string;
  /** SPKI PEM of the key that signs private_key_jwt client assertions. */
  publicKeyPem?: string;
  /** When set, a client assertion's JWT header must carry exactly this `x5t`. */
  x5t?: string;
  /** Subject of client credentials tokens; default: the client id. */
  tokenSubject?: string;
  /**
   * Whether a client credentials token of this client opens every mailbox (Microsoft 365
   * app-only access). Default true; false binds it to `tokenSubject` like any other token.
   */
  anyMailbox?: boolean;
}

export interface ServiceAccountRegistration {
  email: string;
  /** SPKI PEM of the key that signs the service account's assertions. */
  publicKeyPem: string;
  /** When set, an assertion that names a key (`kid` header) must name this one. */
  keyId?: string;
}

/** The JSON key file of a Google service account, as the Google Cloud console hands it out. */
export interface ServiceAccountJson {
  type: 'service_account';
  project_id: string;
  private_key_id: string;
  /** PKCS#8 PEM. */
  private_key: string;
  client_email: string;
  client_id: string;
  auth_uri: string;
  token_uri: string;
}

export interface ClientCertificateKey {
  /** PKCS#8 PEM. */
  privateKeyPem: string;
  /** SPKI PEM. */
  publicKeyPem: string;
  /** The self-signed certificate (PEM) the key belongs to. */
  certificatePem: string;
  /** base64url of the SHA-1 of the certificate's DER: the `x5t` JWT header. */
  x5t: string;
  /** base64url of the SHA-256 of the certificate's DER: the `x5t#S256` JWT header. */
  x5tS256: string;
}

export interface TokenRequestRecord {
  grantType: string;
  /** Names of the form parameters sent (not their values), sorted. */
  parameters: string[];
  clientId?: string;
  /** How the client authenticated: client_secret_post, client_secret_basic, private_key_jwt or none. */
  authMethod?: string;
  /** The subject of the token asked for, when known (also for some refusals). */
  subject?: string;
  scope?: string;
  /** HTTP status of the answer. */
  status: number;
  /** The OAuth error code of a refusal. */
  error?: string;
  at: number;
}

export interface IssuedToken {
  accessToken: string;
  refreshToken?: string;
  subject: string;
  clientId?: string;
  grantType: string;
  scope: string;
  /** Whether the token opens every mailbox (app-only client credentials token). */
  anyMailbox: boolean;
  issuedAt: number;
  /** Milliseconds since the epoch. */
  expiresAt: number;
  revoked: boolean;
}

export interface DeviceAuthorization {
  deviceCode: string;
  userCode: string;
  clientId: string;
  scope: string;
  /** Milliseconds since the epoch. */
  expiresAt: number;
  status: 'pending' | 'approved' | 'denied' | 'redeemed';
  subject?: string;
  /** Token requests polling this code so far. */
  polls: number;
}

export interface IntrospectionRecord {
  token: string;
  active: boolean;
  /** Asked with ?any_mailbox=required (the any-mailbox passdb of oauth2PassdbConfig). */
  anyMailboxOnly: boolean;
  at: number;
}

export interface OAuthServer {
  /** http://127.0.0.1:PORT (or the host asked for), also the issuer identifier. */
  url: string;
  tokenUrl: string;
  deviceUrl: string;
  introspectUrl: string;
  /** The verification_uri of device authorizations (nothing is served there). */
  verificationUrl: string;
  addClient(client: ClientRegistration): void;
  addServiceAccount(account: ServiceAccountRegistration): void;
  /** A refresh token issued earlier to the client for the subject (as if from a consent flow). */
  addRefreshToken(grant: { clientId: string; subject: string; scope?: string }): string;
  /** The user with the code approves on "their other device"; the next poll gets tokens for `subject`. */
  approveDevice(userCode: string, subject: string): void;
  /** The user with the code declines; polls get access_denied. */
  denyDevice(userCode: string): void;
  readonly deviceAuthorizations: readonly DeviceAuthorization[];
  /** The access token stops being active. */
  revoke(accessToken: string): void;
  /** The refresh token stops working. */
  revokeRefreshToken(refreshToken: string): void;
  /** Every access token issued so far stops being active (as if expired). */
  expireAll(): void;
  /** While down, /token and /device answer 503 temporarily_unavailable (introspection goes on). */
  setDown(down: boolean, options?: { retryAfter?: number }): void;
  /** Milliseconds /token waits before answering (default 0), for requests that must overlap. */
  setDelay(ms: number): void;
  /** Every request to /token, in order of arrival of its answer. */
  readonly tokenRequests: readonly TokenRequestRecord[];
  /** Every access token issued, in order. */
  readonly issued: readonly IssuedToken[];
  /** Every introspection request (Dovecot's lookups), in order. */
  readonly introspections: readonly IntrospectionRecord[];
  /** generateServiceAccountKey with token_uri defaulting to this server's tokenUrl. */
  generateServiceAccountKey(email: string, tokenUri?: string): { json: ServiceAccountJson; publicKeyPem: string };
  generateClientCertificateKey(): Promise<ClientCertificateKey>;
  close(): Promise<void>;
}

class OAuthError extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
    readonly description: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(`${error}: ${description}`);
  }
}

const invalidRequest = (d: string) => new OAuthError(400, 'invalid_request', d);
const invalidGrant = (d: string) => new OAuthError(400, 'invalid_grant', d);
const invalidClient = (d: string, basic = false) =>
  new OAuthError(401, 'invalid_client', d, basic ? { 'www-authenticate': 'Basic realm="oauth-test-server"' } : {});

const b64url = (b: Buffer) => b.toString('base64url');
const randomToken = (bytes = 32) => b64url(randomBytes(bytes));

function sameSecret(a: string, b: string): boolean {
  return timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest());
}

/** application/x-www-form-urlencoded decoding of one client_secret_basic component (RFC 6749 2.3.1). */
function formDecode(s: string): string {
  return decodeURIComponent(s.replace(/\+/g, ' '));
}

const USER_CODE_ALPHABET = 'BCDFGHJKLMNPQRSTVWXZ';
function userCode(): string {
  let s = '';
  for (let i = 0; i < 8; i++) s += USER_CODE_ALPHABET[randomInt(USER_CODE_ALPHABET.length)];
  return `${s.slice(0, 4)}-${s.slice(4)}`;
}
const normalizeUserCode = (c: string) => c.toUpperCase().replace(/[^A-Z]/g, '');

/** A Google-style service account key file and the public half of its key. */
export function generateServiceAccountKey(email: string, tokenUri: string): { json: ServiceAccountJson; publicKeyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const json: ServiceAccountJson = {
    type: 'service_account',
    project_id: 'pop3-imap-proxy-test',
    private_key_id: randomBytes(20).toString('hex'),
    private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    client_email: email,
    client_id: String(randomInt(1e9, 2 ** 47)),
    auth_uri: 'https://accounts.google.com/o/oauth2/auth',
    token_uri: tokenUri,
  };
  return { json, publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString() };
}

/**
 * An RSA key and a real self-signed certificate for it (made with the openssl command line),
 * with the certificate's thumbprints: what an Entra app registration's certificate credential is.
 */
export async function generateClientCertificateKey(): Promise<ClientCertificateKey> {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const privateKeyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const dir = await mkdtemp(join(os.tmpdir(), 'oauth-test-cert-'));
  try {
    await writeFile(join(dir, 'key.pem'), privateKeyPem, { mode: 0o600 });
    await promisify(execFile)(
      '/usr/bin/openssl',
      ['req', '-new', '-x509', '-key', 'key.pem', '-out', 'cert.pem', '-days', '365', '-sha256', '-subj', '/CN=pop3-imap-proxy test client'],
      { cwd: dir, timeout: 30_000 },
    );
    const certificatePem = await readFile(join(dir, 'cert.pem'), 'utf8');
    const der = new X509Certificate(certificatePem).raw;
    return {
      privateKeyPem,
      publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
      certificatePem,
      x5t: b64url(createHash('sha1').update(der).digest()),
      x5tS256: b64url(createHash('sha256').update(der).digest()),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

interface Client extends ClientRegistration {
  key?: KeyObject;
}

interface ServiceAccount extends ServiceAccountRegistration {
  key: KeyObject;
}

interface RefreshGrant {
  clientId: string;
  subject: string;
  scope: string;
  /** Used (rotated away) or revoked. */
  dead: boolean;
}

interface AuthenticatedClient {
  client: Client;
  method: string;
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(invalidRequest('request body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** The form parameters of a POST; every parameter at most once (RFC 6749 section 3.2). */
async function formParams(req: http.IncomingMessage): Promise<Map<string, string>> {
  if (req.method !== 'POST') throw new OAuthError(405, 'invalid_request', 'use POST', { allow: 'POST' });
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  const body = await readBody(req);
  if (type !== 'application/x-www-form-urlencoded') throw invalidRequest('the body must be application/x-www-form-urlencoded');
  const params = new Map<string, string>();
  for (const [k, v] of new URLSearchParams(body)) {
    if (params.has(k)) throw invalidRequest(`parameter ${k} given more than once`);
    params.set(k, v);
  }
  return params;
}

function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const data = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    pragma: 'no-cache',
    'content-length': Buffer.byteLength(data),
    ...headers,
  });
  res.end(data);
}

function sendError(res: http.ServerResponse, e: OAuthError): void {
  sendJson(res, e.status, { error: e.error, error_description: e.description }, e.headers);
}

const describe = (err: unknown) => (err instanceof Error ? err.message : String(err));

export async function startOAuthServer(options: OAuthServerOptions = {}): Promise<OAuthServer> {
  const expiresIn = options.expiresIn ?? 3599;
  const deviceInterval = options.deviceInterval ?? 1;
  const deviceExpiresIn = options.deviceExpiresIn ?? 600;

  const clients = new Map<string, Client>();
  const serviceAccounts = new Map<string, ServiceAccount>();
  const accessTokens = new Map<string, IssuedToken>();
  const refreshGrants = new Map<string, RefreshGrant>();
  const devices = new Map<string, DeviceAuthorization>();
  const usedJtis = new Set<string>();
  const tokenRequests: TokenRequestRecord[] = [];
  const issued: IssuedToken[] = [];
  const introspections: IntrospectionRecord[] = [];
  let down: { retryAfter?: number } | undefined;
  let delayMs = 0;

  let url = '';
  let tokenUrl = '';

  /** Verifies a private_key_jwt client assertion (RFC 7523 section 3) and answers its client. */
  async function verifyClientAssertion(params: Map<string, string>): Promise<Client> {
    const assertion = params.get('client_assertion')!;
    if (params.get('client_assertion_type') !== CLIENT_ASSERTION_TYPE) {
      throw invalidClient(`client_assertion_type must be ${CLIENT_ASSERTION_TYPE}`);
    }
    let claims: JWTPayload;
    let header: ReturnType<typeof decodeProtectedHeader>;
    try {
      claims = decodeJwt(assertion);
      header = decodeProtectedHeader(assertion);
    } catch (err) {
      throw invalidClient(`client_assertion is not a JWT: ${describe(err)}`);
    }
    const clientId = params.get('client_id') ?? claims.sub;
    if (clientId === undefined) throw invalidClient('no client_id and no sub in the client assertion');
    const client = clients.get(clientId);
    if (client?.key === undefined) throw invalidClient(`no client ${clientId} with a registered public key`);
    if (client.x5t !== undefined && header.x5t !== client.x5t) {
      throw invalidClient(`the assertion's x5t header ${JSON.stringify(header.x5t)} is not the thumbprint of the registered certificate`);
    }
    let verified: JWTPayload;
    try {
      ({ payload: verified } = await jwtVerify(assertion, client.key, {
        algorithms: ASSERTION_ALGORITHMS,
        issuer: clientId,
        subject: clientId,
        requiredClaims: ['exp', 'jti'],
        clockTolerance: CLOCK_TOLERANCE,
      }));
    } catch (err) {
      throw invalidClient(`client assertion refused: ${describe(err)}`);
    }
    if (verified.aud !== tokenUrl) {
      throw invalidClient(`client assertion aud ${JSON.stringify(verified.aud)} is not the token endpoint ${tokenUrl}`);
    }
    const jti = `${clientId}\0${verified.jti}`;
    if (usedJtis.has(jti)) throw invalidClient('client assertion replayed (jti seen before)');
    usedJtis.add(jti);
    return client;
  }

  /**
   * Client authentication at /token and /device. Answers undefined when the request carries no
   * client identification at all and `required` is false.
   */
  async function authenticateClient(req: http.IncomingMessage, params: Map<string, string>, required: boolean): Promise<AuthenticatedClient | undefined> {
    const authorization = req.headers.authorization;
    const basic = authorization !== undefined && /^basic /i.test(authorization);
    const methods = [basic, params.has('client_secret'), params.has('client_assertion')].filter(Boolean).length;
    if (methods > 1) throw invalidRequest('more than one client authentication method');
    if (basic) {
      const decoded = Buffer.from(authorization.slice(6).trim(), 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0) throw invalidClient('malformed Basic credentials', true);
      let id: string;
      let secret: string;
      try {
        id = formDecode(decoded.slice(0, colon));
        secret = formDecode(decoded.slice(colon + 1));
      } catch {
        throw invalidClient('malformed Basic credentials', true);
      }
      const client = clients.get(id);
      if (client?.secret === undefined || !sameSecret(secret, client.secret)) throw invalidClient('client authentication failed', true);
      if (params.has('client_id') && params.get('client_id') !== id) throw invalidRequest('client_id differs from the authenticated client');
      return { client, method: 'client_secret_basic' };
    }
    if (params.has('client_secret')) {
      const id = params.get('client_id');
      if (id === undefined) throw invalidClient('client_secret without client_id');
      const client = clients.get(id);
      if (client?.secret === undefined || !sameSecret(params.get('client_secret')!, client.secret)) throw invalidClient('client authentication failed');
      return { client, method: 'client_secret_post' };
    }
    if (params.has('client_assertion')) {
      return { client: await verifyClientAssertion(params), method: 'private_key_jwt' };
    }
    const id = params.get('client_id');
    if (id === undefined) {
      if (required) throw invalidClient('client authentication required');
      return undefined;
    }
    const client = clients.get(id);
    if (client === undefined) throw invalidClient(`unknown client ${id}`);
    if (client.secret !== undefined || client.key !== undefined) throw invalidClient(`client ${id} must authenticate`);
    return { client, method: 'none' };
  }

  function issue(
    grantType: string,
    subject: string,
    scope: string,
    clientId: string | undefined,
    extra: { anyMailbox?: boolean; refresh?: boolean },
  ): Record<string, unknown> {
    const now = Date.now();
    const token: IssuedToken = {
      accessToken: randomToken(),
      subject,
      grantType,
      scope,
      anyMailbox: extra.anyMailbox ?? false,
      issuedAt: now,
      expiresAt: now + expiresIn * 1000,
      revoked: false,
    };
    if (clientId !== undefined) token.clientId = clientId;
    if (extra.refresh) {
      token.refreshToken = randomToken(48);
      refreshGrants.set(token.refreshToken, { clientId: clientId ?? '', subject, scope, dead: false });
    }
    accessTokens.set(token.accessToken, token);
    issued.push(token);
    const answer: Record<string, unknown> = { access_token: token.accessToken, token_type: 'Bearer', expires_in: expiresIn, scope };
    if (token.refreshToken !== undefined) answer.refresh_token = token.refreshToken;
    return answer;
  }

  function requireParam(params: Map<string, string>, name: string): string {
    const v = params.get(name);
    if (v === undefined || v === '') throw invalidRequest(`missing ${name}`);
    return v;
  }

  async function clientCredentials(req: http.IncomingMessage, params: Map<string, string>, record: TokenRequestRecord) {
    const auth = (await authenticateClient(req, params, true))!;
    record.clientId = auth.client.id;
    record.authMethod = auth.method;
    if (auth.method === 'none') throw invalidClient('client_credentials needs a confidential client');
    const scope = requireParam(params, 'scope');
    record.scope = scope;
    const subject = auth.client.tokenSubject ?? auth.client.id;
    record.subject = subject;
    return issue(GRANT_CLIENT_CREDENTIALS, subject, scope, auth.client.id, { anyMailbox: auth.client.anyMailbox ?? true });
  }

  async function jwtBearer(params: Map<string, string>, record: TokenRequestRecord) {
    const assertion = requireParam(params, 'assertion');
    let unverified: JWTPayload;
    let header: ReturnType<typeof decodeProtectedHeader>;
    try {
      unverified = decodeJwt(assertion);
      header = decodeProtectedHeader(assertion);
    } catch (err) {
      throw invalidGrant(`assertion is not a JWT: ${describe(err)}`);
    }
    if (typeof unverified.sub === 'string') record.subject = unverified.sub;
    const account = typeof unverified.iss === 'string' ? serviceAccounts.get(unverified.iss) : undefined;
    if (account === undefined) throw invalidGrant(`no service account ${JSON.stringify(unverified.iss)}`);
    record.clientId = account.email;
    if (account.keyId !== undefined && header.kid !== undefined && header.kid !== account.keyId) {
      throw invalidGrant(`unknown key id ${JSON.stringify(header.kid)}`);
    }
    let claims: JWTPayload;
    try {
      ({ payload: claims } = await jwtVerify(assertion, account.key, {
        algorithms: ASSERTION_ALGORITHMS,
        issuer: account.email,
        requiredClaims: ['exp', 'iat'],
        clockTolerance: CLOCK_TOLERANCE,
      }));
    } catch (err) {
      throw invalidGrant(`invalid JWT: ${describe(err)}`);
    }
    if (claims.aud !== tokenUrl) throw invalidGrant(`aud ${JSON.stringify(claims.aud)} is not the token endpoint ${tokenUrl}`);
    if (claims.exp! - claims.iat! > 3600) throw invalidGrant('exp is more than 3600 seconds after iat');
    const scope = claims.scope;
    if (typeof scope !== 'string' || scope.trim() === '') throw invalidGrant('the assertion has no scope claim');
    record.scope = scope;
    const subject = typeof claims.sub === 'string' && claims.sub !== '' ? claims.sub : account.email;
    record.subject = subject;
    return issue(GRANT_JWT_BEARER, subject, scope, account.email, {});
  }

  async function refreshToken(req: http.IncomingMessage, params: Map<string, string>, record: TokenRequestRecord) {
    const presented = requireParam(params, 'refresh_token');
    const auth = await authenticateClient(req, params, false);
    if (auth !== undefined) {
      record.clientId = auth.client.id;
      record.authMethod = auth.method;
    }
    const grant = refreshGrants.get(presented);
    if (grant === undefined || grant.dead) throw invalidGrant('the refresh token is invalid, used or revoked');
    record.subject = grant.subject;
    const owner = clients.get(grant.clientId);
    if (auth === undefined) {
      if (owner !== undefined && (owner.secret !== undefined || owner.key !== undefined)) throw invalidClient('client authentication required');
    } else if (auth.client.id !== grant.clientId) {
      throw invalidGrant('the refresh token was issued to another client');
    }
    let scope = grant.scope;
    const asked = params.get('scope');
    if (asked !== undefined && asked !== '') {
      const granted = new Set(grant.scope.split(' '));
      if (!asked.split(' ').every((s) => s === '' || granted.has(s))) throw new OAuthError(400, 'invalid_scope', 'more scope than originally granted');
      scope = asked;
    }
    record.scope = scope;
    grant.dead = true;
    return issue(GRANT_REFRESH_TOKEN, grant.subject, scope, grant.clientId, { refresh: true });
  }

  async function deviceCode(req: http.IncomingMessage, params: Map<string, string>, record: TokenRequestRecord) {
    const code = requireParam(params, 'device_code');
    const auth = await authenticateClient(req, params, true);
    record.clientId = auth!.client.id;
    record.authMethod = auth!.method;
    const device = devices.get(code);
    if (device === undefined || device.clientId !== auth!.client.id) throw invalidGrant('unknown device_code');
    device.polls++;
    record.scope = device.scope;
    if (device.status === 'redeemed') throw invalidGrant('the device_code was used already');
    if (device.status === 'denied') throw new OAuthError(400, 'access_denied', 'the user declined');
    if (Date.now() >= device.expiresAt) throw new OAuthError(400, 'expired_token', 'the device_code expired');
    if (device.status === 'pending') throw new OAuthError(400, 'authorization_pending', 'the user has not answered yet');
    device.status = 'redeemed';
    record.subject = device.subject!;
    return issue(GRANT_DEVICE_CODE, device.subject!, device.scope, device.clientId, { refresh: true });
  }

  async function handleToken(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const record: TokenRequestRecord = { grantType: '', parameters: [], status: 0, at: Date.now() };
    const finish = (status: number, error?: string) => {
      record.status = status;
      if (error !== undefined) record.error = error;
      record.at = Date.now();
      tokenRequests.push(record);
    };
    try {
      const params = await formParams(req);
      record.grantType = params.get('grant_type') ?? '';
      record.parameters = [...params.keys()].sort();
      if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
      if (down !== undefined) {
        throw new OAuthError(503, 'temporarily_unavailable', 'the authorization server is down', down.retryAfter !== undefined ? { 'retry-after': String(down.retryAfter) } : {});
      }
      let answer: Record<string, unknown>;
      switch (record.grantType) {
        case '':
          throw invalidRequest('missing grant_type');
        case GRANT_CLIENT_CREDENTIALS:
          answer = await clientCredentials(req, params, record);
          break;
        case GRANT_JWT_BEARER:
          answer = await jwtBearer(params, record);
          break;
        case GRANT_REFRESH_TOKEN:
          answer = await refreshToken(req, params, record);
          break;
        case GRANT_DEVICE_CODE:
          answer = await deviceCode(req, params, record);
          break;
        default:
          throw new OAuthError(400, 'unsupported_grant_type', `grant_type ${record.grantType} is not supported`);
      }
      finish(200);
      sendJson(res, 200, answer);
    } catch (err) {
      const e = err instanceof OAuthError ? err : new OAuthError(500, 'server_error', describe(err));
      finish(e.status, e.error);
      sendError(res, e);
    }
  }

  async function handleDevice(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const params = await formParams(req);
    if (down !== undefined) {
      throw new OAuthError(503, 'temporarily_unavailable', 'the authorization server is down', down.retryAfter !== undefined ? { 'retry-after': String(down.retryAfter) } : {});
    }
    const auth = (await authenticateClient(req, params, true))!;
    const device: DeviceAuthorization = {
      deviceCode: randomToken(),
      userCode: userCode(),
      clientId: auth.client.id,
      scope: params.get('scope') ?? '',
      expiresAt: Date.now() + deviceExpiresIn * 1000,
      status: 'pending',
      polls: 0,
    };
    devices.set(device.deviceCode, device);
    sendJson(res, 200, {
      device_code: device.deviceCode,
      user_code: device.userCode,
      verification_uri: `${url}/verify`,
      verification_uri_complete: `${url}/verify?user_code=${encodeURIComponent(device.userCode)}`,
      expires_in: deviceExpiresIn,
      interval: deviceInterval,
    });
  }

  function liveToken(token: string): IssuedToken | undefined {
    const t = accessTokens.get(token);
    return t !== undefined && !t.revoked && t.expiresAt > Date.now() ? t : undefined;
  }

  async function handleIntrospect(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const params = await formParams(req);
    const token = requireParam(params, 'token');
    // ?any_mailbox=required: only tokens that open every mailbox count as active (see
    // oauth2PassdbConfig in dovecot.ts).
    const anyMailboxOnly = new URL(req.url ?? '/', 'http://localhost').searchParams.get('any_mailbox') === 'required';
    let t = liveToken(token);
    if (anyMailboxOnly && !t?.anyMailbox) t = undefined;
    introspections.push({ token, active: t !== undefined, anyMailboxOnly, at: Date.now() });
    if (t === undefined) {
      sendJson(res, 200, { active: false });
      return;
    }
    const answer: Record<string, unknown> = {
      active: true,
      username: t.subject,
      sub: t.subject,
      scope: t.scope,
      token_type: 'Bearer',
      iat: Math.floor(t.issuedAt / 1000),
      exp: Math.floor(t.expiresAt / 1000),
      iss: url,
    };
    if (t.clientId !== undefined) answer.client_id = t.clientId;
    if (t.anyMailbox) answer.any_mailbox = true;
    sendJson(res, 200, answer);
  }

  function metadata(): Record<string, unknown> {
    return {
      issuer: url,
      token_endpoint: tokenUrl,
      device_authorization_endpoint: `${url}/device`,
      introspection_endpoint: `${url}/introspect`,
      grant_types_supported: [GRANT_CLIENT_CREDENTIALS, GRANT_REFRESH_TOKEN, GRANT_JWT_BEARER, GRANT_DEVICE_CODE],
      token_endpoint_auth_methods_supported: ['client_secret_post', 'client_secret_basic', 'private_key_jwt', 'none'],
      token_endpoint_auth_signing_alg_values_supported: ASSERTION_ALGORITHMS,
      response_types_supported: [],
    };
  }

  const server = http.createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    let handled: Promise<void>;
    switch (path) {
      case '/token':
        handled = handleToken(req, res);
        break;
      case '/device':
        handled = handleDevice(req, res);
        break;
      case '/introspect':
        handled = handleIntrospect(req, res);
        break;
      case '/.well-known/oauth-authorization-server':
      case '/.well-known/openid-configuration':
        handled = Promise.resolve(sendJson(res, 200, metadata()));
        break;
      default:
        handled = Promise.resolve(sendJson(res, 404, { error: 'not_found' }));
    }
    handled.catch((err: unknown) => {
      if (res.headersSent) return;
      sendError(res, err instanceof OAuthError ? err : new OAuthError(500, 'server_error', describe(err)));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, options.host ?? '127.0.0.1', () => resolve());
  });
  url = `http://${options.host ?? '127.0.0.1'}:${(server.address() as AddressInfo).port}`;
  tokenUrl = `${url}/token`;

  function findDevice(code: string): DeviceAuthorization {
    const wanted = normalizeUserCode(code);
    const d = [...devices.values()].find((x) => normalizeUserCode(x.userCode) === wanted);
    if (d === undefined) throw new Error(`no device authorization with user code ${code}`);
    if (d.status !== 'pending') throw new Error(`device authorization ${code} is ${d.status} already`);
    return d;
  }

  return {
    url,
    tokenUrl,
    deviceUrl: `${url}/device`,
    introspectUrl: `${url}/introspect`,
    verificationUrl: `${url}/verify`,
    addClient(client: ClientRegistration): void {
      if (clients.has(client.id)) throw new Error(`client ${client.id} registered twice`);
      const c: Client = { ...client };
      if (client.publicKeyPem !== undefined) c.key = createPublicKey(client.publicKeyPem);
      clients.set(client.id, c);
    },
    addServiceAccount(account: ServiceAccountRegistration): void {
      if (serviceAccounts.has(account.email)) throw new Error(`service account ${account.email} registered twice`);
      serviceAccounts.set(account.email, { ...account, key: createPublicKey(account.publicKeyPem) });
    },
    addRefreshToken(grant: { clientId: string; subject: string; scope?: string }): string {
      if (!clients.has(grant.clientId)) throw new Error(`no client ${grant.clientId}`);
      const token = randomToken(48);
      refreshGrants.set(token, { clientId: grant.clientId, subject: grant.subject, scope: grant.scope ?? '', dead: false });
      return token;
    },
    approveDevice(code: string, subject: string): void {
      const d = findDevice(code);
      d.status = 'approved';
      d.subject = subject;
    },
    denyDevice(code: string): void {
      findDevice(code).status = 'denied';
    },
    get deviceAuthorizations() {
      return [...devices.values()];
    },
    revoke(accessToken: string): void {
      const t = accessTokens.get(accessToken);
      if (t === undefined) throw new Error('revoke: no such access token');
      t.revoked = true;
    },
    revokeRefreshToken(token: string): void {
      const g = refreshGrants.get(token);
      if (g === undefined) throw new Error('revokeRefreshToken: no such refresh token');
      g.dead = true;
    },
    expireAll(): void {
      const past = Date.now() - 1000;
      for (const t of accessTokens.values()) t.expiresAt = Math.min(t.expiresAt, past);
    },
    setDown(isDown: boolean, opts: { retryAfter?: number } = {}): void {
      down = isDown ? { ...opts } : undefined;
    },
    setDelay(ms: number): void {
      delayMs = ms;
    },
    get tokenRequests() {
      return tokenRequests;
    },
    get issued() {
      return issued;
    },
    get introspections() {
      return introspections;
    },
    generateServiceAccountKey(email: string, tokenUri: string = tokenUrl) {
      return generateServiceAccountKey(email, tokenUri);
    },
    generateClientCertificateKey,
    close(): Promise<void> {
      return new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
