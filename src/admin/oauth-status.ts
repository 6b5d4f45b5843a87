/**
 * `pop3-imap-proxy oauth-status --config FILE [--profile NAME]`: which accounts have a refresh
 * token stored for each profile with grant refresh-token, when it was last rotated (signed in,
 * or replaced by the server) and when it last worked, so that an operator sees which mailbox
 * needs `oauth-login` again before its users do. It prints no token, and asks no server.
 */
import yargs from 'yargs';
import { readUsersFile } from '../auth/local-users.js';
import { parseCommandLine } from '../config/options.js';
import { ConfigError } from '../config/values.js';
import type { StoredTokenInfo } from '../oauth/refresh-token-store.js';
import { refreshTokenStore } from '../routing/profile-access.js';

export const OAUTH_STATUS_USAGE = `Usage: pop3-imap-proxy oauth-status --config FILE [--profile NAME]

Lists the refresh tokens stored for the profiles with grant refresh-token (or for NAME alone):
profile, account, when the token was last rotated and when it last worked (recorded at most
hourly). No token is printed. An account whose token the server refuses is named in the
proxy's log with the oauth-login command that signs it in again.
`;

export async function oauthStatusCommand(argv: readonly string[], output: NodeJS.WritableStream): Promise<void> {
  const args = await yargs([...argv])
    .scriptName('pop3-imap-proxy oauth-status')
    .options({
      config: { type: 'string', demandOption: true, describe: "The proxy's config file" },
      profile: { type: 'string', describe: 'Only this profile (grant refresh-token)' },
    })
    .usage(OAUTH_STATUS_USAGE)
    .help(false)
    .strict()
    .exitProcess(false)
    .fail((msg, err) => {
      throw new ConfigError(msg || err?.message || 'invalid arguments');
    })
    .parseAsync();
  const parsed = await parseCommandLine(['--config', args.config]);
  if (parsed === undefined) return;
  const profiles = [...parsed.config.routing.profiles].filter(([name, p]) => {
    if (args.profile !== undefined && name !== args.profile) return false;
    return p.auth.grant === 'refresh-token';
  });
  if (args.profile !== undefined && profiles.length === 0) {
    const known = parsed.config.routing.profiles.has(args.profile);
    const why = known
      ? `${args.profile} does not use grant refresh-token`
      : `${args.config} has no profile ${args.profile}`;
    throw new ConfigError(`--profile: ${why}`);
  }
  if (profiles.length === 0) return void output.write(`No profile of ${args.config} uses grant refresh-token.\n`);
  const known = knownAccounts(parsed.config.usersFile);
  const rows: string[][] = [['PROFILE', 'ACCOUNT', 'LAST ROTATION', 'LAST USE']];
  for (const [name, profile] of profiles) {
    if (profile.auth.grant !== 'refresh-token') continue;
    const infos = await refreshTokenStore(name, profile.auth).list(known);
    if (infos.length === 0) rows.push([name, `(none stored in ${profile.auth.tokenStore})`, '-', '-']);
    for (const info of infos) rows.push(row(name, info));
  }
  output.write(table(rows));
}

function row(profile: string, info: StoredTokenInfo): string[] {
  const account = info.account ?? `(unknown account, file ${info.file.slice(0, 12)}...)`;
  if (info.problem !== undefined) return [profile, account, `unreadable: ${info.problem}`, '-'];
  const when = (ms: number | undefined) =>
    ms === undefined || ms === 0 ? 'not recorded' : new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');
  return [profile, account, when(info.rotatedAt), when(info.usedAt)];
}

/** The accounts of the users file: they name the files of the older format, which hold no address. */
function knownAccounts(usersFile: string | undefined): string[] {
  if (usersFile === undefined) return [];
  try {
    const users = [...readUsersFile(usersFile).values()];
    return users.flatMap((u) => [u.account, ...(u.tokenAccount === undefined ? [] : [u.tokenAccount])]);
  } catch {
    // The listing works without it; only older files then show no address.
    return [];
  }
}

function table(rows: readonly string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  // The last column is not padded: no trailing blanks.
  const cellOf = (r: readonly string[], cell: string, i: number) =>
    i === r.length - 1 ? cell : cell.padEnd(widths[i]);
  const line = (r: readonly string[]) => r.map((cell, i) => cellOf(r, cell, i)).join('  ');
  return rows.map(line).join('\n') + '\n';
}
