/**
 * The mailbox policy flags: which messages a session serves, what it does with them, and what
 * the greeting and CAPA announce. What QUIT does with deleted messages, whether \Deleted is
 * stored at DELE and the UIDL format are each profile's own (profiles.ts): these flags only set
 * the default profile's. Merged into the command line's table by options.ts.
 */
import { count, ConfigError, seconds } from './values.js';

const GROUP = 'Mailbox policy:';
const DEFAULT_GREETING = 'POP3 server ready.';

export const MAILBOX_OPTIONS = {
  'max-messages': { type: 'number', describe: 'Serve only the newest N messages of the mailbox', group: GROUP },
  listing: {
    choices: ['all', 'unseen'],
    default: 'all',
    describe:
      'Which messages a session lists: all, or only those without \\Seen (with --delete-mode seen: keep on server)',
    group: GROUP,
  },
  'mark-seen': {
    type: 'boolean',
    default: false,
    describe: 'Set \\Seen on a message once RETR delivered it',
    group: GROUP,
  },
  'delete-mode': {
    type: 'string',
    default: 'expunge',
    describe:
      'What QUIT does with deleted messages: expunge, move:FOLDER (keep a copy there), flag (leave them flagged ' +
      '\\Deleted) or seen (mark them \\Seen and keep them)',
    group: GROUP,
  },
  'flag-on-dele': {
    type: 'boolean',
    default: false,
    describe:
      'Store \\Deleted at DELE and take it back at RSET, instead of at QUIT (a killed proxy leaves the flags behind; ' +
      'ignored on servers that expunge flagged mail at once, such as Gmail)',
    group: GROUP,
  },
  'folder-separator': {
    type: 'string',
    describe: 'A login NAME<CHAR>FOLDER logs in as NAME and serves FOLDER (e.g. # for alice#Invoices); off by default',
    group: GROUP,
  },
  greeting: {
    type: 'string',
    default: DEFAULT_GREETING,
    describe: 'Text of the greeting after "+OK" (at most 506 octets)',
    group: GROUP,
  },
  'login-delay': {
    type: 'number',
    describe: 'Seconds a user must wait between logins; announced in CAPA as LOGIN-DELAY',
    group: GROUP,
  },
  expire: {
    type: 'string',
    describe: 'Days the server keeps retrieved mail, or NEVER; announced in CAPA as EXPIRE',
    group: GROUP,
  },
} as const;

export interface MailboxPolicy {
  /** Serve only the newest this many messages. */
  readonly maxMessages: number | undefined;
  /** Which messages a session lists. */
  readonly listing: 'all' | 'unseen';
  readonly markSeen: boolean;
  /** The character that splits a login into user and folder; undefined: none does. */
  readonly folderSeparator: string | undefined;
  /** The text after "+OK" in the greeting. */
  readonly greeting: string;
  /** Minimum time between two logins of one user (announced as LOGIN-DELAY). */
  readonly loginDelayS: number | undefined;
  /** What CAPA announces as EXPIRE: days, or 'NEVER'. */
  readonly expire: number | 'NEVER' | undefined;
}

type Raw = Record<string, unknown>;

export function mailboxPolicy(raw: Raw, at: (key: string) => string): MailboxPolicy {
  const maxMessages = raw['max-messages'] as number | undefined;
  const loginDelay = raw['login-delay'] as number | undefined;
  return {
    maxMessages: maxMessages === undefined ? undefined : count(at('max-messages'), maxMessages),
    listing: raw.listing === 'unseen' ? 'unseen' : 'all',
    markSeen: raw['mark-seen'] === true,
    folderSeparator: folderSeparator(at('folder-separator'), raw['folder-separator'] as string | undefined),
    greeting: greeting(at('greeting'), raw.greeting as string),
    loginDelayS: loginDelay === undefined ? undefined : seconds(at('login-delay'), loginDelay) / 1000,
    expire: raw.expire === undefined ? undefined : expire(at('expire'), raw.expire as string),
  };
}

/** One printable character that a user name does not otherwise hold (not @, not a space). */
function folderSeparator(flag: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (!/^[\x21-\x7e]$/.test(value) || value === '@')
    throw new ConfigError(`${flag} must be one printable character other than @`);
  return value;
}

function greeting(flag: string, value: string): string {
  if (/[\r\n\0]/.test(value)) throw new ConfigError(`${flag} must be one line`);
  // "+OK " and CRLF leave 506 of the 512 octets a reply line may have.
  if (Buffer.byteLength(value) > 506) throw new ConfigError(`${flag} is longer than 506 octets`);
  // A <...> in the greeting is an APOP timestamp to clients, and a proxy cannot do APOP.
  if (/<[^>]*>/.test(value))
    throw new ConfigError(`${flag} must not contain <...>: clients would take it for an APOP challenge`);
  return value;
}

function expire(flag: string, value: string): number | 'NEVER' {
  if (value.toUpperCase() === 'NEVER') return 'NEVER';
  if (/^\d{1,5}$/.test(value)) return Number(value);
  throw new ConfigError(`${flag}: ${value} is not a number of days or NEVER`);
}
