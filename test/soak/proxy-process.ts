/**
 * One proxy as the real CLI process (the built src/cli.js), restarted on the same ports after
 * each death so clients find it again. Every exit is recorded with who caused it: the injector
 * (SIGKILL, SIGTERM), the teardown, or nobody, which is a crash, kept with the tail of the
 * process's output (the stack of an uncaught error goes to stderr). The JSON log (one line per
 * event) is written to a file per generation and read for the session ends (user, client port,
 * time: the lock is released before that line is written), the throttle warnings and errors.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, readFileSync, type WriteStream } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sleep, within } from './util.js';

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli.js');
const LISTEN_TIMEOUT_MS = 30_000;
const TAIL_LINES = 60;

export type ExitCause = 'SIGKILL' | 'SIGTERM' | 'teardown';

export interface ProxyExit {
  name: string;
  gen: number;
  pid: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  at: number;
  /** Who made it exit; undefined: nobody did (a crash). */
  cause: ExitCause | undefined;
  /** From the signal to the exit, for SIGTERM. */
  shutdownMs?: number;
  /** The last lines of its output. */
  tail: string[];
  logFile: string;
}

export interface SessionEnd {
  at: number;
  gen: number;
  reason: string;
  user?: string;
}

interface Generation {
  gen: number;
  child: ChildProcess;
  pid: number;
  log: WriteStream;
  logFile: string;
  tail: string[];
  cause?: ExitCause;
  signalledAt?: number;
  exited: Promise<ProxyExit>;
}

export interface ProxySpec {
  name: string;
  port: number;
  metricsPort: number;
  /** Flags besides the listen addresses. */
  args: string[];
  logDir: string;
}

export class ProxyProcess {
  readonly exits: ProxyExit[] = [];
  /** Session ends by client port (the port alone may repeat over a long run: check the time). */
  readonly sessionEnds = new Map<number, SessionEnd[]>();
  /** Errors and warnings logged, by message (first 160 characters). */
  readonly logged = new Map<string, number>();
  /** Errors the proxy's last resort caught (event unexpected-error): each a bug, like a crash. */
  readonly escaped: Array<{ at: number; gen: number; message: string }> = [];
  throttleWarnings = 0;
  rssMaxKiB = 0;
  gen = 0;
  private current: Generation | undefined;
  private carry = '';

  constructor(readonly spec: ProxySpec, private readonly onCrash: (exit: ProxyExit) => void) {}

  get name(): string {
    return this.spec.name;
  }

  get port(): number {
    return this.spec.port;
  }

  get running(): boolean {
    return this.current !== undefined;
  }

  get pid(): number | undefined {
    return this.current?.pid;
  }

