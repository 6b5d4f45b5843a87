/**
 * The way in to each profile's IMAP backend: a maildrop provider with the profile's server and
 * mailbox policy, behind a token login when the profile's grant is not the client's password.
 */
import type { Logger } from 'winston';
import type { ProfileSettings } from '../config/profiles.js';
import { ConfigError } from '../config/values.js';
import { ImapMaildropProvider, type ImapBackendOptions } from '../imap/imap-maildrop.js';
import { compileUidlFormat } from '../imap/uidl-format.js';
import type { MaildropProvider } from '../maildrop/maildrop.js';
import type { ProfileAccess } from './profile-access.js';
import { TokenLogin } from './token-login.js';

/** What every profile's backend shares: timeouts, policy and metrics that are not per server. */
export type SharedBackendOptions = Omit<
  ImapBackendOptions,
  keyof ProfileSettings['imap'] | 'uidl' | 'deleteMode' | 'flagOnDele'
>;

export function profileBackend(
  name: string,
  profile: ProfileSettings,
  shared: SharedBackendOptions,
  access: ProfileAccess,
  logger: Logger,
): MaildropProvider {
  const { uidlFormat, deleteMode, flagOnDele } = profile;
  const provider = new ImapMaildropProvider(
    { ...shared, ...profile.imap, uidl: compileUidlFormat(uidlFormat), deleteMode, flagOnDele },
    logger,
  );
  if (access.imapTokens === undefined) return provider;
  if (!access.users) throw new ConfigError(`profile ${name}: --users-file is required for grant ${profile.auth.grant}`);
  return new TokenLogin(provider, access.users, access.imapTokens.cache, access.imapTokens.key, logger);
}
