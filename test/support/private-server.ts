/**
 * What the private test servers (test/support/dovecot.ts, cyrus.ts, courier.ts) share: free
 * loopback ports, starting a server in a process group of its own (retried when its port was
 * taken) and stopping every process it started, waiting for its greeting, Maildir stores, and
 * IMAP helpers that work on any of them; for Cyrus and Courier also the unpacked server programs
 * (scripts/unpack-imap-servers.sh) and a private mount and PID namespace for each running server.
 *
 * Each server runs as `setpriv --pdeathsig KILL -- unshare --mount --pid --fork --kill-child --
 * sh run.sh`, in a process group of its own: its mounts are seen by no other process, and when
 * run.sh, the first process of its PID namespace, ends, the kernel ends all the others; so
 * nothing it started outlives stop(), nor this process even when it is killed. Root only.
 */
import { spawn, spawnSync, execFileSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { ImapFlow } from 'imapflow';
import { ensureSystemDeps, repoRoot } from './system.js';

export const HOST = '127.0.0.1';

export interface TestUser {
  name: string;
  password: string;
}

export const DEFAULT_USERS: readonly TestUser[] = Object.freeze([
  Object.freeze({ name: 'alice', password: 'alice-secret' }),
  Object.freeze({ name: 'bob', password: 'bob-secret' }),
]);

/** What the tests need of any test IMAP server (Dovecot's, Cyrus's and Courier's fit). */
export interface ImapTestServer {
  host: string;
  /** Plain IMAP, no TLS; LOGIN allowed. */
  imapPort: number;
  /** Its private temp directory. */
  dir: string;
  users: TestUser[];
  /** Stores one message in the user's INBOX (how exactly depends on the server). */
  deliver(user: string, message: Buffer | string): Promise<void>;
  /** Stops the server, waits until its processes are gone and removes the temp directory. */
  stop(): Promise<void>;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Single-quoted for sh. */
export function shq(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** Which test user names and passwords a server takes. */
export interface UserRules {
  name: RegExp;
  password: RegExp;
}

// No dots: Cyrus would read them as a hierarchy separator.
const STRICT_USERS: UserRules = { name: /^[A-Za-z0-9_-]+$/, password: /^[^\0\r\n:|]+$/ };

export function checkUsers(input: readonly TestUser[] | undefined, server: string, rules: UserRules = STRICT_USERS): TestUser[] {
  const users = (input ?? DEFAULT_USERS).map((u) => ({ name: u.name, password: u.password }));
  if (users.length === 0) throw new Error(`${server} needs at least one test user`);
  for (const u of users) {
    if (!rules.name.test(u.name)) throw new Error(`unsupported test user name ${JSON.stringify(u.name)}`);
    if (!rules.password.test(u.password)) throw new Error(`unsupported password for ${u.name}`);
  }
  if (new Set(users.map((u) => u.name)).size !== users.length) throw new Error('duplicate test user names');
  return users;
}

let unpackedRoot: string | undefined;

/**
 * The folder holding Cyrus and Courier unpacked from Debian's packages (downloaded on first
 * use); checks once per process that their libraries are installed.
 */
export function unpackedServers(): string {
  if (unpackedRoot !== undefined) return unpackedRoot;
  ensureSystemDeps();
  const script = join(repoRoot(), 'scripts', 'unpack-imap-servers.sh');
  const result = spawnSync('bash', [script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 600_000 });
  if (result.error) throw new Error(`${script} could not run: ${result.error.message}`);
  if (result.status !== 0) {
    throw new Error(`${script} failed (${result.signal ?? `exit ${result.status}`}): ${result.stderr.trim().slice(-4000)}`);
  }
  const root = result.stdout.trim().split('\n').pop() ?? '';
  if (!existsSync(root)) throw new Error(`${script} printed no folder (${JSON.stringify(result.stdout)})`);
  unpackedRoot = root;
  return root;
}

/** LD_LIBRARY_PATH for the unpacked programs: their own libraries and modules. */
export function libraryPath(root: string): string {
  const dirs = [join(root, 'usr/lib'), join(root, 'usr/lib/courier-authlib')];
  try {
    for (const name of readdirSync(join(root, 'usr/lib'))) {
      if (name.endsWith('-linux-gnu')) dirs.push(join(root, 'usr/lib', name));
    }
  } catch {
    // no such folder: the unpack script reports what is missing
  }
  return dirs.join(':');
}

/** Who owns the mail files the tests write. */
export interface MailOwner {
  /** Numeric owner of the mail files and the mail processes. */
  mailUid: number;
  mailGid: number;
  /** Whether the files the tests write must be handed to mailUid/mailGid. */
  chownFiles: boolean;
}

/** Who the mail belongs to, as the server's processes see it. */
export interface Identity extends MailOwner {
  mailUser: string;
  mailGroup: string;
}

export function idOf(args: string[]): string {
  return execFileSync('id', args, { encoding: 'utf8' }).trim();
}

/** Why Cyrus and Courier cannot run here, or undefined when they can. */
export function cannotRunServers(): string | undefined {
  if ((process.getuid?.() ?? 0) === 0) return undefined;
  // Tried: in an unprivileged user namespace (unshare --map-root-user) setgroups() is denied,
  // and Courier's imaplogin and Cyrus's master both call it when they take the mail user's
  // identity; an overlay on /dev is refused there too.
  return 'Cyrus and Courier run as root only (private mount namespaces, and they change user)';
}

/** The mail is stored and served as "nobody"; the servers start as root. */
export function identity(): Identity {
  const why = cannotRunServers();
  if (why !== undefined) throw new Error(why);
  return {
    mailUid: Number(idOf(['-u', 'nobody'])),
    mailGid: Number(idOf(['-g', 'nobody'])),
    mailUser: 'nobody',
    mailGroup: idOf(['-gn', 'nobody']),
    chownFiles: true,
  };
}

/** A port that was free a moment ago (starts are retried if it is taken meanwhile). */
export function freePort(): Promise<number> {
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

export function which(name: string, candidates: string[]): string | undefined {
  for (const c of candidates) if (existsSync(c)) return c;
  for (const d of (process.env.PATH ?? '').split(':')) {
    if (d && existsSync(join(d, name))) return join(d, name);
  }
  return undefined;
}

/**
 * sh functions for run.sh. `make_mountpoint PARENT NAME dir|file` makes PARENT/NAME exist in
 * this mount namespace only, so that something can be bind-mounted onto it: when it is missing,
 * an overlay on PARENT (its upper layer in $DIR/ns) takes the new entry (inside the namespace
 * the overlay hides what was mounted below PARENT, such as /dev/pts: the servers need none of
 * it); where overlays cannot be mounted, a missing directory is made in the real PARENT (it
 * stays there, empty).
 * `run_server COMMAND...` runs the server and waits for it, passing SIGTERM on.
 * `wait_for TEST ARG` waits up to 10 s for `test TEST ARG`.
 */
export const SHELL_FUNCTIONS = `
make_mountpoint() {
  [ -e "$1/$2" ] && return 0
  ov="$DIR/ns/$(printf '%s' "$1" | tr / _)"
  mkdir -p "$ov/upper" "$ov/work"
  if ! mount -t overlay overlay -o "lowerdir=$1,upperdir=$ov/upper,workdir=$ov/work" "$1"; then
    [ "$3" = dir ] || return 1
    echo "no overlay on $1: making $1/$2 for good" >&2
  fi
  if [ "$3" = dir ]; then mkdir -p "$1/$2"; else : >"$1/$2"; fi
}
run_server() {
  # The server runs as a child of this shell, which stays the first process of the PID
  # namespace: unshare's --kill-child signal would not outlive a server that changes its user,
  # and when this shell ends the kernel ends everything else in the namespace.
  "$@" &
  server=$!
  trap 'kill -TERM "$server" 2>/dev/null || :' TERM INT
  while kill -0 "$server" 2>/dev/null; do wait "$server" || :; done
}
wait_for() {
  i=0
  while ! test "$1" "$2"; do
    i=$((i + 1))
    if [ "$i" -gt 200 ]; then echo "gave up waiting for $2" >&2; return 1; fi
    sleep 0.05
  done
}
`;

// Every server of this process, killed when the process exits without stopping them.
const liveServers = new Set<{ pid: number; dir: string }>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const r of liveServers) {
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

function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // already gone
  }
}

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * A server's process tree, in a process group of its own: unshare and everything in its
 * namespaces (start()), or a server that keeps its children in its group (spawn()).
 */
export class ServerProcess {
  exitInfo: string | undefined;
  spawnError: Error | undefined;
  private readonly exited: Promise<void>;
  private readonly entry: { pid: number; dir: string };

  private constructor(readonly child: ChildProcess, readonly name: string, readonly command: string, dir: string, private readonly namespaced: boolean) {
    this.entry = { pid: child.pid ?? -1, dir };
    if (child.pid !== undefined) liveServers.add(this.entry);
    this.exited = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitInfo = signal ? `signal ${signal}` : `exit code ${code}`;
        resolve();
      });
      child.once('error', (err) => {
        this.spawnError = err;
        resolve();
      });
    });
  }

  /**
   * Runs `sh script` as the first process of new mount and PID namespaces, with stdout and
   * stderr appended to `logFile`, in a process group of its own.
   */
  static start(name: string, dir: string, script: string, logFile: string, env: NodeJS.ProcessEnv): ServerProcess {
    const unshare = which('unshare', ['/usr/bin/unshare']);
    if (unshare === undefined) throw new Error('unshare (util-linux) is not installed');
    const args = ['--mount', '--pid', '--fork', '--kill-child', '--propagation', 'private', '--', '/bin/sh', script];
    // SIGKILL when this process dies (see spawn()) kills unshare, and so (--kill-child) the
    // whole namespace: unshare ignores SIGTERM.
    return ServerProcess.spawnIn(name, dir, [unshare, ...args], logFile, env, 'KILL', true);
  }

  /**
   * Runs `command` in a process group of its own, with stdout and stderr appended to `logFile`;
   * the kernel sends it `deathSignal` should this process die without running its exit hooks.
   */
  static spawn(name: string, dir: string, command: string[], logFile: string, env: NodeJS.ProcessEnv, deathSignal: 'TERM' | 'KILL'): ServerProcess {
    return ServerProcess.spawnIn(name, dir, command, logFile, env, deathSignal, false);
  }

  private static spawnIn(name: string, dir: string, command: string[], logFile: string, env: NodeJS.ProcessEnv, deathSignal: 'TERM' | 'KILL', namespaced: boolean): ServerProcess {
    installExitHook();
    const setpriv = which('setpriv', ['/usr/bin/setpriv']);
    const argv = setpriv !== undefined ? [setpriv, '--pdeathsig', deathSignal, '--', ...command] : command;
    const out = openSync(logFile, 'a');
    let child: ChildProcess;
    try {
      child = spawn(argv[0]!, argv.slice(1), { cwd: dir, detached: true, env, stdio: ['ignore', out, out] });
    } finally {
      closeSync(out);
    }
    return new ServerProcess(child, name, argv[0]!, dir, namespaced);
  }

  get running(): boolean {
    return this.exitInfo === undefined && this.spawnError === undefined;
  }

  /** The host PID of the first process in the PID namespace (unshare's child), if there is one. */
  private namespaceInit(): number | undefined {
    const pid = this.child.pid;
    if (pid === undefined || !this.namespaced) return undefined;
    try {
      const first = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/)[0];
      return first ? Number(first) : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * Ends the server: SIGTERM to the first process of its PID namespace (the server, which
   * unshare waits for; unshare itself ignores SIGTERM) and to the process group, SIGKILL to both
   * after `graceMs`. Resolves once unshare has exited: the server it waited for is then reaped,
   * which the kernel allows only once every other process of the namespace is gone, whatever
   * process group or session it had moved to (couriertcpd makes a session of its own).
   */
  async kill(graceMs = 3000, hardMs = 10_000): Promise<void> {
    const pgid = this.child.pid;
    if (pgid === undefined) return;
    const init = this.namespaceInit();
    const signal = (sig: NodeJS.Signals) => {
      if (init !== undefined) {
        try {
          process.kill(init, sig);
        } catch {
          // already gone
        }
      }
      signalGroup(pgid, sig);
    };
    signal('SIGTERM');
    const started = Date.now();
    let killed = false;
    for (;;) {
      if (!this.running && !groupAlive(pgid)) break;
      const waited = Date.now() - started;
      if (!killed && waited > graceMs) {
        // SIGKILL is delivered to a namespace's first process even where SIGTERM is not.
        signal('SIGKILL');
        killed = true;
      }
      if (waited > graceMs + hardMs) throw new Error(`${this.name}: processes of group ${pgid} do not go away`);
      await sleep(25);
    }
    await this.exited;
    liveServers.delete(this.entry);
  }
}

