/**
 * A private Dovecot (IMAP and POP3 on one Maildir store) for one test file: its own
 * configuration, temp directory and free loopback ports, nothing shared with a system instance.
 *
 * As root, mail is stored and served as the unprivileged user "nobody" (Dovecot refuses mail
 * access as uid 0); Dovecot's own internal users (dovecot, dovenull) come with its packages.
 * As any other user, every Dovecot process runs as that user.
 */
import { readFileSync } from 'node:fs';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import {
  checkUsers,
  failedStart,
  freePort,
  HOST,
  identity as mailIdentity,
  idOf,
  maildirStore,
  makeMaildirs,
  readLogs,
  ServerProcess,
  startInTempDir,
  stopOnce,
  waitForGreeting,
  which,
  withImapMailbox,
  type MailOwner,
  type TestUser,
} from './private-server.js';
import { ensureSystemDeps } from './system.js';

export { DEFAULT_USERS, emptyMailbox, imapClientOf as imapClient, withImapMailbox as withMailbox, type TestUser } from './private-server.js';

export interface DovecotOptions {
  /** Default: alice / alice-secret and bob / bob-secret. */
  users?: TestUser[];
  /** When set, the IMAP capability list Dovecot advertises (imap_capability), e.g. without UIDPLUS. */
  imapCapability?: string;
  /** Appended to the generated dovecot.conf; later settings override earlier ones. */
  extraConfig?: string;
}

export interface Dovecot {
  host: string;
  /** Plain IMAP, no TLS. */
  imapPort: number;
  /** Dovecot's own POP3 on the same store: the reference for differential tests. */
  pop3Port: number;
  /** Its private temp directory. */
  dir: string;
  users: TestUser[];
  /** Path of the user's Maildir. */
  maildir(user: string): string;
  /** Drops one message into the user's Maildir/new exactly as given (no line-end conversion). */
  deliver(user: string, message: Buffer | string): Promise<void>;
  /** Stops Dovecot, waits until its processes are gone and removes the temp directory. */
  stop(): Promise<void>;
}

const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 10_000;
const LOGS = ['dovecot.log', 'stderr.log'];
const START_ATTEMPTS = 5;

/**
 * Dovecot settings for tests full of failed logins: no delay after a failure, and no growing
 * penalty per client address (its anvil penalty socket is made unusable), so that the delays
 * a test measures are the proxy's own.
 */
export const NO_LOGIN_PENALTY = ['auth_failure_delay = 0', 'service anvil {', '  unix_listener anvil-auth-penalty {', '    mode = 0', '  }', '}'].join('\n');

interface Identity extends MailOwner {
  /** Configuration lines that depend on who runs Dovecot. */
  config: string[];
}

function identity(): Identity {
  const uid = process.getuid?.() ?? 0;
  if (uid === 0) {
    const { mailUid, mailGid, chownFiles } = mailIdentity();
    return {
      mailUid,
      mailGid,
      chownFiles,
      config: [
        // The mail processes run as nobody, which is not in the dovecot group: let them report
        // their statistics anyway instead of logging a permission error for every session.
        'service stats {',
        '  unix_listener stats-writer {',
        '    mode = 0666',
        '  }',
        '}',
      ],
    };
  }
  const user = os.userInfo().username;
  const group = idOf(['-gn']);
  return {
    mailUid: uid,
    mailGid: process.getgid?.() ?? 0,
    chownFiles: false,
    config: [
      `default_internal_user = ${user}`,
      `default_internal_group = ${group}`,
      `default_login_user = ${user}`,
      // Without root there is no chroot.
      'service imap-login {',
      '  chroot =',
      '}',
      'service pop3-login {',
      '  chroot =',
      '}',
      'service anvil {',
      '  chroot =',
      '}',
    ],
  };
}

function dovecotBinary(): string {
  const bin = which('dovecot', ['/usr/sbin/dovecot']);
  if (bin === undefined) throw new Error('dovecot is not installed (scripts/system-deps.sh installs it)');
  return bin;
}

/** A value safe inside a dovecot.conf line. */
function confValue(value: string): string {
  if (/[\r\n]/.test(value)) throw new Error(`newline in a Dovecot setting: ${JSON.stringify(value)}`);
  return value;
}

/** Dovecot takes e-mail addresses as user names, and any password without ':' or a line end. */
const USER_RULES = { name: /^[A-Za-z0-9._@+-]+$/, password: /^[^:\r\n]*$/ };

