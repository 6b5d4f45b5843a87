/**
 * Logging in with a token of the proxy's own, for backends that refuse passwords (Microsoft
 * 365, Google Workspace): the POP3 client is checked against the proxy's own users first (a
 * wrong password touches no token), then the backend is logged in to as the user's mailbox
 * with a token from the profile's grant. A token the backend refuses is dropped and fetched
 * once more before the client is told.
 */
import type { Logger } from 'winston';
import type { LocalUsers } from '../auth/local-users.js';
import { MaildropError } from '../maildrop/errors.js';
import type { ClientInfo, Credentials, Maildrop, MaildropProvider } from '../maildrop/maildrop.js';
import { TokenError } from '../oauth/grants.js';
import type { TokenCache } from '../oauth/token-cache.js';

export class TokenLogin implements MaildropProvider {
  constructor(
    private readonly backend: MaildropProvider,
    private readonly users: LocalUsers,
    private readonly tokens: TokenCache,
    /** The cache key of a mailbox's token: one key for every mailbox when the token is app-wide. */
    private readonly tokenKey: (mailbox: string) => string,
    private readonly logger: Logger,
  ) {}

  async authenticate(credentials: Credentials, client: ClientInfo): Promise<Maildrop> {
    // A client that brings its own bearer token (AUTH XOAUTH2) is checked by the backend itself.
    if (!('password' in credentials)) return this.backend.authenticate(credentials, client);
    const user = await this.users.verify(credentials.user, credentials.password);
    if (!user) throw new MaildropError('credentials', 'unknown user or wrong password (local users)');
    // A delegate's token opens a shared mailbox: the token is the delegate's, user= the mailbox's.
    const key = this.tokenKey(user.tokenAccount ?? user.account);
    const folder = credentials.folder ?? user.folder;
    const login = (accessToken: string) =>
      this.backend.authenticate({ user: user.account, accessToken, folder }, client);
    const first = await this.token(key);
    try {
      return await login(first);
    } catch (err) {
      if (!(err instanceof MaildropError) || err.kind !== 'credentials') throw err;
      this.logger.info(`The backend refused the token for ${user.account}; fetching a new one`);
      this.tokens.invalidate(key, first);
    }
    const second = await this.token(key);
    try {
      return await login(second);
    } catch (err) {
      if (!(err instanceof MaildropError) || err.kind !== 'credentials') throw err;
      this.tokens.invalidate(key, second);
      // The client's password was right: the proxy's access is what the backend refuses.
      const why =
        `the mail server refuses the proxy's token for ${user.account} (check the app's permission ` +
        `on that mailbox)`;
      throw new MaildropError('permanent', why, { cause: err });
    }
  }

  private async token(key: string): Promise<string> {
    try {
      return await this.tokens.get(key);
    } catch (err) {
      if (err instanceof TokenError)
        throw new MaildropError(err.permanent ? 'permanent' : 'temporary', err.message, { cause: err });
      throw new MaildropError('temporary', `token request failed: ${(err as Error).message}`, { cause: err });
    }
  }
}