  /** Spawns the next generation and resolves once it listens. */
  async start(): Promise<void> {
    if (this.current !== undefined) throw new Error(`${this.name} is already running`);
    const gen = ++this.gen;
    this.carry = '';
    const logFile = path.join(this.spec.logDir, `${this.name}-${gen}.log`);
    const args = [CLI, '--host', '127.0.0.1', '--port', String(this.spec.port), '--metrics-host', '127.0.0.1', '--metrics-port', String(this.spec.metricsPort), ...this.spec.args];
    // Only these flags: nothing from POP3PROXY_* variables of the environment.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('POP3PROXY')));
    // setpriv: the kernel kills the proxy should the soak itself die without its teardown.
    const argv = existsSync('/usr/bin/setpriv') ? ['/usr/bin/setpriv', '--pdeathsig', 'KILL', '--', process.execPath, ...args] : [process.execPath, ...args];
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env });
    const g: Generation = { gen, child, pid: child.pid ?? 0, log: createWriteStream(logFile), logFile, tail: [], exited: undefined as unknown as Promise<ProxyExit> };
    let listening = false;
    const onData = (d: Buffer) => {
      g.log.write(d);
      if (this.take(g, d.toString('utf8'))) listening = true;
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    g.exited = new Promise<ProxyExit>((resolve) => child.once('exit', (code, signal) => resolve(this.exited(g, code, signal))));
    this.current = g;
    const deadline = Date.now() + LISTEN_TIMEOUT_MS;
    while (!listening && this.current === g && Date.now() < deadline) await sleep(50);
    if (!listening) {
      if (this.current === g) await this.signal('SIGKILL', 'teardown').catch(() => undefined);
      throw new Error(`${this.name} (generation ${gen}) did not listen within ${LISTEN_TIMEOUT_MS} ms; see ${logFile}`);
    }
  }

  /** Sends `sig` and waits for the exit; the exit is recorded as caused by `cause`. */
  async signal(sig: 'SIGKILL' | 'SIGTERM', cause: ExitCause, timeoutMs = 15_000): Promise<ProxyExit | undefined> {
    const g = this.current;
    if (g === undefined) return undefined;
    g.cause ??= cause;
    g.signalledAt ??= Date.now();
    g.child.kill(sig);
    return within(g.exited, timeoutMs, `${this.name} to exit after ${sig}`);
  }

  /** Resident memory now (and the maximum so far), in KiB. */
  sampleRss(): number | undefined {
    const pid = this.current?.pid;
    if (!pid) return undefined;
    try {
      const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (!m) return undefined;
      const kib = Number(m[1]);
      this.rssMaxKiB = Math.max(this.rssMaxKiB, kib);
      return kib;
    } catch {
      return undefined;
    }
  }

  /** pop3proxy_sessions_active from the metrics endpoint, or undefined when it does not answer. */
  async sessionsActive(): Promise<number | undefined> {
    if (this.current === undefined) return undefined;
    try {
      const res = await fetch(`http://127.0.0.1:${this.spec.metricsPort}/metrics`, { signal: AbortSignal.timeout(5000) });
      const m = /^pop3proxy_sessions_active(?:\{[^}]*\})? (\d+)/m.exec(await res.text());
      return m ? Number(m[1]) : undefined;
    } catch {
      return undefined;
    }
  }

  /** Session ends logged for `clientPort` at or after `after` (ports repeat over a long run). */
  endsOf(clientPort: number, after: number): SessionEnd[] {
    // The log's clock is the same as ours, but its milliseconds may round down.
    return (this.sessionEnds.get(clientPort) ?? []).filter((e) => e.at >= after - 5);
  }

  /** Reads output lines; true once the listening line went by. */
  private take(g: Generation, text: string): boolean {
    const lines = (this.carry + text).split('\n');
    this.carry = lines.pop() ?? '';
    let listening = false;
    for (const line of lines) {
      g.tail.push(line);
      if (g.tail.length > TAIL_LINES) g.tail.shift();
      if (line.includes('POP3 listening on')) listening = true;
      this.parse(g, line);
    }
    return listening;
  }

  private parse(g: Generation, line: string): void {
    if (!line.startsWith('{')) return;
    let entry: Record<string, unknown>;
    try {
      entry = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    const at = Date.parse(String(entry.timestamp)) || Date.now();
    const message = String(entry.message ?? '');
    if (entry.event === 'session-end') {
      const port = Number(/:(\d+)$/.exec(String(entry.client ?? ''))?.[1] ?? 0);
      const list = this.sessionEnds.get(port) ?? [];
      list.push({ at, gen: g.gen, reason: String(entry.reason ?? ''), user: entry.user === undefined ? undefined : String(entry.user) });
      this.sessionEnds.set(port, list);
    }
    if (entry.event === 'unexpected-error' || /escaped all handling/.test(message)) this.escaped.push({ at, gen: g.gen, message });
    if (/throttled/i.test(message)) this.throttleWarnings++;
    if (entry.level === 'error' || entry.level === 'warn') {
      const key = `${String(entry.level)}: ${message.slice(0, 160)}`;
      this.logged.set(key, (this.logged.get(key) ?? 0) + 1);
    }
  }

  private exited(g: Generation, code: number | null, signal: NodeJS.Signals | null): ProxyExit {
    if (this.carry) this.take(g, '\n');
    g.log.end();
    const at = Date.now();
    const exit: ProxyExit = {
      name: this.name,
      gen: g.gen,
      pid: g.pid,
      code,
      signal,
      at,
      cause: g.cause,
      shutdownMs: g.cause === 'SIGTERM' && g.signalledAt !== undefined ? at - g.signalledAt : undefined,
      tail: [...g.tail],
      logFile: g.logFile,
    };
    this.exits.push(exit);
    if (this.current === g) this.current = undefined;
    if (g.cause === undefined) this.onCrash(exit);
    return exit;
  }
}