function buildConfig(dir: string, imapPort: number, pop3Port: number, id: Identity, options: DovecotOptions): string {
  const lines = [
    '# Generated for one test run.',
    `base_dir = ${join(dir, 'run')}`,
    `state_dir = ${join(dir, 'state')}`,
    `log_path = ${join(dir, 'dovecot.log')}`,
    `info_log_path = ${join(dir, 'dovecot.log')}`,
    'log_timestamp = "%Y-%m-%d %H:%M:%S "',
    'protocols = imap pop3',
    `listen = ${HOST}`,
    'ssl = no',
    'disable_plaintext_auth = no',
    'auth_mechanisms = plain login',
    'auth_verbose = yes',
    'first_valid_uid = 1',
    'first_valid_gid = 1',
    `mail_location = maildir:${join(dir, 'home')}/%u/Maildir`,
    'mail_fsync = never',
    'pop3_uidl_format = %08Xu%08Xv',
    // Tests open and close many sessions for one user quickly; Dovecot's default of 10 would
    // make them depend on how fast it notices closed connections.
    'mail_max_userip_connections = 100',
    'passdb {',
    '  driver = passwd-file',
    `  args = scheme=PLAIN username_format=%u ${join(dir, 'passwd')}`,
    '}',
    'userdb {',
    '  driver = static',
    `  args = uid=${id.mailUid} gid=${id.mailGid} home=${join(dir, 'home')}/%u`,
    '}',
    'service imap-login {',
    '  inet_listener imap {',
    `    address = ${HOST}`,
    `    port = ${imapPort}`,
    '  }',
    '  inet_listener imaps {',
    '    port = 0',
    '  }',
    '}',
    'service pop3-login {',
    '  inet_listener pop3 {',
    `    address = ${HOST}`,
    `    port = ${pop3Port}`,
    '  }',
    '  inet_listener pop3s {',
    '    port = 0',
    '  }',
    '}',
    ...id.config,
  ];
  if (options.imapCapability !== undefined) lines.push(`imap_capability = ${confValue(options.imapCapability)}`);
  if (options.extraConfig !== undefined) lines.push(options.extraConfig);
  return `${lines.join('\n')}\n`;
}

interface Started {
  proc: ServerProcess;
  imapPort: number;
  pop3Port: number;
}

async function startOnce(dir: string, id: Identity, options: DovecotOptions): Promise<Started> {
  const imapPort = await freePort();
  let pop3Port = await freePort();
  while (pop3Port === imapPort) pop3Port = await freePort();
  const conf = join(dir, 'dovecot.conf');
  await writeFile(conf, buildConfig(dir, imapPort, pop3Port, id, options));
  await rm(join(dir, 'dovecot.log'), { force: true });
  await rm(join(dir, 'stderr.log'), { force: true });
  // Foreground (-F), in its own process group so that it can be stopped with all its children.
  const proc = ServerProcess.spawn('Dovecot', dir, [dovecotBinary(), '-F', '-c', conf], join(dir, 'stderr.log'), process.env, 'TERM');
  const greetings = [[imapPort, /^\* OK/], [pop3Port, /^\+OK/]] as const;
  if (await waitForGreeting(proc, greetings, START_TIMEOUT_MS)) return { proc, imapPort, pop3Port };
  return failedStart(proc, `IMAP port ${imapPort} and POP3 port ${pop3Port}`, START_TIMEOUT_MS, () => readLogs(dir, LOGS), /address already in use/i);
}

async function prepareStore(dir: string, id: Identity, users: TestUser[]): Promise<void> {
  await mkdir(join(dir, 'state'), { mode: 0o750 });
  // Read by the auth process, which runs as Dovecot's internal user; test passwords are no secret.
  const passwd = join(dir, 'passwd');
  await writeFile(passwd, users.map((u) => `${u.name}:{PLAIN}${u.password}::::::\n`).join(''));
  await chmod(passwd, 0o644);
  await makeMaildirs(dir, id, users);
}

export async function startDovecot(options: DovecotOptions = {}): Promise<Dovecot> {
  ensureSystemDeps();
  const users = checkUsers(options.users, 'startDovecot', USER_RULES);
  const id = identity();
  const { dir, proc, imapPort, pop3Port } = await startInTempDir('dovecot', START_ATTEMPTS, {
    prepare: (dir) => prepareStore(dir, id, users),
    startOnce: (dir) => startOnce(dir, id, options),
  });
  return {
    host: HOST,
    imapPort,
    pop3Port,
    dir,
    users,
    ...maildirStore(dir, users, id, 'Dovecot'),
    // Dovecot's master stops its children on SIGTERM: SIGKILL only after STOP_TIMEOUT_MS.
    stop: stopOnce(proc, dir, STOP_TIMEOUT_MS),
  };
}

