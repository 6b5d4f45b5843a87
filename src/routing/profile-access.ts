/**
 * What both front doors need to log a profile's users in: the proxy's own users (for token
 * grants) and the profile's tokens, one cache per scope, so that POP3 and SMTP share a token
 * wherever IMAP and SMTP take the same one. Secrets are read here, once, at start.
 */
import type { Logger } from 'winston';
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
import type { TokenEvents } from '../metrics/token-metrics.js';
import type { FetchFunction } from '../net/outbound-http.js';

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

/** What the token requests of every profile share: the way out, the metrics, the log. */
export interface AccessContext {
  /** The outbound HTTP agent (proxies); undefined: the global fetch. */
  readonly fetch?: FetchFunction | undefined;
  readonly events?: TokenEvents | undefined;
  readonly logger?: Logger | undefined;
  /** The config file, for the command an administrator is told to run. */
  readonly configFile?: string | undefined;
}

export function profileAccess(
  name: string,
  profile: ProfileSettings,
  users: LocalUsers | undefined,
  context: AccessContext = {},
): ProfileAccess {
  const auth = profile.auth;
  if (auth.grant === 'password') return { users, imapTokens: undefined, smtpTokens: undefined };
  // One warning per mailbox whose refresh token is refused, whichever scope asked (IMAP, SMTP).
  const warned = new Set<string>();
  const imapTokens = tokenSource(name, auth, context, warned);
  const smtpScope = profile.smtpScope;
  const sameScope = smtpScope === undefined || smtpScope === auth.scope;
  const smtpTokens = sameScope ? imapTokens : tokenSource(name, { ...auth, scope: smtpScope }, context, warned);
  return { users, imapTokens, smtpTokens };
}

function tokenSource(name: string, auth: TokenAuth, context: AccessContext, warned: Set<string>): TokenSource {
  const grant = tokenGrant(name, auth, context.fetch);
  const fetch: TokenFetcher = async (mailbox) => {
    try {
      const token = await grant.fetch(mailbox);
      context.events?.fetched(name, 'ok');
      warned.delete(mailbox);
      return token;
    } catch (err) {
      context.events?.fetched(name, err instanceof TokenError ? err.result : 'unreachable');
      const refused = err instanceof TokenError && err.oauthError === 'invalid_grant';
      if (auth.grant === 'refresh-token' && refused && !warned.has(mailbox)) {
        // Per mailbox, not per login: a poller's every minute would drown the one line that matters.
        warned.add(mailbox);
        const config = context.configFile ?? 'FILE';
        context.logger?.error(
          `Profile ${name}: the token endpoint refused the refresh token of ${mailbox} (invalid_grant: revoked, ` +
            `expired or its sign-in withdrawn); sign the account in again: ` +
            `pop3-imap-proxy oauth-login --config ${config} ` +
            `--profile ${name} --account ${mailbox}`,
        );
      }
      throw err;
    }
  };
  return { cache: new TokenCache(fetch), key: grant.key };
}

interface Grant {
  readonly fetch: TokenFetcher;
  readonly key: (mailbox: string) => string;
}

/** App-wide tokens (client credentials) serve every mailbox; the others are per mailbox. */
const APP_WIDE = () => 'app';
const PER_MAILBOX = (mailbox: string) => mailbox.toLowerCase();

function tokenGrant(name: string, auth: TokenAuth, fetch: FetchFunction | undefined): Grant {
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
      const options = { tokenUrl: auth.tokenUrl, clientId: auth.clientId, scope: auth.scope, ...secrets, fetch };
      return { fetch: clientCredentialsGrant(options), key: APP_WIDE };
    }
    case 'jwt-bearer': {
      let serviceAccount;
      try {
        serviceAccount = parseServiceAccount(readSecret(auth.serviceAccount, what('service account key')));
      } catch (err) {
        if (err instanceof TokenError) throw new ConfigError(what(err.message));
        throw err;
      }
      const options = { serviceAccount, scope: auth.scope, tokenUrl: auth.tokenUrl, fetch };
      return { fetch: jwtBearerGrant(options), key: PER_MAILBOX };
    }
    case 'refresh-token': {
      const store = refreshTokenStore(name, auth);
      const clientSecret = auth.clientSecret && readSecret(auth.clientSecret, what('client secret'));
      const { tokenUrl, clientId, scope } = auth;
      const options = { tokenUrl, clientId, clientSecret, scope, store, fetch };
      return { fetch: refreshTokenGrant(options), key: PER_MAILBOX };
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
