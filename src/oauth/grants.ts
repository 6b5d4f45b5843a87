/**
 * The OAuth 2.0 grants by which the proxy gets its own access tokens (openid-client):
 * - client credentials: one app-only token for every mailbox (Microsoft 365, IMAP.AccessAsApp),
 *   the client authenticated by a secret or by an assertion signed with its certificate's key;
 * - JWT bearer: a token per mailbox for a Google service account with domain-wide delegation
 *   (`sub` = the mailbox);
 * - refresh token: a token per mailbox from the refresh token an administrator obtained once
 *   (`pop3-imap-proxy oauth-login`), saved again at once whenever the server rotates it.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { importPKCS8, SignJWT } from 'jose';
import * as oidc from 'openid-client';
import type { FetchFunction } from '../net/outbound-http.js';
import type { AccessToken } from './token-cache.js';
import type { RefreshTokenStore } from './refresh-token-store.js';

/** Fetches a token for a mailbox (ignored by grants whose token serves every mailbox). */
export type TokenFetcher = (mailbox: string) => Promise<AccessToken>;

/** Why a token could not be had: `permanent` when only an administrator can mend it. */
export class TokenError extends Error {
  constructor(
    message: string,
    readonly permanent: boolean,
    options?: { cause?: unknown; status?: number; oauthError?: string },
  ) {
    super(message, options);
    this.name = 'TokenError';
    this.status = options?.status;
    this.oauthError = options?.oauthError;
  }

  /** The token endpoint's HTTP status, when it answered. */
  readonly status: number | undefined;
  /** Its OAuth error code (invalid_grant, invalid_client...), when it said one. */
  readonly oauthError: string | undefined;

  /** Whether the endpoint answered and said no (refused), or could not be reached or failed (5xx). */
  get result(): 'refused' | 'unreachable' {
    if (this.status !== undefined) return this.status < 500 ? 'refused' : 'unreachable';
    return this.permanent ? 'refused' : 'unreachable';
  }
}

/** Longest wait for the token endpoint. */
const TOKEN_TIMEOUT_S = 15;
/** Used when a server does not say how long its token lives. */
const DEFAULT_LIFE_S = 3600;
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

export function clientCredentialsGrant(options: {
  readonly tokenUrl: string;
  readonly clientId: string;
  readonly scope: string;
  readonly clientSecret?: string;
  readonly privateKeyPem?: string;
  readonly certificatePem?: string;
  readonly fetch?: FetchFunction;
}): TokenFetcher {
  const auth =
    options.clientSecret !== undefined
      ? Promise.resolve(oidc.ClientSecretPost(options.clientSecret))
      : certificateAuth(options);
  const config = auth.then((a) => configuration(options.tokenUrl, options.clientId, a, {}, options.fetch));
  return async () => tokenOf(await request(oidc.clientCredentialsGrant(await config, { scope: options.scope })));
}

/** A Google service account key, as downloaded (JSON). */
interface ServiceAccountKey {
  readonly client_email: string;
  readonly private_key: string;
  readonly private_key_id?: string;
  readonly token_uri?: string;
}

export function parseServiceAccount(json: string): ServiceAccountKey {
  let key: Partial<ServiceAccountKey>;
  try {
    key = JSON.parse(json) as Partial<ServiceAccountKey>;
  } catch {
    throw new TokenError('the service account key is not JSON', true);
  }
  if (typeof key.client_email !== 'string' || typeof key.private_key !== 'string') {
    throw new TokenError('the service account key lacks client_email or private_key', true);
  }
  return key as ServiceAccountKey;
}

export function jwtBearerGrant(options: {
  readonly serviceAccount: ServiceAccountKey;
  readonly scope: string;
  readonly tokenUrl: string | undefined;
  readonly fetch?: FetchFunction;
}): TokenFetcher {
  const account = options.serviceAccount;
  const tokenUrl = options.tokenUrl ?? account.token_uri ?? 'https://oauth2.googleapis.com/token';
  const key = importPKCS8(account.private_key, 'RS256');
  const config = configuration(tokenUrl, account.client_email, oidc.None(), {}, options.fetch);
  return async (mailbox) => {
    const assertion = await new SignJWT({ scope: options.scope })
      .setProtectedHeader({
        alg: 'RS256',
        typ: 'JWT',
        ...(account.private_key_id ? { kid: account.private_key_id } : {}),
      })
      .setIssuer(account.client_email)
      .setSubject(mailbox)
      .setAudience(tokenUrl)
      .setIssuedAt()
      // Google takes at most an hour.
      .setExpirationTime('1h')
      .sign(await key);
    return tokenOf(await request(oidc.genericGrantRequest(config, JWT_BEARER, { assertion })));
  };
}

