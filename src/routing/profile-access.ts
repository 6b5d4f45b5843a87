/**
 * What both front doors need to log a profile's users in: the proxy's own users (for token
 * grants) and the profile's tokens, one cache per scope, so that POP3 and SMTP share a token
 * wherever IMAP and SMTP take the same one. Secrets are read here, once, at start.
 */
import type { LocalUsers } from '../auth/local-users.js';
import type { ProfileSettings, TokenAuth } from '../config/profiles.js';
import { readSecret } from '../config/secrets.js';
import { ConfigError } from '../config/values.js';
import {
  clientCredentialsGrant,
  jwtBearerGrant,
  parseServiceAccount,
  refreshTokenGrant,
  TokenError,
  type TokenFetcher,
} from '../oauth/grants.js';
import { RefreshTokenStore } from '../oauth/refresh-token-store.js';
import { TokenCache } from '../oauth/token-cache.js';

/** Tokens of one grant and scope, by mailbox. */
export interface TokenSource {
  readonly cache: TokenCache;
  /** The cache key of a mailbox's token: one key for every mailbox when the token is app-wide. */
  readonly key: (mailbox: string) => string;
}

export interface ProfileAccess {
  readonly users: LocalUsers | undefined;
  /** Undefined for the password grant: the client's own credentials go to the server. */
  readonly imapTokens: TokenSource | undefined;
  /** The IMAP tokens where the profile names no other scope for SMTP. */
  readonly smtpTokens: TokenSource | undefined;
}

export function profileAccess(name: string, profile: ProfileSettings, users: LocalUsers | undefined): ProfileAccess {
  const auth = profile.auth;
  if (auth.grant === 'password') return { users, imapTokens: undefined, smtpTokens: undefined };
  const imapTokens = tokenSource(name, auth);
  const smtpScope = profile.smtpScope;
  const smtpTokens =
    smtpScope === undefined || smtpScope === auth.scope ? imapTokens : tokenSource(name, { ...auth, scope: smtpScope });
  return { users, imapTokens, smtpTokens };
}

function tokenSource(name: string, auth: TokenAuth): TokenSource {
  const grant = tokenGrant(name, auth);
  return { cache: new TokenCache(grant.fetch), key: grant.key };
}

interface Grant {
  readonly fetch: TokenFetcher;
  readonly key: (mailbox: string) => string;
}

/** App-wide tokens (client credentials) serve every mailbox; the others are per mailbox. */
const APP_WIDE = () => 'app';
const PER_MAILBOX = (mailbox: string) => mailbox.toLowerCase();

function tokenGrant(name: string, auth: TokenAuth): Grant {
  const what = (secret: string) => `profile ${name}: ${secret}`;
  switch (auth.grant) {
    case 'client-credentials': {
      const credential = auth.credential;
      const secrets =
        credential.kind === 'secret'
          ? { clientSecret: readSecret(credential.secret, what('client secret')) }
          : {
              privateKeyPem: readSecret(credential.privateKey, what('private key')),
              certificatePem: readSecret(credential.certificate, what('certificate')),
            };
      return {
        fetch: clientCredentialsGrant({
          tokenUrl: auth.tokenUrl,
          clientId: auth.clientId,
          scope: auth.scope,
          ...secrets,
        }),
        key: APP_WIDE,
      };
    }
    case 'jwt-bearer': {
      let serviceAccount;
      try {
        serviceAccount = parseServiceAccount(readSecret(auth.serviceAccount, what('service account key')));
      } catch (err) {
        if (err instanceof TokenError) throw new ConfigError(what(err.message));
        throw err;
      }
      return {
        fetch: jwtBearerGrant({ serviceAccount, scope: auth.scope, tokenUrl: auth.tokenUrl }),
        key: PER_MAILBOX,
      };
    }
    case 'refresh-token': {
      const store = refreshTokenStore(name, auth);
      const clientSecret = auth.clientSecret && readSecret(auth.clientSecret, what('client secret'));
      return {
        fetch: refreshTokenGrant({
          tokenUrl: auth.tokenUrl,
          clientId: auth.clientId,
          clientSecret,
          scope: auth.scope,
          store,
        }),
        key: PER_MAILBOX,
      };
    }
  }
}

export function refreshTokenStore(
  name: string,
  auth: Extract<TokenAuth, { grant: 'refresh-token' }>,
): RefreshTokenStore {
  try {
    return new RefreshTokenStore(auth.tokenStore, readSecret(auth.tokenStoreKey, `profile ${name}: token store key`));
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(`profile ${name}: ${(err as Error).message}`);
  }
}
