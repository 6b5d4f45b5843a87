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
import { proxyUrlProblem, outboundHttp } from '../net/outbound-http.js';
import { configuration } from '../oauth/grants.js';
import { refreshTokenStore } from '../routing/profile-access.js';

export async function oauthLoginCommand(argv: readonly string[], output: NodeJS.WritableStream): Promise<void> {
  const args = await yargs([...argv])
    .scriptName('pop3-imap-proxy oauth-login')
    .options({
      config: { type: 'string', demandOption: true, describe: "The proxy's config file, with the profile" },
      profile: { type: 'string', demandOption: true, describe: 'A profile with grant refresh-token and a device-url' },
      account: {
        type: 'string',
        demandOption: true,
        alias: 'mailbox',
        describe: 'The account (mailbox address) to sign in as',
      },
      'http-proxy': {
        type: 'string',
        describe: 'HTTP proxy to the authorization server (wins over HTTPS_PROXY, HTTP_PROXY and the config file)',
      },
    })
    .usage(
      '$0 --config FILE --profile NAME --account ADDRESS\n\nSigns an account in (device code) and saves its ' +
        'refresh token for the profile.',
    )
    .help()
    .strict()
    .exitProcess(false)
    .fail((msg, err) => {
      throw new ConfigError(msg || err?.message || 'invalid arguments');
    })
    .parseAsync();
  // --help was answered (yargs printed the usage): nothing else to do.
  if (args.help) return;
  const parsed = await parseCommandLine(['--config', args.config]);
  const profile = parsed?.config.routing.profiles.get(args.profile);
  if (!profile) throw new ConfigError(`--profile: ${args.config} has no profile ${args.profile}`);
  const auth = profile.auth;
  if (auth.grant !== 'refresh-token')
    throw new ConfigError(`--profile: ${args.profile} does not use grant refresh-token`);
  if (auth.deviceUrl === undefined) throw new ConfigError(`--profile: ${args.profile} has no device-url`);
  const store = refreshTokenStore(args.profile, auth);
  const clientSecret = auth.clientSecret && readSecret(auth.clientSecret, `profile ${args.profile}: client secret`);
  const httpProxy = args['http-proxy'] ?? parsed?.config.httpProxy;
  const problem = httpProxy === undefined ? undefined : proxyUrlProblem(httpProxy);
  if (problem !== undefined) throw new ConfigError(`--http-proxy: ${httpProxy} ${problem}`);
  // The same way out as the proxy's own token requests: --http-proxy, else HTTPS_PROXY/NO_PROXY.
  const outbound = outboundHttp(httpProxy);
  try {
    const clientAuth = clientSecret === undefined ? oidc.None() : oidc.ClientSecretPost(clientSecret);
    const endpoints = { device_authorization_endpoint: auth.deviceUrl };
    const config = configuration(auth.tokenUrl, auth.clientId, clientAuth, endpoints, outbound.fetch);
    const refreshToken = await signIn(config, auth.scope, args.account, output);
    await store.save(args.account, refreshToken);
  } finally {
    await outbound.close().catch(() => undefined);
  }
  output.write(`Saved the refresh token for ${args.account} in ${auth.tokenStore}.\n`);
}

/** The device authorization grant: prints where to sign in, waits, and answers the refresh token. */
async function signIn(
  config: oidc.Configuration,
  scope: string,
  account: string,
  output: NodeJS.WritableStream,
): Promise<string> {
  const device = await oidc.initiateDeviceAuthorization(config, { scope });
  const minutes = Math.round(device.expires_in / 60);
  output.write(
    `To let the proxy read ${account}, sign in as that mailbox at\n` +
      `  ${device.verification_uri_complete ?? device.verification_uri}\n` +
      `and enter the code ${device.user_code} (valid for ${minutes} minutes). Waiting...\n`,
  );
  const tokens = await oidc.pollDeviceAuthorizationGrant(config, device).catch((err: unknown) => {
    throw new Error(deviceFailure(err, minutes));
  });
  if (!tokens.refresh_token)
    throw new Error("the server returned no refresh token: add offline_access to the profile's scope");
  return tokens.refresh_token;
}

/**
 * What a failed device sign-in means and what to do about it (openid-client itself slows down
 * when the server says slow_down, and only gives up on the other answers).
 */
function deviceFailure(err: unknown, minutes: number): string {
  const answer = err as { error?: unknown; error_description?: unknown; message?: unknown };
  const said = typeof answer.error_description === 'string' ? ` (${answer.error_description})` : '';
  switch (answer.error) {
    case 'access_denied':
      return `the sign-in was declined${said}: run oauth-login again and accept what the app asks for`;
    case 'expired_token':
      return `the code expired before the sign-in${said}: run oauth-login again and sign in within ${minutes} minutes`;
    case 'authorization_pending':
    case 'slow_down':
      return `the authorization server kept the sign-in pending${said}: run oauth-login again`;
    case undefined:
      return `the sign-in could not be completed: ${String(answer.message ?? err)}`;
    default:
      return `the authorization server refused the sign-in: ${String(answer.error)}${said}`;
  }
}