/** Stops `proc` (see kill()) and removes `dir`, once however often it is called. */
export function stopOnce(proc: ServerProcess, dir: string, graceMs?: number): () => Promise<void> {
  let stopping: Promise<void> | undefined;
  return () => {
    stopping ??= (async () => {
      await proc.kill(graceMs);
      await rm(dir, { recursive: true, force: true });
    })();
    return stopping;
  };
}

/** A start that failed; `portTaken` when another process took a port meanwhile (worth a retry). */
export class StartError extends Error {
  constructor(message: string, readonly portTaken: boolean) {
    super(message);
  }
}

/** How startInTempDir() brings a server up in its temp directory. */
export interface StartSteps<T extends { proc: ServerProcess }> {
  /** Writes what the server needs before its first start. */
  prepare(dir: string): Promise<void>;
  /** Picks ports and starts the server once; throws a StartError when it does not greet. */
  startOnce(dir: string): Promise<T>;
  /** Checks the running server before any test relies on it. */
  check?(dir: string, started: T): Promise<void>;
}

/**
 * Makes a temp directory pop3test-<name>-…, prepares it, starts the server (again while a
 * port was taken meanwhile, at most `attempts` times) and checks it; when any of that fails,
 * stops what was started and removes the directory.
 */
export async function startInTempDir<T extends { proc: ServerProcess }>(name: string, attempts: number, steps: StartSteps<T>): Promise<T & { dir: string }> {
  const dir = await mkdtemp(join(os.tmpdir(), `pop3test-${name}-`));
  let started: T | undefined;
  try {
    await steps.prepare(dir);
    for (let attempt = 1; started === undefined; attempt++) {
      try {
        started = await steps.startOnce(dir);
      } catch (err) {
        if (!(err instanceof StartError && err.portTaken && attempt < attempts)) throw err;
      }
    }
    await steps.check?.(dir, started);
  } catch (err) {
    await started?.proc.kill().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return { ...started, dir };
}

/**
 * Kills a server that did not greet in time and throws a StartError that says why, with the
 * server's logs (`portTaken` tells from them whether a port was taken).
 */
export async function failedStart(proc: ServerProcess, listeners: string, timeoutMs: number, logs: () => string, portTaken: RegExp): Promise<never> {
  await proc.kill().catch(() => undefined);
  const text = logs();
  const why = proc.spawnError !== undefined
    ? `could not run ${proc.command}: ${proc.spawnError.message}`
    : proc.exitInfo !== undefined
      ? `${proc.name} exited during startup (${proc.exitInfo})`
      : `${proc.name} did not greet on ${listeners} within ${timeoutMs / 1000} s`;
  throw new StartError(`${why}\n${text}`, portTaken.test(text));
}

/** Connects and waits for a greeting line that matches `pattern`. */
export function greets(port: number, pattern: RegExp, timeoutMs: number): Promise<boolean> {
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
      if (data.includes('\r\n')) done(pattern.test(data.slice(0, data.indexOf('\r\n'))));
    });
    socket.on('error', () => done(false));
    socket.on('close', () => done(false));
  });
}

