/**
 * A private Dovecot (IMAP and POP3 on one Maildir store) for one test file: its own
 * configuration, temp directory and free loopback ports, nothing shared with a system instance.
 *
 * As root, mail is stored and served as the unprivileged user "nobody" (Dovecot refuses mail
 * access as uid 0); Dovecot's own internal users (dovecot, dovenull) come with its packages.
 * As any other user, every Dovecot process runs as that user.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { ImapFlow } from 'imapflow';
import { ensureSystemDeps } from './system.js';

export interface TestUser {
  name: string;
  password: string;
}

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

const HOST = '127.0.0.1';
const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 10_000;
const START_ATTEMPTS = 5;

/**
 * Dovecot settings for tests full of failed logins: no delay after a failure, and no growing
 * penalty per client address (its anvil penalty socket is made unusable), so that the delays
 * a test measures are the proxy's own.
 */
export const NO_LOGIN_PENALTY = ['auth_failure_delay = 0', 'service anvil {', '  unix_listener anvil-auth-penalty {', '    mode = 0', '  }', '}'].join('\n');

export const DEFAULT_USERS: readonly TestUser[] = Object.freeze([
  Object.freeze({ name: 'alice', password: 'alice-secret' }),
  Object.freeze({ name: 'bob', password: 'bob-secret' }),
]);

interface Identity {
  /** The owner of the mail files and the mail processes. */
  mailUid: number;
  mailGid: number;
  /** Whether files written by the tests must be handed to mailUid/mailGid. */
  chownFiles: boolean;
  /** Configuration lines that depend on who runs Dovecot. */
  config: string[];
}

function idOf(args: string[]): string {
  return execFileSync('id', args, { encoding: 'utf8' }).trim();
}

function identity(): Identity {
  const uid = process.getuid?.() ?? 0;
  if (uid === 0) {
    const mailUid = Number(idOf(['-u', 'nobody']));
    const mailGid = Number(idOf(['-g', 'nobody']));
    return {
      mailUid,
      mailGid,
      chownFiles: true,
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

/** A port that was free a moment ago (Dovecot's start is retried if it is taken meanwhile). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, HOST, () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('no port assigned'))));
    });
  });
}

function which(name: string, candidates: string[]): string | undefined {
  for (const c of candidates) if (existsSync(c)) return c;
  for (const d of (process.env.PATH ?? '').split(':')) {
    if (d && existsSync(join(d, name))) return join(d, name);
  }
  return undefined;
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

function checkUser(u: TestUser): void {
  if (!/^[A-Za-z0-9._@+-]+$/.test(u.name)) throw new Error(`unsupported test user name ${JSON.stringify(u.name)}`);
  if (/[:\r\n]/.test(u.password)) throw new Error(`unsupported password for ${u.name}: no ':' or newlines`);
}

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

// Every Dovecot of this process, killed when the process exits without stopping them.
const running = new Set<{ pid: number; dir: string }>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const r of running) {
      try {
        process.kill(-r.pid, 'SIGKILL');
      } catch {
        // already gone
      }
      try {
        rmSync(r.dir, { recursive: true, force: true });
      } catch {
        // best effort
      }
    }
  });
}

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // already gone
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Kills Dovecot's whole process group and waits until none of its processes is left. */
async function killGroup(child: ChildProcess): Promise<void> {
  const pgid = child.pid;
  if (pgid === undefined) return;
  const exited = child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : new Promise<void>((r) => child.once('exit', () => r()));
  signalGroup(pgid, 'SIGTERM');
  const deadline = Date.now() + STOP_TIMEOUT_MS;
  let killed = false;
  for (;;) {
    if (!groupAlive(pgid)) break;
    if (!killed && Date.now() > deadline) {
      signalGroup(pgid, 'SIGKILL');
      killed = true;
    }
    if (killed && Date.now() > deadline + STOP_TIMEOUT_MS) throw new Error(`Dovecot processes of group ${pgid} do not go away`);
    await sleep(25);
  }
  await exited;
}

/** Connects and waits for a greeting line starting with `prefix`. */
function greets(port: number, prefix: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: HOST });
    let data = '';
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.on('data', (chunk) => {
      data += chunk.toString('latin1');
      if (data.includes('\r\n')) done(data.startsWith(prefix));
    });
    socket.on('error', () => done(false));
    socket.on('close', () => done(false));
  });
}

