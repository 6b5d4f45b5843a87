/**
 * The proxy's own users, for backends the proxy logs in to with a token of its own: a POP3
 * client is let through only with a password that matches one of its login's hashes. The file
 * (YAML) maps each login name to the account it reads and one or more password hashes (several
 * applications may each have their own password for one account):
 *
 *   erp-importer:
 *     account: invoices@example.com
 *     passwords:
 *       - $scrypt$ln=15,r=8,p=1$...$...
 *
 * It is read at start and again on reload() (SIGHUP); a file that does not read or parse is
 * refused as a whole and the users in force stay.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from '../config/values.js';
import { checkHashFormat, DEFAULT_COST, hashPassword, verifyPassword } from './password-hash.js';

export interface LocalUser {
  readonly login: string;
  /** The account (its address) the backend is logged in to, with the proxy's token. */
  readonly account: string;
  /** Other addresses this user may send as, besides the account's own (send-as). */
  readonly sendAs: readonly string[];
  /**
   * Whose token opens the account, when it is another's (a delegate reading a shared mailbox
   * with its own refresh token); undefined: the account's own.
   */
  readonly tokenAccount: string | undefined;
  /** The folder served, when not the profile's. */
  readonly folder: string | undefined;
  readonly passwords: readonly string[];
}

/** A users file that cannot be used: a configuration error like any other. */
export class UsersFileError extends ConfigError {
  constructor(message: string) {
    super(message);
    this.name = 'UsersFileError';
  }
}

export class LocalUsers {
  private users: ReadonlyMap<string, LocalUser>;
  /** What the last read of the file found worth telling (a key under its old name). */
  warnings: readonly string[] = [];
  /** Checked for unknown logins, so that they take as long to refuse as wrong passwords. */
  private readonly decoy: Promise<string> = hashPassword('decoy', DEFAULT_COST);

  constructor(private readonly path: string) {
    this.users = this.read();
  }

  get size(): number {
    return this.users.size;
  }

  /** Reads the file again; throws UsersFileError (and keeps the users in force) if it is bad. */
  reload(): void {
    this.users = this.read();
  }

  private read(): ReadonlyMap<string, LocalUser> {
    const warnings: string[] = [];
    const users = readUsersFile(this.path, warnings);
    this.warnings = warnings;
    return users;
  }

  /** The user whose login and password these are, or undefined. Login names are case-insensitive. */
  async verify(login: string, password: string): Promise<LocalUser | undefined> {
    const user = this.users.get(login.toLowerCase());
    if (!user) {
      await verifyPassword(password, await this.decoy);
      return undefined;
    }
    // Every hash is checked, the first match not cutting the work short.
    const matches = await Promise.all(user.passwords.map((hash) => verifyPassword(password, hash)));
    return matches.includes(true) ? user : undefined;
  }
}

export function readUsersFile(path: string, warnings: string[] = []): ReadonlyMap<string, LocalUser> {
  let parsed: unknown;
  try {
    parsed = parseYaml(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new UsersFileError(`users file ${path}: ${(err as Error).message.split('\n', 1)[0]}`);
  }
  if (parsed === null || parsed === undefined) return new Map();
  if (typeof parsed !== 'object' || Array.isArray(parsed))
    throw new UsersFileError(`users file ${path} must map login names to users`);
  const users = new Map<string, LocalUser>();
  for (const [login, entry] of Object.entries(parsed as Record<string, unknown>)) {
    const user = parseUser(login, entry, path, warnings);
    if (users.has(user.login))
      throw new UsersFileError(`users file ${path}: login ${login} appears twice (names are case-insensitive)`);
    users.set(user.login, user);
  }
  return users;
}

function parseUser(login: string, entry: unknown, path: string, warnings: string[]): LocalUser {
  const where = `users file ${path}, user ${login}`;
  if (!/^[\x21-\x7e]{1,255}$/.test(login))
    throw new UsersFileError(`${where}: a login name is 1-255 printable characters without spaces`);
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry))
    throw new UsersFileError(`${where}: expected account and passwords`);
  const fields = entry as Record<string, unknown>;
  const {
    account: given,
    mailbox,
    passwords,
    'send-as': sendAs,
    'token-account': tokenAccount,
    folder,
    ...rest
  } = fields;
  const unknown = Object.keys(rest)[0];
  if (unknown !== undefined) throw new UsersFileError(`${where}: unknown setting "${unknown}"`);
  if (given !== undefined && mailbox !== undefined)
    throw new UsersFileError(`${where}: give account (the new name of mailbox), not both`);
  // "mailbox" is the IMAP folder everywhere else (--mailbox): the address is the account.
  if (mailbox !== undefined)
    warnings.push(`${where}: "mailbox" is now "account" (the address logged in to); the old name is still read`);
  const account = given ?? mailbox;
  if (typeof account !== 'string' || !/^[^\s@]+@[^\s@]+$/.test(account))
    throw new UsersFileError(`${where}: account must be an address (name@domain)`);
  const list = typeof passwords === 'string' ? [passwords] : passwords;
  if (!Array.isArray(list) || list.length === 0 || !list.every((p): p is string => typeof p === 'string')) {
    throw new UsersFileError(`${where}: passwords must be one or more hashes`);
  }
  for (const hash of list) {
    try {
      checkHashFormat(hash);
    } catch (err) {
      throw new UsersFileError(`${where}: ${(err as Error).message}`);
    }
  }
  if (tokenAccount !== undefined && (typeof tokenAccount !== 'string' || !/^[^\s@]+@[^\s@]+$/.test(tokenAccount))) {
    throw new UsersFileError(`${where}: token-account must be an address (name@domain)`);
  }
  if (folder !== undefined && (typeof folder !== 'string' || folder.trim() === ''))
    throw new UsersFileError(`${where}: folder must be a folder name`);
  return {
    login: login.toLowerCase(),
    account,
    passwords: list,
    sendAs: senders(sendAs, where),
    tokenAccount: tokenAccount,
    folder: folder,
  };
}

/** The addresses besides the account's own that the user may send as (SMTP MAIL FROM). */
function senders(value: unknown, where: string): readonly string[] {
  if (value === undefined) return [];
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list) || !list.every((a): a is string => typeof a === 'string' && /^[^\s@]+@[^\s@]+$/.test(a))) {
    throw new UsersFileError(`${where}: send-as must be one or more addresses (name@domain)`);
  }
  return list;
}