/**
 * Waits until `proc` greets on every port of `greetings` (each line matching its pattern), or
 * exits, or `timeoutMs` passes; true when it greeted.
 */
export async function waitForGreeting(proc: ServerProcess, greetings: ReadonlyArray<readonly [port: number, pattern: RegExp]>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && proc.running) {
    const wait = Math.min(2000, Math.max(100, deadline - Date.now()));
    const greeted = await Promise.all(greetings.map(([port, pattern]) => greets(port, pattern, wait)));
    if (greeted.every(Boolean)) return true;
    await sleep(50);
  }
  return false;
}

export function tail(text: string, lines = 40): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/** The last lines of each of these log files that has something in it. */
export function readLogs(dir: string, names: string[]): string {
  const parts: string[] = [];
  for (const name of names) {
    let text = '';
    try {
      text = readFileSync(join(dir, name), 'latin1');
    } catch {
      // not written
    }
    if (text.trim()) parts.push(`--- ${name} ---\n${tail(text)}`);
  }
  return parts.join('\n') || '(no log output)';
}

// Maildir file names: "<seconds>.M<microseconds>P<pid>Q<n>.<host>", the microseconds padded to
// six digits, so that names sort as the deliveries were made, by number and by string alike
// (Dovecot and Courier give new mail its UIDs in file-name order).
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
    if (micros >= 1_000_000) {
      seconds += 1;
      micros = 0;
    }
  }
  lastSeconds = seconds;
  lastMicros = micros;
  deliveries += 1;
  return `${seconds}.M${String(micros).padStart(6, '0')}P${process.pid}Q${deliveries}.pop3test`;
}