function tail(text: string, lines = 30): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

async function readLogs(dir: string): Promise<string> {
  const parts: string[] = [];
  for (const name of ['dovecot.log', 'stderr.log']) {
    const text = await readFile(join(dir, name), 'utf8').catch(() => '');
    if (text.trim()) parts.push(`--- ${name} ---\n${tail(text)}`);
  }
  return parts.join('\n');
}

interface Started {
  child: ChildProcess;
  imapPort: number;
  pop3Port: number;
}

class StartError extends Error {
  constructor(message: string, readonly addressInUse: boolean) {
    super(message);
  }
}

async function startOnce(dir: string, id: Identity, options: DovecotOptions): Promise<Started> {
  const imapPort = await freePort();
  let pop3Port = await freePort();
  while (pop3Port === imapPort) pop3Port = await freePort();
  const conf = join(dir, 'dovecot.conf');
  await writeFile(conf, buildConfig(dir, imapPort, pop3Port, id, options));
  await rm(join(dir, 'dovecot.log'), { force: true });

  const dovecot = dovecotBinary();
  // Foreground (-F), in its own process group so that it can be stopped with all its children;
  // setpriv makes the kernel stop it should this process die without running its exit hooks.
  const setpriv = which('setpriv', ['/usr/bin/setpriv']);
  const [command, args] = setpriv !== undefined
    ? [setpriv, ['--pdeathsig', 'TERM', '--', dovecot, '-F', '-c', conf]]
    : [dovecot, ['-F', '-c', conf]];
  const out = openSync(join(dir, 'stderr.log'), 'w');
  let child: ChildProcess;
  try {
    child = spawn(command, args, { cwd: dir, detached: true, stdio: ['ignore', out, out] });
  } finally {
    closeSync(out);
  }
  const entry = { pid: child.pid ?? -1, dir };
  if (child.pid !== undefined) running.add(entry);
  let exitInfo: string | undefined;
  child.once('exit', (code, signal) => {
    exitInfo = signal ? `signal ${signal}` : `exit code ${code}`;
  });
  const spawnError = new Promise<Error>((r) => child.once('error', r));
  let error: Error | undefined;
  void spawnError.then((e) => (error = e));

  const deadline = Date.now() + START_TIMEOUT_MS;
  let ready = false;
  while (Date.now() < deadline && exitInfo === undefined && error === undefined) {
    const left = Math.max(100, deadline - Date.now());
    const [imapOk, pop3Ok] = await Promise.all([greets(imapPort, '* OK', Math.min(left, 2000)), greets(pop3Port, '+OK', Math.min(left, 2000))]);
    if (imapOk && pop3Ok) {
      ready = true;
      break;
    }
    await sleep(50);
  }
  if (ready) return { child, imapPort, pop3Port };

  await killGroup(child).catch(() => undefined);
  running.delete(entry);
  const logs = await readLogs(dir);
  const why = error !== undefined
    ? `could not run ${command}: ${error.message}`
    : exitInfo !== undefined
      ? `Dovecot exited during startup (${exitInfo})`
      : `Dovecot did not greet on IMAP port ${imapPort} and POP3 port ${pop3Port} within ${START_TIMEOUT_MS / 1000} s`;
  throw new StartError(`${why}\n${logs || '(no log output)'}`, /address already in use/i.test(logs));
}

