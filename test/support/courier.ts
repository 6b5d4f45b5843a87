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
import { chmod, chown, mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import {
  checkUsers,
  freePort,
  HOST,
  identity,
  imapClientOf,
  libraryPath,
  maildirName,
  readLogs,
  ServerProcess,
  SHELL_FUNCTIONS,
  shq,
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
  await chmod(dir, 0o755);
  await mkdir(join(dir, 'etc'), { mode: 0o755 });
  await mkdir(join(dir, 'run'), { mode: 0o755 });
  await mkdir(join(dir, 'run', 'authdaemon'), { mode: 0o750 });
  await writeFile(join(dir, 'etc', 'authdaemonrc'), authdaemonrc());
  makeUserdb(root, dir, id, users);
  await mkdir(join(dir, 'home'), { mode: 0o755 });
  for (const u of users) {
    const home = join(dir, 'home', u.name);
    const paths = [home, join(home, 'Maildir'), ...['cur', 'new', 'tmp'].map((s) => join(home, 'Maildir', s))];
    for (const p of paths) {
      await mkdir(p, { mode: 0o700 });
      if (id.chownFiles) await chown(p, id.mailUid, id.mailGid);
    }
  }
}

class StartError extends Error {
  constructor(message: string, readonly portTaken: boolean) {
    super(message);
  }
}

async function startOnce(root: string, dir: string, options: CourierOptions): Promise<{ proc: ServerProcess; imapPort: number }> {
  const imapPort = await freePort();
  await writeFile(join(dir, 'run.sh'), runScript(root, dir, imapPort));
  await rm(join(dir, 'stderr.log'), { force: true });
  const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C', ...imapEnvironment(options) };
  const proc = ServerProcess.start('Courier', dir, join(dir, 'run.sh'), join(dir, 'stderr.log'), env);
  if (await waitForGreeting(proc, imapPort, GREETING, START_TIMEOUT_MS)) return { proc, imapPort };
  await proc.kill().catch(() => undefined);
  const logs = readLogs(dir, ['stderr.log']);
  const why = proc.spawnError !== undefined
    ? `could not run unshare: ${proc.spawnError.message}`
    : proc.exitInfo !== undefined
      ? `Courier exited during startup (${proc.exitInfo})`
      : `Courier did not greet on IMAP port ${imapPort} within ${START_TIMEOUT_MS / 1000} s`;
  throw new StartError(`${why}\n${logs}`, /address already in use/i.test(logs));
}

export async function startCourier(options: CourierOptions = {}): Promise<Courier> {
  const root = unpackedServers();
  const users = checkUsers(options.users, 'startCourier');
  const id = identity();
  const dir = await mkdtemp(join(os.tmpdir(), 'pop3test-courier-'));
  let started: { proc: ServerProcess; imapPort: number } | undefined;
  try {
    await prepare(root, dir, id, users);
    for (let attempt = 1; started === undefined; attempt++) {
      try {
        started = await startOnce(root, dir, options);
      } catch (err) {
        if (!(err instanceof StartError && err.portTaken && attempt < START_ATTEMPTS)) throw err;
      }
    }
    // Proves that authdaemond and the userdb work before any test relies on them.
    for (const u of users) {
      const imap = await imapClientOf({ host: HOST, imapPort: started.imapPort }, u).catch((err: Error) => {
        throw new Error(`Courier refuses the login of ${u.name}: ${err.message}\n${readLogs(dir, ['stderr.log'])}`);
      });
      await imap.logout().catch(() => imap.close());
    }
  } catch (err) {
    await started?.proc.kill().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  const { proc, imapPort } = started;

  const maildir = (user: string): string => {
    if (!users.some((u) => u.name === user)) throw new Error(`no test user ${JSON.stringify(user)} in this Courier`);
    return join(dir, 'home', user, 'Maildir');
  };

  let stopping: Promise<void> | undefined;
  return {
    host: HOST,
    imapPort,
    dir,
    users,
    maildir,
    async deliver(user: string, message: Buffer | string): Promise<void> {
      const box = maildir(user);
      const data = typeof message === 'string' ? Buffer.from(message, 'utf8') : message;
      const name = maildirName();
      const tmp = join(box, 'tmp', name);
      await writeFile(tmp, data, { mode: 0o600 });
      if (id.chownFiles) await chown(tmp, id.mailUid, id.mailGid);
      await rename(tmp, join(box, 'new', name));
    },
    stop(): Promise<void> {
      stopping ??= (async () => {
        await proc.kill();
        await rm(dir, { recursive: true, force: true });
      })();
      return stopping;
    },
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