/** Makes `<dir>/home/<user>/Maildir` with cur, new and tmp for every user, owned by the mail owner. */
export async function makeMaildirs(dir: string, owner: MailOwner, users: readonly TestUser[]): Promise<void> {
  await mkdir(join(dir, 'home'));
  await chmod(join(dir, 'home'), 0o755);
  for (const u of users) {
    const home = join(dir, 'home', u.name);
    const paths = [home, join(home, 'Maildir'), ...['cur', 'new', 'tmp'].map((s) => join(home, 'Maildir', s))];
    for (const p of paths) {
      await mkdir(p, { mode: 0o700 });
      if (owner.chownFiles) await chown(p, owner.mailUid, owner.mailGid);
    }
  }
}

/**
 * The store makeMaildirs() made: each user's Maildir (an error for anyone else), and deliver(),
 * which drops one message into it exactly as given.
 */
export function maildirStore(dir: string, users: readonly TestUser[], owner: MailOwner, server: string): Pick<ImapTestServer, 'deliver'> & { maildir(user: string): string } {
  const maildir = (user: string): string => {
    if (!users.some((u) => u.name === user)) throw new Error(`no test user ${JSON.stringify(user)} in this ${server}`);
    return join(dir, 'home', user, 'Maildir');
  };
  return { maildir, deliver: (user, message) => deliverToMaildir(maildir(user), owner, message) };
}

