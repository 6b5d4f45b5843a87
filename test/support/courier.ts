/**
 * A private Courier-IMAP 5.x for one test file: unpacked from Debian's packages (never
 * installed: they conflict with Dovecot's), with its own authdaemon, userdb, Maildirs and free
 * loopback port.
 *
 * Courier's authdaemond and login programs have /etc/courier and /run/courier built in: they
 * run in mount and PID namespaces of their own, where this server's etc/ and run/ folders are
 * bind-mounted there; nothing outside sees them. couriertcpd runs imaplogin, which asks
 * authdaemond (module authuserdb: a userdb made with Courier's makedatprog) and then runs imapd
 * as the user in the user's Maildir. Plain LOGIN is allowed without TLS.
 *
 * Runs as root only (mount namespaces; imaplogin changes user): the mail belongs to "nobody".
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  checkUsers,
  failedStart,
  freePort,
  HOST,
  identity,
  libraryPath,
  maildirStore,
  makeMaildirs,
  proveLogins,
  readLogs,
  ServerProcess,
  SHELL_FUNCTIONS,
  shq,
  startInTempDir,
  stopOnce,
  unpackedServers,
  waitForGreeting,
  type Identity,
  type ImapTestServer,
  type TestUser,
} from './private-server.js';

export interface CourierOptions {
  /** Default: alice / alice-secret and bob / bob-secret. */
  users?: TestUser[];
  /** The capability list Courier advertises (IMAP_CAPABILITY); default as Debian ships it. */
  imapCapability?: string;
}

export interface Courier extends ImapTestServer {
  /** Path of the user's Maildir. */
  maildir(user: string): string;
  /**
   * Drops one message into the user's Maildir/new exactly as given. Courier reads Maildir
   * files as LF text (it serves each LF as CRLF, even one after a CR): give LF line ends, as
   * for Dovecot. A message without a final line end is served so.
   */
  deliver(user: string, message: Buffer | string): Promise<void>;
}

const START_TIMEOUT_MS = 15_000;
const START_ATTEMPTS = 5;
const GREETING = /^\* OK .*Courier-IMAP/;
const LOGS = ['stderr.log'];

/** As /etc/courier/imapd of Debian's courier-imap 5.0 sets them (TLS left out). */
function imapEnvironment(options: CourierOptions): Record<string, string> {
  return {
    IMAP_CAPABILITY: options.imapCapability ?? 'IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT THREAD=REFERENCES SORT QUOTA IDLE',
    IMAP_KEYWORDS: '1',
    IMAP_ACL: '1',
    IMAP_PROXY: '0',
    IMAP_IDLE_TIMEOUT: '60',
    IMAP_MAILBOX_SANITY_CHECK: '1',
    IMAP_DISABLETHREADSORT: '0',
    IMAP_CHECK_ALL_FOLDERS: '0',
    IMAP_OBSOLETE_CLIENT: '0',
    IMAP_UMASK: '022',
    IMAP_USELOCKS: '1',
    IMAP_ENHANCEDIDLE: '0',
    IMAP_TRASHFOLDERNAME: 'Trash',
    // Debian's Trash:7 would purge old mail from Trash at every login.
    IMAP_EMPTYTRASH: '',
    IMAP_MOVE_EXPUNGE_TO_TRASH: '0',
    HEADERFROM: 'X-IMAP-Sender',
    MAILDIRPATH: 'Maildir',
  };
}

function authdaemonrc(): string {
  return ['authmodulelist="authuserdb"', 'authmodulelistorig="authuserdb"', 'daemons=2', 'authdaemonvar=/run/courier/authdaemon', 'DEBUG_LOGIN=0', 'DEFAULTOPTIONS=""', 'LOGGEROPTS=""', ''].join('\n');
}

