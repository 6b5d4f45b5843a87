/**
 * Docker for the container tests: the engine (scripts/docker-setup.sh installs and starts it as
 * root), images, containers on the host's network, and the repository's compose files turned
 * into host-network stacks on free loopback ports.
 *
 * Every container runs with --network host, so all test traffic stays on this machine's own
 * loopback interface; no bridge network is ever created.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { repoRoot } from './system.js';

/** The classic builder: BuildKit would try to fetch a frontend; compose 1.x builds through the API. */
export const DOCKER_ENV = { ...process.env, DOCKER_BUILDKIT: '0', COMPOSE_DOCKER_CLI_BUILD: '0' };

export interface DockerSetup {
  /** Why the Docker tests cannot run here, or undefined when they can. */
  readonly skip: string | undefined;
  /** The dockerd the setup started (to be stopped afterwards), if it started one. */
  readonly startedDaemon: number | undefined;
  readonly seconds: number;
}

/** Runs scripts/docker-setup.sh: installs, starts and builds what is missing (as root). */
export async function setUpDocker(): Promise<DockerSetup> {
  const started = Date.now();
  const script = path.join(repoRoot(), 'scripts', 'docker-setup.sh');
  const result = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile('bash', [script], { env: DOCKER_ENV, timeout: 25 * 60_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr }),
    );
  });
  const lines = result.stdout.trim().split('\n');
  const seconds = (Date.now() - started) / 1000;
  if (result.code === 3) return { skip: lines.at(-1) ?? 'Docker cannot be had here', startedDaemon: undefined, seconds };
  if (result.code !== 0) throw new Error(`${script} failed (exit ${result.code}): ${result.stderr.slice(-4000)}`);
  const daemon = lines.map((l) => /^started-dockerd (\d+)$/.exec(l)?.[1]).find((p) => p !== undefined);
  return { skip: undefined, startedDaemon: daemon === undefined ? undefined : Number(daemon), seconds };
}