/** Drops one message into the Maildir's new/ exactly as given (written in tmp/, then moved). */
export async function deliverToMaildir(maildir: string, owner: MailOwner, message: Buffer | string): Promise<void> {
  const data = typeof message === 'string' ? Buffer.from(message, 'utf8') : message;
  const name = maildirName();
  const tmp = join(maildir, 'tmp', name);
  await writeFile(tmp, data, { mode: 0o600 });
  if (owner.chownFiles) await chown(tmp, owner.mailUid, owner.mailGid);
  await rename(tmp, join(maildir, 'new', name));
}

/** A connected, logged-in IMAP client of any test server, every wait bounded. */
export async function imapClientOf(server: Pick<ImapTestServer, 'host' | 'imapPort'>, user: TestUser): Promise<ImapFlow> {
  const client = new ImapFlow({
    host: server.host,
    port: server.imapPort,
    secure: false,
    doSTARTTLS: false,
    auth: { user: user.name, pass: user.password },
    logger: false,
    connectionTimeout: 10_000,
    greetingTimeout: 10_000,
    socketTimeout: 60_000,
  });
  client.on('error', () => {
    // A test that still uses the client sees the failure on its next command.
  });
  await client.connect();
  return client;
}

/** Runs `run` with the user's mailbox open, and logs out after. */
export async function withImapMailbox<T>(server: Pick<ImapTestServer, 'host' | 'imapPort'>, user: TestUser, run: (imap: ImapFlow) => Promise<T>, mailbox = 'INBOX'): Promise<T> {
  const imap = await imapClientOf(server, user);
  try {
    await imap.mailboxOpen(mailbox);
    return await run(imap);
  } finally {
    await imap.logout().catch(() => imap.close());
  }
}

