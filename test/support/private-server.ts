/**
 * What the private test servers (test/support/dovecot.ts, cyrus.ts, courier.ts) share: free
 * loopback ports, starting a server in a temp directory its own users can reach (retried when
 * its port was taken) and stopping every process it started (server-process.ts), waiting for
 * its greeting, Maildir stores and IMAP helpers that work on any of them (imap-store.ts, both
 * re-exported here); for Cyrus and Courier also the unpacked server programs
 * (scripts/unpack-imap-servers.sh) and a private mount and PID namespace for each running server.
 *
 * Each server runs as `setpriv --pdeathsig KILL -- unshare --mount --pid --fork --kill-child --
 * sh run.sh`, in a process group of its own: its mounts are seen by no other process, and when
 * run.sh, the first process of its PID namespace, ends, the kernel ends all the others; so
 * nothing it started outlives stop(), nor this process even when it is killed. Root only.
 *
 * Part of every server runs as another user (the mail user "nobody", Dovecot's own users), who
 * must reach what it reads and runs; so nothing of that lives in the checkout, which may sit in
 * a folder only its owner can enter (mktemp -d, /root): the unpacked programs are in a shared
 * cache (see the script) and each server's files in a temp directory of its own (tempBase()).
 */
import { spawnSync, execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { ServerProcess, sleep } from './server-process.js';
import { ensureSystemDeps, repoRoot } from './system.js';

export { ServerProcess, sleep, stopOnce, which } from './server-process.js';
export * from './imap-store.js';

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

/** Whether other users can pass through (o+x) every folder from / down to `dir`. */
function reachableByOthers(dir: string): boolean {
  try {
    for (let p = realpathSync(dir); ; p = dirname(p)) {
      if ((statSync(p).mode & 0o001) === 0) return false;
      if (dirname(p) === p) return true;
    }
  } catch {
    return false;
  }
}

let base: string | undefined;

/**
 * Where the servers' temp directories go: os.tmpdir(), unless other users cannot reach it
 * (TMPDIR set to a private folder), then /var/tmp or /tmp.
 */
export function tempBase(): string {
  base ??= [os.tmpdir(), '/var/tmp', '/tmp'].find(reachableByOthers);
  if (base === undefined) throw new Error(`no temp folder that other users can reach: ${os.tmpdir()}, /var/tmp and /tmp are closed to them`);
  return base;
}

/**
 * Makes a temp directory pop3test-<name>-… (under tempBase(), mode 0755 whatever the umask:
 * the server's other users must enter it), prepares it, starts the server (again while a port
 * was taken meanwhile, at most `attempts` times) and checks it; when any of that fails, stops
 * what was started and removes the directory.
 */
export async function startInTempDir<T extends { proc: ServerProcess }>(name: string, attempts: number, steps: StartSteps<T>): Promise<T & { dir: string }> {
  const dir = await mkdtemp(join(tempBase(), `pop3test-${name}-`));
  let started: T | undefined;
  try {
    await chmod(dir, 0o755);
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

