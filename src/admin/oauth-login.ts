/**
 * `pop3-imap-proxy oauth-login --config FILE --profile NAME --mailbox ADDRESS`: an
 * administrator lets the proxy read a mailbox through a profile with grant refresh-token. The
 * device authorization grant (RFC 8628): the command prints where to sign in and the code to
 * enter, waits for the sign-in, and saves the refresh token, encrypted, in the profile's token
 * store. The proxy then refreshes it by itself, saving each rotated one.
 */
import * as oidc from 'openid-client';
import yargs from 'yargs';
import { parseCommandLine } from '../config/options.js';
import { readSecret } from '../config/secrets.js';
import { ConfigError } from '../config/values.js';
import { configuration } from '../oauth/grants.js';
import { refreshTokenStore } from '../routing/profile-access.js';

export async function oauthLoginCommand(argv: readonly string[], output: NodeJS.WritableStream): Promise<void> {
  const args = await yargs([...argv])
    .scriptName('pop3-imap-proxy oauth-login')
    .options({
      config: { type: 'string', demandOption: true, describe: 'The proxy\'s config file, with the profile' },
      profile: { type: 'string', demandOption: true, describe: 'A profile with grant refresh-token and a device-url' },
      mailbox: { type: 'string', demandOption: true, describe: 'The mailbox address to sign in as' },
    })
    .strict()
    .exitProcess(false)
    .fail((msg, err) => {
      throw new ConfigError(msg || err?.message || 'invalid arguments');
    })
    .parseAsync();
  const parsed = await parseCommandLine(['--config', args.config]);
  const profile = parsed?.config.routing.profiles.get(args.profile);
  if (!profile) throw new ConfigError(`--profile: ${args.config} has no profile ${args.profile}`);
  const auth = profile.auth;
  if (auth.grant !== 'refresh-token') throw new ConfigError(`--profile: ${args.profile} does not use grant refresh-token`);
  if (auth.deviceUrl === undefined) throw new ConfigError(`--profile: ${args.profile} has no device-url`);
  const store = refreshTokenStore(args.profile, auth);
  const clientSecret = auth.clientSecret && readSecret(auth.clientSecret, `profile ${args.profile}: client secret`);
  const config = configuration(auth.tokenUrl, auth.clientId, clientSecret === undefined ? oidc.None() : oidc.ClientSecretPost(clientSecret), {
    device_authorization_endpoint: auth.deviceUrl,
  });
  const device = await oidc.initiateDeviceAuthorization(config, { scope: auth.scope });
  output.write(
    `To let the proxy read ${args.mailbox}, sign in as that mailbox at\n  ${device.verification_uri_complete ?? device.verification_uri}\n` +
      `and enter the code ${device.user_code} (valid for ${Math.round(device.expires_in / 60)} minutes). Waiting...\n`,
  );
  const tokens = await oidc.pollDeviceAuthorizationGrant(config, device);
  if (!tokens.refresh_token) throw new Error('the server returned no refresh token: add offline_access to the profile\'s scope');
  await store.save(args.mailbox, tokens.refresh_token);
  output.write(`Saved the refresh token for ${args.mailbox} in ${auth.tokenStore}.\n`);
}