/**
 * Logs every user in (opening INBOX, which Cyrus makes at the first login): proves that logins
 * work before any test relies on them.
 */
export async function proveLogins(server: Pick<ImapTestServer, 'host' | 'imapPort'>, users: readonly TestUser[], name: string, logs: () => string): Promise<void> {
  for (const u of users) {
    const imap = await imapClientOf(server, u).catch((err: Error) => {
      throw new Error(`${name} refuses the login of ${u.name}: ${err.message}\n${logs()}`);
    });
    try {
      await imap.mailboxOpen('INBOX');
    } finally {
      await imap.logout().catch(() => imap.close());
    }
  }
}

/** One message as the server's IMAP serves it. */
export interface ServedMessage {
  uid: number;
  subject: string;
  deleted: boolean;
  /** RFC822.SIZE. */
  size: number;
  /** BODY[]. */
  source: Buffer;
}

/** Every message of the user's mailbox with UIDVALIDITY, by UID order. */
export async function servedMessages(server: Pick<ImapTestServer, 'host' | 'imapPort'>, user: TestUser, mailbox = 'INBOX'): Promise<{ uidValidity: number; messages: ServedMessage[] }> {
  return withImapMailbox(
    server,
    user,
    async (imap) => {
      const box = imap.mailbox as { exists: number; uidValidity: bigint };
      const uidValidity = Number(box.uidValidity);
      if (box.exists === 0) return { uidValidity, messages: [] };
      const all = await imap.fetchAll('1:*', { uid: true, flags: true, envelope: true, size: true, source: true });
      const messages = all
        .map((m) => ({
          uid: m.uid,
          subject: m.envelope?.subject ?? '',
          deleted: m.flags?.has('\\Deleted') ?? false,
          size: m.size ?? -1,
          source: m.source ?? Buffer.alloc(0),
        }))
        .sort((a, b) => a.uid - b.uid);
      return { uidValidity, messages };
    },
    mailbox,
  );
}

/** Removes every message of the user's mailbox (flags \Deleted and expunges). */
export async function emptyMailbox(server: Pick<ImapTestServer, 'host' | 'imapPort'>, user: TestUser, mailbox = 'INBOX'): Promise<void> {
  await withImapMailbox(
    server,
    user,
    async (imap) => {
      if ((imap.mailbox as { exists: number }).exists > 0) await imap.messageDelete('1:*');
    },
    mailbox,
  );
}
