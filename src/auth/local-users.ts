/**
 * The proxy's own users, for backends the proxy logs in to with a token of its own: a POP3
 * client is let through only with a password that matches one of its login's hashes. The file
 * (YAML) maps each login name to the mailbox it reads and one or more password hashes (several
 * applications may each have their own password for one mailbox):
 *
 *   erp-importer:
 *     mailbox: invoices@example.com
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
  /** The mailbox address the backend is logged in to. */
  readonly mailbox: string;
  /** Other addresses this user may send as, besides the mailbox's own (send-as). */
  readonly sendAs: readonly string[];
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
  /** Checked for unknown logins, so that they take as long to refuse as wrong passwords. */
  private readonly decoy: Promise<string> = hashPassword('decoy', DEFAULT_COST);

  constructor(private readonly path: string) {
    this.users = readUsersFile(path);
  }

  get size(): number {
    return this.users.size;
  }

  /** Reads the file again; throws UsersFileError (and keeps the users in force) if it is bad. */
  reload(): void {
    this.users = readUsersFile(this.path);
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

export function readUsersFile(path: string): ReadonlyMap<string, LocalUser> {
  let parsed: unknown;
  try {
    parsed = parseYaml(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new UsersFileError(`users file ${path}: ${(err as Error).message.split('\n', 1)[0]}`);
  }
  if (parsed === null || parsed === undefined) return new Map();
  if (typeof parsed !== 'object' || Array.isArray(parsed)) throw new UsersFileError(`users file ${path} must map login names to users`);
  const users = new Map<string, LocalUser>();
  for (const [login, entry] of Object.entries(parsed as Record<string, unknown>)) {
    const user = parseUser(login, entry, path);
    if (users.has(user.login)) throw new UsersFileError(`users file ${path}: login ${login} appears twice (names are case-insensitive)`);
    users.set(user.login, user);
  }
  return users;
}

function parseUser(login: string, entry: unknown, path: string): LocalUser {
  const where = `users file ${path}, user ${login}`;
  if (!/^[\x21-\x7e]{1,255}$/.test(login)) throw new UsersFileError(`${where}: a login name is 1-255 printable characters without spaces`);
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) throw new UsersFileError(`${where}: expected mailbox and passwords`);
  const { mailbox, passwords, 'send-as': sendAs, ...rest } = entry as Record<string, unknown>;
  const unknown = Object.keys(rest)[0];
  if (unknown !== undefined) throw new UsersFileError(`${where}: unknown setting "${unknown}"`);
  if (typeof mailbox !== 'string' || !/^[^\s@]+@[^\s@]+$/.test(mailbox)) throw new UsersFileError(`${where}: mailbox must be an address (name@domain)`);
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
  return { login: login.toLowerCase(), mailbox, passwords: list, sendAs: senders(sendAs, where) };
}

/** The addresses besides the mailbox's own that the user may send as (SMTP MAIL FROM). */
function senders(value: unknown, where: string): readonly string[] {
  if (value === undefined) return [];
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list) || !list.every((a): a is string => typeof a === 'string' && /^[^\s@]+@[^\s@]+$/.test(a))) {
    throw new UsersFileError(`${where}: send-as must be one or more addresses (name@domain)`);
  }
  return list;
}
