/**
 * The proxy under test, run as a child process (node <build>/src/cli.js): it gets a core of its
 * own, as in production, and its memory can be read from /proc/<pid>/status.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { onCleanup } from './cleanup.js';

/** The compiled CLI next to this compiled file: works in build/ and in any other --outDir. */
export const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url));
const START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 15_000;
const LOG_TAIL_LINES = 40;

/**
 * Abuse limits the load workloads must go beyond: every bench connection comes from 127.0.0.1,
 * up to 1000 at once. Passed only to a proxy that has them, so older builds can be measured too.
 */
const LOAD_LIMITS: Readonly<Record<string, string>> = {
  '--max-connections': '5000',
  '--max-connections-per-ip': '5000',
};

let knownFlags: string | undefined;

/** The flags among LOAD_LIMITS that this build of the CLI accepts (from its --help). */
export function loadLimitArgs(): string[] {
  knownFlags ??= spawnSync(process.execPath, [CLI, '--help'], { encoding: 'utf8' }).stdout ?? '';
  const help = knownFlags;
  return Object.entries(LOAD_LIMITS).flatMap(([flag, value]) => (new RegExp(`${flag}\\b(?!-)`).test(help) ? [flag, value] : []));
}

export interface ProxyProcess {
  readonly pid: number;
  readonly port: number;
  /** Resident set size now, in KiB. */
  rssKb(): number;
  /** The last lines the proxy logged (it runs at --log-level warn), and how many there were. */
  log(): { lines: number; tail: string[] };
  /** SIGTERM, then waits for the exit (SIGKILL if it does not come). */
  stop(): Promise<void>;
}

export interface ProxyStartOptions {
  readonly imapHost: string;
  readonly imapPort: number;
  /** More flags for the proxy. */
  readonly extraArgs?: readonly string[];
}

/** Whether this build of the CLI has `flag` (from its --help). */
export function cliHasFlag(flag: string): boolean {
  knownFlags ??= spawnSync(process.execPath, [CLI, '--help'], { encoding: 'utf8' }).stdout ?? '';
  return new RegExp(`${flag}\\b(?!-)`).test(knownFlags);
}

export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('no port assigned'))));
    });
  });
}

/** VmRSS of a process in KiB (0 once it is gone). */
export function rssKbOf(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export async function startProxyProcess(options: ProxyStartOptions): Promise<ProxyProcess> {
  if (!existsSync(CLI)) throw new Error(`the proxy is not built: ${CLI} is missing (npm run build:test)`);
  const host = '127.0.0.1';
  const port = await freePort(host);
  const args = [
    // For profiling the proxy under a workload, e.g. BENCH_PROXY_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/p".
    ...(process.env.BENCH_PROXY_NODE_ARGS?.split(' ').filter((a) => a !== '') ?? []),
    CLI,
    '--imap-host', options.imapHost,
    '--imap-port', String(options.imapPort),
    '--imap-tls', 'none',
    '--host', host,
    '--port', String(port),
    '--log-level', 'warn',
    ...loadLimitArgs(),
    ...(options.extraArgs ?? []),
  ];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv() });
  const log = captureLog(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // Also killed when this process exits without cleaning up (an uncaught error, process.exit).
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  const unregisterCleanup = onCleanup(() => stopChild(child, exited));
  const unregister = () => {
    unregisterCleanup();
    process.off('exit', killOnExit);
  };
  try {
    await waitForGreeting(host, port, child);
  } catch (err) {
    unregister();
    await stopChild(child, exited);
    const { tail } = log();
    throw new Error(`the proxy did not start: ${(err as Error).message}${tail.length ? `\n${tail.join('\n')}` : ''}`);
  }
  const pid = child.pid as number;
  return {
    pid,
    port,
    rssKb: () => rssKbOf(pid),
    log,
    async stop() {
      unregister();
      await stopChild(child, exited);
    },
  };
}

/** This environment without POP3PROXY_* settings: the bench's flags alone configure the proxy. */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('POP3PROXY_')));
}

function captureLog(child: ChildProcess): () => { lines: number; tail: string[] } {
  const tail: string[] = [];
  let lines = 0;
  let partial = '';
  const onData = (chunk: Buffer) => {
    const parts = (partial + chunk.toString('utf8')).split('\n');
    partial = parts.pop() ?? '';
    for (const line of parts) {
      lines += 1;
      tail.push(line);
      if (tail.length > LOG_TAIL_LINES) tail.shift();
    }
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  return () => ({ lines, tail: [...tail] });
}

/** Waits until the proxy answers a connection with a +OK greeting. */
async function waitForGreeting(host: string, port: number, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`it exited (${child.signalCode ?? `status ${child.exitCode}`})`);
    }
    if (await greets(host, port)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no greeting on ${host}:${port} within ${START_TIMEOUT_MS / 1000} s`);
}

function greets(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    let data = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(2000, () => done(false));
    socket.on('error', () => done(false));
    socket.on('data', (chunk: Buffer) => {
      data += chunk.toString('latin1');
      if (!data.includes('\r\n')) return;
      done(data.startsWith('+OK'));
    });
  });
}

async function stopChild(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
}