/** Stops a dockerd the setup started, and waits (bounded) until it is gone. */
export async function stopDaemon(pid: number): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  for (let i = 0; i < 150; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface RunResult {
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to its end; rejects with its output when it fails or outlasts timeoutMs. */
export function run(command: string, args: readonly string[], timeoutMs: number, cwd = repoRoot()): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(command, [...args], { cwd, env: DOCKER_ENV, timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${command} ${args.join(' ')} failed: ${err.message}\n${stdout.slice(-3000)}\n${stderr.slice(-3000)}`));
      else resolve({ stdout, stderr });
    });
  });
}

export function docker(args: readonly string[], timeoutMs = 60_000): Promise<RunResult> {
  return run('docker', args, timeoutMs);
}

/** `docker build` of the repository's Dockerfile, as the README says, on the host's network. */
export async function buildProxyImage(tag: string): Promise<number> {
  const started = Date.now();
  await docker(['build', '--network', 'host', '-t', tag, repoRoot()], 15 * 60_000);
  return (Date.now() - started) / 1000;
}

/** A port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer().once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export async function inspect(container: string, format: string): Promise<string> {
  return (await docker(['inspect', '-f', format, container])).stdout.trim();
}

/** An error that ends a waitFor() at once: waiting longer cannot help. */
export class Hopeless extends Error {}

/**
 * Polls until check() returns a value, or fails after timeoutMs saying what it waited for;
 * at once when check() throws Hopeless.
 */
export async function waitFor<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      if (err instanceof Hopeless) throw err;
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** What a service gets when its stack is moved onto the host's network. */
export interface HostNetworkService {
  /** Replaces or adds these variables. */
  readonly environment?: Record<string, string>;
  readonly command?: readonly string[];
  /** Extra bind mounts, `host-path:container-path[:ro]`. */
  readonly volumes?: readonly string[];
}

/**
 * Writes a copy of a compose file of the repository whose services run on the host's network:
 * published ports dropped (Compose 1.x refuses them with host networking, and an override file
 * can only add to them), builds on the host's network, build contexts made absolute, and the
 * given changes (ports, addresses) applied. Everything else is the file as it is.
 */
export async function hostNetworkCompose(file: string, out: string, changes: Record<string, HostNetworkService>): Promise<string> {
  const source = path.join(repoRoot(), file);
  const spec = parseYaml(await readFile(source, 'utf8'), { merge: true }) as { services: Record<string, Record<string, unknown>> };
  const services: Record<string, Record<string, unknown>> = {};
  for (const [name, original] of Object.entries(spec.services)) {
    // Services written with one YAML anchor share objects: each gets its own copy.
    const service = structuredClone(original);
    delete service.ports;
    service.network_mode = 'host';
    const build = typeof service.build === 'string' ? { context: service.build } : (service.build as Record<string, unknown> | undefined);
    if (build) service.build = { ...build, context: path.resolve(path.dirname(source), String(build.context)), network: 'host' };
    const change = changes[name];
    if (change?.environment) service.environment = { ...(service.environment as Record<string, string> | undefined), ...change.environment };
    if (change?.command) service.command = [...change.command];
    if (change?.volumes) service.volumes = [...((service.volumes as string[] | undefined) ?? []), ...change.volumes];
    services[name] = service;
  }
  const unknown = Object.keys(changes).filter((name) => !(name in services));
  if (unknown.length > 0) throw new Error(`${file} has no service ${unknown.join(', ')}`);
  // JSON is YAML too, and leaves Compose 1.x (YAML 1.1) no room to read "no" as false.
  await writeFile(out, `${JSON.stringify({ services }, null, 2)}\n`);
  return out;
}

/** A compose stack brought up in the foreground as the README does (`up --build`), and taken down. */
export class ComposeStack {
  private up: ChildProcess | undefined;
  private upExited: Promise<number | null> | undefined;
  /** Everything `up` printed: the builds, then the services' logs. */
  output = '';

  constructor(
    readonly project: string,
    readonly file: string,
  ) {}

  private args(...rest: string[]): string[] {
    return ['-p', this.project, '-f', this.file, ...rest];
  }

  start(): void {
    const child = spawn('docker-compose', this.args('up', '--build', '--no-color'), { cwd: repoRoot(), env: DOCKER_ENV, stdio: ['ignore', 'pipe', 'pipe'] });
    this.up = child;
    child.stdout!.on('data', (d: Buffer) => (this.output += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (this.output += d.toString()));
    this.upExited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  /** Fails, with what `up` printed, when `up` ended or a service's container exited. */
  async checkRunning(): Promise<void> {
    const ended = this.up?.exitCode !== null && this.up?.exitCode !== undefined;
    let exited = '';
    if (!ended) {
      // Created but not yet started is not stopped: only containers that ran and ended count.
      const ids = (await this.compose(['ps', '-q'])).stdout.split('\n').filter(Boolean);
      const states = ids.length === 0 ? '' : (await docker(['inspect', '-f', '{{.Name}} {{.State.Status}} {{.State.ExitCode}}', ...ids])).stdout;
      exited = states.split('\n').filter((l) => / (exited|dead) /.test(l)).join(', ');
    }
    if (ended || exited) throw new Hopeless(`${ended ? 'docker-compose up ended' : `exited: ${exited}`}; its output ends with:\n${this.output.slice(-4000)}`);
  }

  compose(args: readonly string[], timeoutMs = 120_000): Promise<RunResult> {
    return run('docker-compose', this.args(...args), timeoutMs);
  }

  /** `down`: stops and removes the containers; `up` then ends. */
  async down(): Promise<void> {
    await this.compose(['down', '--timeout', '20'], 180_000).catch(() => undefined);
    if (this.upExited) {
      const timer = setTimeout(() => this.up?.kill('SIGKILL'), 30_000);
      await this.upExited;
      clearTimeout(timer);
    }
  }
}
