/**
 * The way in to each profile's backend: an IMAP maildrop provider with the profile's server and
 * mailbox policy, behind a token login when the profile's grant is not the client's password.
 * Secrets are read here, once, at start.
 */
import type { Logger } from 'winston';
import type { LocalUsers } from '../auth/local-users.js';
import type { ProfileSettings, TokenAuth } from '../config/profiles.js';
import { readSecret } from '../config/secrets.js';
import { ConfigError } from '../config/values.js';
import { ImapMaildropProvider, type ImapBackendOptions } from '../imap/imap-maildrop.js';
import { compileUidlFormat } from '../imap/uidl-format.js';
import type { MaildropProvider } from '../maildrop/maildrop.js';
import { clientCredentialsGrant, jwtBearerGrant, parseServiceAccount, refreshTokenGrant, TokenError, type TokenFetcher } from '../oauth/grants.js';
import { RefreshTokenStore } from '../oauth/refresh-token-store.js';
import { TokenCache } from '../oauth/token-cache.js';
import { TokenLogin } from './token-login.js';

/** What every profile's backend shares: timeouts, policy and metrics that are not per server. */
export type SharedBackendOptions = Omit<ImapBackendOptions, keyof ProfileSettings['imap'] | 'uidl' | 'deleteMode' | 'flagOnDele'>;

export function profileBackend(name: string, profile: ProfileSettings, shared: SharedBackendOptions, users: LocalUsers | undefined, logger: Logger): MaildropProvider {
  const provider = new ImapMaildropProvider(
    { ...shared, ...profile.imap, uidl: compileUidlFormat(profile.uidlFormat), deleteMode: profile.deleteMode, flagOnDele: profile.flagOnDele },
    logger,
  );
  if (profile.auth.grant === 'password') return provider;
  if (!users) throw new ConfigError(`profile ${name}: --users-file is required for grant ${profile.auth.grant}`);
  const grant = tokenGrant(name, profile.auth);
  return new TokenLogin(provider, users, new TokenCache(grant.fetch), grant.key, logger);
}

interface Grant {
  readonly fetch: TokenFetcher;
  /** The token cache's key for a mailbox. */
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
          : { privateKeyPem: readSecret(credential.privateKey, what('private key')), certificatePem: readSecret(credential.certificate, what('certificate')) };
      return { fetch: clientCredentialsGrant({ tokenUrl: auth.tokenUrl, clientId: auth.clientId, scope: auth.scope, ...secrets }), key: APP_WIDE };
    }
    case 'jwt-bearer': {
      let serviceAccount;
      try {
        serviceAccount = parseServiceAccount(readSecret(auth.serviceAccount, what('service account key')));
      } catch (err) {
        if (err instanceof TokenError) throw new ConfigError(what(err.message));
        throw err;
      }
      return { fetch: jwtBearerGrant({ serviceAccount, scope: auth.scope, tokenUrl: auth.tokenUrl }), key: PER_MAILBOX };
    }
    case 'refresh-token': {
      const store = refreshTokenStore(name, auth);
      const clientSecret = auth.clientSecret && readSecret(auth.clientSecret, what('client secret'));
      return { fetch: refreshTokenGrant({ tokenUrl: auth.tokenUrl, clientId: auth.clientId, clientSecret, scope: auth.scope, store }), key: PER_MAILBOX };
    }
  }
}

export function refreshTokenStore(name: string, auth: Extract<TokenAuth, { grant: 'refresh-token' }>): RefreshTokenStore {
  try {
    return new RefreshTokenStore(auth.tokenStore, readSecret(auth.tokenStoreKey, `profile ${name}: token store key`));
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(`profile ${name}: ${(err as Error).message}`);
  }
}