async function prepareStore(dir: string, id: Identity, users: TestUser[]): Promise<void> {
  await chmod(dir, 0o755);
  await mkdir(join(dir, 'state'), { mode: 0o750 });
  // Read by the auth process, which runs as Dovecot's internal user; test passwords are no secret.
  const passwd = join(dir, 'passwd');
  await writeFile(passwd, users.map((u) => `${u.name}:{PLAIN}${u.password}::::::\n`).join(''));
  await chmod(passwd, 0o644);
  await mkdir(join(dir, 'home'));
  await chmod(join(dir, 'home'), 0o755);
  for (const u of users) {
    const home = join(dir, 'home', u.name);
    const paths = [home, join(home, 'Maildir'), ...['cur', 'new', 'tmp'].map((s) => join(home, 'Maildir', s))];
    for (const p of paths) {
      await mkdir(p, { mode: 0o700 });
      if (id.chownFiles) await chown(p, id.mailUid, id.mailGid);
    }
  }
}

// Maildir file names: "<seconds>.M<microseconds>P<pid>Q<n>.<host>". Dovecot gives new mail its
// UIDs in file-name order (seconds, then microseconds), so the names must increase with every
// delivery for messages to be numbered in delivery order.
let lastSeconds = 0;
let lastMicros = -1;
let deliveries = 0;

function maildirName(): string {
  const nowMicros = Date.now() * 1000;
  let seconds = Math.floor(nowMicros / 1_000_000);
  let micros = nowMicros % 1_000_000;
  if (seconds < lastSeconds || (seconds === lastSeconds && micros <= lastMicros)) {
    seconds = lastSeconds;
    micros = lastMicros + 1;
  }
  lastSeconds = seconds;
  lastMicros = micros;
  deliveries += 1;
  return `${seconds}.M${micros}P${process.pid}Q${deliveries}.pop3test`;
}

export async function startDovecot(options: DovecotOptions = {}): Promise<Dovecot> {
  ensureSystemDeps();
  const users = (options.users ?? DEFAULT_USERS).map((u) => ({ name: u.name, password: u.password }));
  if (users.length === 0) throw new Error('startDovecot needs at least one user');
  users.forEach(checkUser);
  if (new Set(users.map((u) => u.name)).size !== users.length) throw new Error('duplicate test user names');

  const id = identity();
  const dir = await mkdtemp(join(os.tmpdir(), 'pop3test-dovecot-'));
  installExitHook();
  let started: Started | undefined;
  try {
    await prepareStore(dir, id, users);
    for (let attempt = 1; started === undefined; attempt++) {
      try {
        started = await startOnce(dir, id, options);
      } catch (err) {
        if (!(err instanceof StartError && err.addressInUse && attempt < START_ATTEMPTS)) throw err;
      }
    }
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  const { child, imapPort, pop3Port } = started;
  const entry = [...running].find((r) => r.pid === child.pid);

  const maildir = (user: string): string => {
    if (!users.some((u) => u.name === user)) throw new Error(`no test user ${JSON.stringify(user)} in this Dovecot`);
    return join(dir, 'home', user, 'Maildir');
  };

  let stopping: Promise<void> | undefined;
  return {
    host: HOST,
    imapPort,
    pop3Port,
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
        await killGroup(child);
        if (entry !== undefined) running.delete(entry);
        await rm(dir, { recursive: true, force: true });
      })();
      return stopping;
    },
  };
}

/** A connected, logged-in IMAP client for inspecting the store (flags, message counts). */
export async function imapClient(d: Dovecot, user: TestUser): Promise<ImapFlow> {
  const client = new ImapFlow({
    host: d.host,
    port: d.imapPort,
    secure: false,
    doSTARTTLS: false,
    auth: { user: user.name, pass: user.password },
    logger: false,
  });
  client.on('error', () => {
    // A test that still uses the client sees the failure on its next command.
  });
  await client.connect();
  return client;
}

/** Runs `run` with an IMAP client that has the user's mailbox open, and logs out after. */
export async function withMailbox<T>(d: Dovecot, user: TestUser, run: (imap: ImapFlow) => Promise<T>, mailbox = 'INBOX'): Promise<T> {
  const imap = await imapClient(d, user);
  try {
    await imap.mailboxOpen(mailbox);
    return await run(imap);
  } finally {
    await imap.logout().catch(() => undefined);
  }
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
  return withMailbox(
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