/** One message of a mailbox as the store holds it. */
export interface StoredMessage {
  uid: number;
  subject: string;
  /** Whether it carries \Deleted. */
  deleted: boolean;
}

/** Subject and \Deleted flag of every message in the user's mailbox, read over IMAP, by UID order. */
export async function mailboxState(d: Dovecot, user: TestUser, mailbox = 'INBOX'): Promise<StoredMessage[]> {
  return withImapMailbox(
    d,
    user,
    async (imap) => {
      if ((imap.mailbox as { exists: number }).exists === 0) return [];
      const all = await imap.fetchAll('1:*', { uid: true, flags: true, envelope: true });
      return all
        .sort((a, b) => a.uid - b.uid)
        .map((m) => ({ uid: m.uid, subject: m.envelope?.subject ?? '', deleted: m.flags?.has('\\Deleted') ?? false }));
    },
    mailbox,
  );
}

/** The Dovecot log so far (for diagnosing a failing test). */
export function dovecotLog(d: Dovecot): string {
  try {
    return readFileSync(join(d.dir, 'dovecot.log'), 'utf8');
  } catch {
    return '';
  }
}

export interface OAuth2PassdbOptions {
  /** SASL mechanisms the oauth2 passdb serves (and Dovecot offers besides PLAIN and LOGIN). Default: xoauth2 oauthbearer. */
  mechanisms?: string;
  /**
   * Whether a token whose introspection answer says `any_mailbox: true` opens every mailbox
   * (Microsoft 365 app-only tokens, see test/support/oauth-server.ts). Default true.
   */
  anyMailbox?: boolean;
}

/**
 * Makes Dovecot check bearer tokens (XOAUTH2, OAUTHBEARER) with an RFC 7662 introspection
 * endpoint, such as the one of test/support/oauth-server.ts: writes the oauth2 passdb
 * configuration into `dir` (which must outlive Dovecot) and answers the `extraConfig` for
 * startDovecot. Add NO_LOGIN_PENALTY when refused logins are part of the test.
 *
 * A token is accepted for the mailbox its introspection answer names as `username`. With
 * `anyMailbox`, a second oauth2 passdb asks `<introspectUrl>?any_mailbox=required`, where the
 * server answers active only for tokens that open every mailbox, and accepts those for any
 * mailbox. (Dovecot 2.3 takes a token whose answer lacks the active_attribute as active, so the
 * distinction has to be made by the server.) Dovecot keeps no token cache: every login is
 * introspected, once per passdb asked.
 */
export async function oauth2PassdbConfig(dir: string, introspectUrl: string, options: OAuth2PassdbOptions = {}): Promise<string> {
  const mechanisms = confValue(options.mechanisms ?? 'xoauth2 oauthbearer');
  const common = (url: string) => [
    'introspection_mode = post',
    `introspection_url = ${confValue(url)}`,
    'force_introspection = yes',
    'username_attribute = username',
    'active_attribute = active',
    'active_value = true',
  ];
  const perUser = join(dir, 'dovecot-oauth2.conf.ext');
  await writeFile(perUser, [...common(introspectUrl), ''].join('\n'));
  await chmod(perUser, 0o644);
  const passdb = (file: string) => ['passdb {', '  driver = oauth2', `  mechanisms = ${mechanisms}`, `  args = ${file}`, '}'];
  const lines = [`auth_mechanisms = plain login ${mechanisms}`, ...passdb(perUser)];
  if (options.anyMailbox ?? true) {
    const anyMailbox = join(dir, 'dovecot-oauth2-any-mailbox.conf.ext');
    const url = `${introspectUrl}${introspectUrl.includes('?') ? '&' : '?'}any_mailbox=required`;
    // The same constant on both sides of Dovecot's username comparison: any mailbox matches.
    await writeFile(anyMailbox, [...common(url), 'username_format = any-mailbox', ''].join('\n'));
    await chmod(anyMailbox, 0o644);
    lines.push(...passdb(anyMailbox));
  }
  return lines.join('\n');
}