function runScript(root: string, dir: string, port: number): string {
  const bin = (p: string) => shq(join(root, p));
  return [
    'set -eu',
    `DIR=${shq(dir)}`,
    SHELL_FUNCTIONS,
    'make_mountpoint /etc courier dir',
    'mount --bind "$DIR/etc" /etc/courier',
    'make_mountpoint /run courier dir',
    'mount --bind "$DIR/run" /run/courier',
    `export LD_LIBRARY_PATH=${shq(libraryPath(root))}`,
    `${bin('usr/lib/courier/courier-authlib/authdaemond')} &`,
    'wait_for -S /run/courier/authdaemon/socket',
    `run_server ${bin('usr/sbin/couriertcpd')} -address=${HOST} -maxprocs=200 -maxperip=200 -nodnslookup -noidentlookup ${port} ` +
      `${bin('usr/lib/courier/courier/imaplogin')} ${bin('usr/bin/imapd')} Maildir`,
    '',
  ].join('\n');
}

/** Courier's userdb.dat and userdbshadow.dat, made with its own makedatprog. */
function makeUserdb(root: string, dir: string, id: Identity, users: TestUser[]): void {
  const makedat = join(root, 'usr/lib/courier/courier-authlib/makedatprog');
  const env = { ...process.env, LD_LIBRARY_PATH: libraryPath(root) };
  const make = (name: string, lines: string[]) =>
    execFileSync(makedat, ['-', join(dir, 'etc', `${name}.tmp`), join(dir, 'etc', `${name}.dat`)], {
      input: `${lines.join('\n')}\n.\n`,
      env,
      stdio: ['pipe', 'ignore', 'pipe'],
      timeout: 10_000,
    });
  make(
    'userdb',
    users.map((u) => {
      const home = join(dir, 'home', u.name);
      return `${u.name}\tuid=${id.mailUid}|gid=${id.mailGid}|home=${home}|mail=${join(home, 'Maildir')}`;
    }),
  );
  make(
    'userdbshadow',
    users.map((u) => `${u.name}\tsystempw={SHA256}${createHash('sha256').update(u.password, 'utf8').digest('base64')}`),
  );
}

async function prepare(root: string, dir: string, id: Identity, users: TestUser[]): Promise<void> {
  // /etc/courier and /run/courier inside the namespace, where imapd runs as the mail user:
  // 0755 whatever the umask (which masks mkdir's mode).
  for (const sub of ['etc', 'run']) {
    await mkdir(join(dir, sub));
    await chmod(join(dir, sub), 0o755);
  }
  await mkdir(join(dir, 'run', 'authdaemon'), { mode: 0o750 });
  await writeFile(join(dir, 'etc', 'authdaemonrc'), authdaemonrc());
  makeUserdb(root, dir, id, users);
  await makeMaildirs(dir, id, users);
}

async function startOnce(root: string, dir: string, options: CourierOptions): Promise<{ proc: ServerProcess; imapPort: number }> {
  const imapPort = await freePort();
  await writeFile(join(dir, 'run.sh'), runScript(root, dir, imapPort));
  await rm(join(dir, 'stderr.log'), { force: true });
  const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C', ...imapEnvironment(options) };
  const proc = ServerProcess.start('Courier', dir, join(dir, 'run.sh'), join(dir, 'stderr.log'), env);
  if (await waitForGreeting(proc, [[imapPort, GREETING]], START_TIMEOUT_MS)) return { proc, imapPort };
  return failedStart(proc, `IMAP port ${imapPort}`, START_TIMEOUT_MS, () => readLogs(dir, LOGS), /address already in use/i);
}

export async function startCourier(options: CourierOptions = {}): Promise<Courier> {
  const root = unpackedServers();
  const users = checkUsers(options.users, 'startCourier');
  const id = identity();
  const { dir, proc, imapPort } = await startInTempDir('courier', START_ATTEMPTS, {
    prepare: (dir) => prepare(root, dir, id, users),
    startOnce: (dir) => startOnce(root, dir, options),
    // Proves that authdaemond and the userdb work.
    check: (dir, s) => proveLogins({ host: HOST, imapPort: s.imapPort }, users, 'Courier', () => readLogs(dir, LOGS)),
  });
  return {
    host: HOST,
    imapPort,
    dir,
    users,
    ...maildirStore(dir, users, id, 'Courier'),
    stop: stopOnce(proc, dir),
  };
}

/** What Courier logged so far (authdaemond, couriertcpd, imapd), for diagnosing a failing test. */
export function courierLog(c: Courier): string {
  try {
    return readFileSync(join(c.dir, 'stderr.log'), 'latin1');
  } catch {
    return '';
  }
}