export function refreshTokenGrant(options: {
  readonly tokenUrl: string;
  readonly clientId: string;
  readonly clientSecret: string | undefined;
  readonly scope: string;
  readonly store: RefreshTokenStore;
  readonly fetch?: FetchFunction;
}): TokenFetcher {
  const auth = options.clientSecret === undefined ? oidc.None() : oidc.ClientSecretPost(options.clientSecret);
  const config = configuration(options.tokenUrl, options.clientId, auth, {}, options.fetch);
  return async (mailbox) => {
    const refreshToken = await options.store.load(mailbox);
    if (refreshToken === undefined)
      throw new TokenError(`no refresh token for ${mailbox}: run pop3-imap-proxy oauth-login for it`, true);
    const response = await request(oidc.refreshTokenGrant(config, refreshToken, { scope: options.scope }));
    // A rotated refresh token replaces the old one at once: the old one may no longer work.
    if (response.refresh_token && response.refresh_token !== refreshToken)
      await options.store.save(mailbox, response.refresh_token);
    // oauth-status shows when each refresh token last worked (written at most hourly).
    else await options.store.used(mailbox);
    return tokenOf(response);
  };
}

/** The token endpoint of an authorization server, with how the client authenticates to it. */
export function configuration(
  tokenUrl: string,
  clientId: string,
  auth: oidc.ClientAuth,
  extra: Partial<oidc.ServerMetadata> = {},
  fetch?: FetchFunction,
): oidc.Configuration {
  const url = new URL(tokenUrl);
  const config = new oidc.Configuration(
    { issuer: url.origin, token_endpoint: tokenUrl, ...extra },
    clientId,
    undefined,
    auth,
  );
  config.timeout = TOKEN_TIMEOUT_S;
  // The outbound agent honours HTTPS_PROXY/NO_PROXY and --http-proxy (outbound-http.ts).
  if (fetch !== undefined) config[oidc.customFetch] = fetch;
  // Profiles allow plain http only to loopback (a local token service).
  if (url.protocol === 'http:') oidc.allowInsecureRequests(config);
  return config;
}

/**
 * private_key_jwt as Microsoft Entra wants it: the assertion's audience is the token endpoint,
 * and its header names the certificate by its SHA-1 thumbprint (x5t).
 */
async function certificateAuth(options: {
  readonly tokenUrl: string;
  readonly privateKeyPem?: string;
  readonly certificatePem?: string;
}): Promise<oidc.ClientAuth> {
  const key = await importPKCS8(options.privateKeyPem!, 'RS256');
  const x5t = createHash('sha1').update(new X509Certificate(options.certificatePem!).raw).digest('base64url');
  return oidc.PrivateKeyJwt(key, {
    [oidc.modifyAssertion]: (header, payload) => {
      header.x5t = x5t;
      payload.aud = options.tokenUrl;
    },
  });
}

function tokenOf(response: oidc.TokenEndpointResponse): AccessToken {
  return { value: response.access_token, expiresAt: Date.now() + (response.expires_in ?? DEFAULT_LIFE_S) * 1000 };
}

/** Runs a token request, telling a refusal that needs an administrator from a passing failure. */
async function request<T>(pending: Promise<T>): Promise<T> {
  try {
    return await pending;
  } catch (err) {
    // A 401 that challenges (client_secret_basic refused): the client's registration is wrong.
    if (err instanceof oidc.WWWAuthenticateChallengeError) {
      const status = err.status;
      throw new TokenError(`token endpoint refused the client (HTTP ${status})`, true, { cause: err, status });
    }
    if (err instanceof oidc.ResponseBodyError) {
      // invalid_grant: the refresh token or the delegation is gone; invalid_client,
      // unauthorized_client, invalid_scope: the registration is wrong. Retrying will not help.
      const permanent = err.status < 500 && err.error !== 'temporarily_unavailable' && err.error !== 'slow_down';
      const said = `${err.error}${err.error_description ? ` (${err.error_description})` : ''}`;
      const details = { cause: err, status: err.status, oauthError: err.error };
      throw new TokenError(`token endpoint refused: ${said}`, permanent, details);
    }
    throw new TokenError(`token endpoint unreachable: ${(err as Error).message}`, false, { cause: err });
  }
}
