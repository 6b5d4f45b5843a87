/**
 * A private Cyrus IMAP 3.x for one test file: unpacked from Debian's packages (never installed:
 * they conflict with Dovecot's), with its own imapd.conf, cyrus.conf, spool, SASL password
 * database and free loopback port, in mount and PID namespaces of its own.
 *
 * - Logins: LOGIN and AUTHENTICATE PLAIN without TLS (allowplaintext), checked against a sasldb
 *   written with Perl's DB_File; each user's INBOX is made by their first login (autocreate).
 * - Cyrus logs only to syslog: /dev/log inside its namespace is a socket whose messages land in
 *   syslog.log of the temp directory (see cyrusLog()).
 * - Runs as root only (mount namespace; master changes user): the Cyrus processes run as
 *   "nobody" (cyrus_user).
 */
import { chmod, chown, mkdir, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import {
  checkUsers,
  failedStart,
  freePort,
  HOST,
  identity,
  imapClientOf,
  libraryPath,
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

export interface CyrusOptions {
  /** Default: alice / alice-secret and bob / bob-secret. */
  users?: TestUser[];
  /** Appended to the generated imapd.conf (later settings override earlier ones). */
  extraConfig?: string;
}

export interface Cyrus extends ImapTestServer {
  /**
   * Stores one message in the user's INBOX with IMAP APPEND, as the user, so that Cyrus adds no
   * header of its own (LMTP would add Return-Path, Received and more). Cyrus refuses bare LF
   * line ends ("Message contains bare newlines"), so each LF not after a CR becomes CRLF; every
   * other byte goes as given, and Cyrus itself turns 8-bit bytes in headers into "X". A message
   * without a final line end is kept so.
   */
  deliver(user: string, message: Buffer | string): Promise<void>;
}

const START_TIMEOUT_MS = 15_000;
const START_ATTEMPTS = 5;
const GREETING = /^\* OK .*Cyrus IMAP/;
const LOGS = ['stderr.log', 'syslog.log'];

/** Writes a Berkeley DB hash, as libsasl2's sasldb plugin reads it: user\0realm\0userPassword. */
const SASLDB_WRITER = `
use strict;
use DB_File;
use Fcntl;
my ($path, $realm, @pairs) = @ARGV;
my %db;
tie(%db, 'DB_File', $path, O_RDWR | O_CREAT, 0644, $DB_HASH) or die "$path: $!\\n";
while (@pairs) {
  my ($user, $password) = splice(@pairs, 0, 2);
  $db{"$user\\0$realm\\0userPassword"} = $password;
}
untie(%db) or die "$path: $!\\n";
`;

/** A syslog socket that appends every message to a file, one line each. */
const SYSLOG_SINK = `
use strict;
use Socket;
my ($path, $out) = @ARGV;
unlink($path);
socket(my $sock, PF_UNIX, SOCK_DGRAM, 0) or die "socket: $!\\n";
bind($sock, pack_sockaddr_un($path)) or die "bind $path: $!\\n";
chmod(0666, $path);
open(my $log, '>>', $out) or die "$out: $!\\n";
select((select($log), $| = 1)[0]);
while (1) {
  my $message;
  defined(recv($sock, $message, 65536, 0)) or next;
  $message =~ s/[\\0\\r\\n]+$//;
  print $log "$message\\n";
}
`;

function imapdConf(dir: string, id: Identity, extra: string | undefined): string {
  const lines = [
    '# Generated for one test run.',
    `configdirectory: ${join(dir, 'conf')}`,
    `partition-default: ${join(dir, 'spool')}`,
    'defaultpartition: default',
    // The SASL realm of the sasldb entries.
    'servername: localhost',
    `cyrus_user: ${id.mailUser}`,
    `cyrus_group: ${id.mailGroup}`,
    // LOGIN and AUTHENTICATE PLAIN without TLS.
    'allowplaintext: yes',
    'sasl_pwcheck_method: auxprop',
    'sasl_auxprop_plugin: sasldb',
    `sasl_sasldb_path: ${join(dir, 'sasldb2')}`,
    'sasl_mech_list: PLAIN LOGIN',
    // A user's INBOX is made at the first login, without quota.
    'autocreate_quota: 0',
    'maxlogins_per_user: 0',
    `lmtpsocket: ${join(dir, 'conf/socket/lmtp')}`,
    `idlesocket: ${join(dir, 'conf/socket/idle')}`,
    `notifysocket: ${join(dir, 'conf/socket/notify')}`,
    'syslog_prefix: pop3test-cyrus',
  ];
  if (extra !== undefined) lines.push(extra);
  return `${lines.join('\n')}\n`;
}

function cyrusConf(root: string, dir: string, port: number): string {
  // master runs a relative cmd from its compiled-in /usr/lib/cyrus/bin: the paths are absolute.
  const bin = (name: string) => join(root, 'usr/lib/cyrus/bin', name);
  const conf = join(dir, 'imapd.conf');
  return [
    'START {',
    `  recover cmd="${bin('ctl_cyrusdb')} -C ${conf} -r"`,
    '}',
    'SERVICES {',
    `  imap cmd="${bin('imapd')} -C ${conf}" listen="${HOST}:${port}" prefork=0 maxchild=200`,
    '}',
    'EVENTS {',
    '}',
    '',
  ].join('\n');
}

function runScript(root: string, dir: string): string {
  return [
    'set -eu',
    `DIR=${shq(dir)}`,
    SHELL_FUNCTIONS,
    `export LD_LIBRARY_PATH=${shq(libraryPath(root))}`,
    // Cyrus logs only to syslog: a /dev/log of this namespace's own.
    'if make_mountpoint /dev log file; then',
    '  perl "$DIR/syslog-sink.pl" "$DIR/log.sock" "$DIR/syslog.log" &',
    '  wait_for -S "$DIR/log.sock"',
    '  mount --bind "$DIR/log.sock" /dev/log',
    'else',
    '  echo "no private /dev/log: Cyrus logs nothing" >&2',
    'fi',
    // -D keeps stderr open, for what Cyrus says before its syslog works.
    `run_server ${shq(join(root, 'usr/lib/cyrus/bin/master'))} -D -C "$DIR/imapd.conf" -M "$DIR/cyrus.conf" -p "$DIR/master.pid"`,
    '',
  ].join('\n');
}

async function prepare(root: string, dir: string, id: Identity, users: TestUser[], options: CyrusOptions): Promise<void> {
  await writeFile(join(dir, 'syslog-sink.pl'), SYSLOG_SINK);
  await writeFile(join(dir, 'imapd.conf'), imapdConf(dir, id, options.extraConfig));
  // Read by imapd, which master runs as the mail user: readable whatever the umask.
  await chmod(join(dir, 'imapd.conf'), 0o644);
  await writeFile(join(dir, 'run.sh'), runScript(root, dir));
  const owned = ['conf', 'conf/db', 'conf/socket', 'conf/proc', 'conf/lock', 'conf/log', 'spool'].map((p) => join(dir, p));
  for (const p of owned) {
    await mkdir(p, { mode: 0o750 });
    if (id.chownFiles) await chown(p, id.mailUid, id.mailGid);
  }
  const sasldb = join(dir, 'sasldb2');
  execFileSync('perl', ['-e', SASLDB_WRITER, sasldb, 'localhost', ...users.flatMap((u) => [u.name, u.password])], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10_000 });
  // Read by imapd, as the mail user; test passwords are no secret.
  await chmod(sasldb, 0o644);
}

async function startOnce(root: string, dir: string): Promise<{ proc: ServerProcess; imapPort: number }> {
  const imapPort = await freePort();
  await writeFile(join(dir, 'cyrus.conf'), cyrusConf(root, dir, imapPort));
  await rm(join(dir, 'syslog.log'), { force: true });
  await rm(join(dir, 'stderr.log'), { force: true });
  const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C' };
  const proc = ServerProcess.start('Cyrus', dir, join(dir, 'run.sh'), join(dir, 'stderr.log'), env);
  if (await waitForGreeting(proc, [[imapPort, GREETING]], START_TIMEOUT_MS)) return { proc, imapPort };
  return failedStart(proc, `IMAP port ${imapPort}`, START_TIMEOUT_MS, () => readLogs(dir, LOGS), /address already in use|unable to bind/i);
}

export async function startCyrus(options: CyrusOptions = {}): Promise<Cyrus> {
  const root = unpackedServers();
  const users = checkUsers(options.users, 'startCyrus');
  const id = identity();
  const { dir, proc, imapPort } = await startInTempDir('cyrus', START_ATTEMPTS, {
    prepare: (dir) => prepare(root, dir, id, users, options),
    startOnce: (dir) => startOnce(root, dir),
    // Each user's first login makes their INBOX.
    check: (dir, s) => proveLogins({ host: HOST, imapPort: s.imapPort }, users, 'Cyrus', () => readLogs(dir, LOGS)),
  });

  const userOf = (name: string): TestUser => {
    const u = users.find((x) => x.name === name);
    if (u === undefined) throw new Error(`no test user ${JSON.stringify(name)} in this Cyrus`);
    return u;
  };

  return {
    host: HOST,
    imapPort,
    dir,
    users,
    async deliver(user: string, message: Buffer | string): Promise<void> {
      const data = typeof message === 'string' ? Buffer.from(message, 'utf8') : message;
      const crlf = Buffer.from(data.toString('latin1').replace(/(?<!\r)\n/g, '\r\n'), 'latin1');
      const imap = await imapClientOf({ host: HOST, imapPort }, userOf(user));
      try {
        const result = await imap.append('INBOX', crlf);
        if (!result) throw new Error(`Cyrus did not take the message for ${user}`);
      } finally {
        await imap.logout().catch(() => imap.close());
      }
    },
    stop: stopOnce(proc, dir),
  };
}

/** What Cyrus logged so far (its syslog and stderr), for diagnosing a failing test. */
export function cyrusLog(c: Cyrus): string {
  const parts: string[] = [];
  for (const name of LOGS) {
    try {
      parts.push(readFileSync(join(c.dir, name), 'latin1'));
    } catch {
      // not written
    }
  }
  return parts.join('');
}
