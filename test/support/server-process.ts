/**
 * The process tree of one private test server (test/support/private-server.ts): started in a
 * process group of its own under `setpriv --pdeathsig`, optionally as the first process of new
 * mount and PID namespaces, and stopped with everything it started; servers still running when
 * this process exits are killed and their temp directories removed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The first of `candidates` that exists, else `name` found on PATH. */
export function which(name: string, candidates: string[]): string | undefined {
  for (const c of candidates) if (existsSync(c)) return c;
  for (const d of (process.env.PATH ?? '').split(':')) {
    if (d && existsSync(join(d, name))) return join(d, name);
  }
  return undefined;
}

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
