/**
 * What the administrator's commands say to --help: the main help lists them (yargs epilogue),
 * and each command's own --help prints its usage and exits 0 before doing anything.
 */
export const COMMANDS_EPILOGUE = [
  'Commands:',
  '  hash-password        Hash a password (read from standard input) for the users file',
  '  oauth-login          Sign a mailbox in for a profile with grant refresh-token (device code)',
  '  oauth-status         List the stored refresh tokens: profile, account, last rotation, last use',
  '  healthcheck [FILE]   Exit 0 when the proxy that wrote the status file answers /healthz',
  '',
  "Run 'pop3-imap-proxy COMMAND --help' for a command's own options.",
].join('\n');

export const HASH_PASSWORD_USAGE = `Usage: pop3-imap-proxy hash-password

Prints the scrypt hash of a password for the users file (--users-file). The password is read
from standard input, never from the command line: on a terminal it is asked for twice without
echo; otherwise the first line of standard input is the password, e.g.
  printf %s "$PASSWORD" | pop3-imap-proxy hash-password
`;

export const HEALTHCHECK_USAGE = `Usage: pop3-imap-proxy healthcheck [STATUS_FILE]

Exits 0 when the proxy that wrote STATUS_FILE (its --status-file; default
$POP3PROXY_STATUS_FILE) is running and its /healthz answers, 1 otherwise, saying why. The
container image's HEALTHCHECK runs it.
`;

/** Whether the command's arguments ask for its usage. */
export function wantsHelp(args: readonly string[]): boolean {
  return args.includes('--help') || args.includes('-h');
}
