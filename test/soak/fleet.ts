/**
 * The proxies under test: one alone (its locks in the process) and two replicas sharing one
 * Redis (--redis, a short --lock-ttl), all real CLI processes in front of the same backend
 * chain. A proxy that dies without the injector's doing is recorded as a crash and started
 * again, so that the soak goes on and can find more. Memory is sampled every second.
 */
import net from 'node:net';
import { ProxyProcess, type ProxyExit } from './proxy-process.js';
import { errorText, sleep, until } from './util.js';

export interface FleetSettings {
  imapPort: number;
  redisUrl: string;
  lockTtlS: number;
  idleTimeoutS: number;
  logDir: string;
}

/** Flags every proxy gets: short timeouts so that faults end within the soak's bounds. */
function commonArgs(s: FleetSettings): string[] {
  return ['--imap-host', '127.0.0.1', '--imap-port', String(s.imapPort), '--imap-tls', 'none',
    '--log-format', 'json', '--log-level', 'info', '--shutdown-grace', '2', '--backend-timeout', '10',
    '--backend-connect-timeout', '5', '--idle-timeout', String(s.idleTimeoutS), '--auth-fail-delay', '1'];
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer().once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export class ProxyFleet {
  readonly crashes: ProxyExit[] = [];
  /** Restarts that failed (the proxy did not listen again): each is a finding. */
  readonly restartFailures: string[] = [];
  private stopping = false;
  private sampler: NodeJS.Timeout | undefined;

  private constructor(readonly single: ProxyProcess, readonly replicas: ProxyProcess[]) {}

  static async create(s: FleetSettings): Promise<ProxyFleet> {
    let fleet: ProxyFleet | undefined;
    const onCrash = (exit: ProxyExit) => fleet?.crashed(exit);
    const make = async (name: string, extra: string[]) =>
      new ProxyProcess({ name, port: await freePort(), metricsPort: await freePort(), args: [...commonArgs(s), ...extra], logDir: s.logDir }, onCrash);
    const redisArgs = ['--redis', s.redisUrl, '--lock-ttl', String(s.lockTtlS)];
    fleet = new ProxyFleet(await make('single', []), [await make('r1', redisArgs), await make('r2', redisArgs)]);
    return fleet;
  }

  get all(): ProxyProcess[] {
    return [this.single, ...this.replicas];
  }

  byName(name: string): ProxyProcess {
    const p = this.all.find((x) => x.name === name);
    if (p === undefined) throw new Error(`no proxy ${name}`);
    return p;
  }

  async startAll(): Promise<void> {
    await Promise.all(this.all.map((p) => p.start()));
    this.sampler = setInterval(() => this.all.forEach((p) => p.sampleRss()), 1000);
  }

  /** Starts `p` again (after `delayMs`), retrying a few times; a failure is recorded. */
  async restart(p: ProxyProcess, delayMs = 0): Promise<boolean> {
    await sleep(delayMs);
    for (let attempt = 1; attempt <= 3 && !this.stopping; attempt++) {
      if (p.running) return true;
      try {
        await p.start();
        return true;
      } catch (err) {
        // Another program on this machine may take the port in the moment it was free.
        const taken = p.exits.at(-1)?.tail.some((l) => /EADDRINUSE|address already in use/i.test(l)) === true;
        this.restartFailures.push(`${p.name}: restart attempt ${attempt}: ${errorText(err)}${taken ? ' (SOAK ARTEFACT: its port was taken by another process)' : ''}`);
        await sleep(1000);
      }
    }
    return p.running;
  }

  /** Waits until every proxy is running and has no session open; false when that never came. */
  async settle(limitMs: number): Promise<boolean> {
    return until(async () => {
      const counts = await Promise.all(this.all.map((p) => p.sessionsActive()));
      return counts.every((n) => n === 0);
    }, limitMs, 500);
  }

  /** What each proxy still reports open (for the summary when settle() failed). */
  async openSessions(): Promise<string> {
    const counts = await Promise.all(this.all.map(async (p) => `${p.name}=${(await p.sessionsActive()) ?? '?'}`));
    return counts.join(' ');
  }

  /** Ends every proxy (SIGTERM, then SIGKILL), recorded as the teardown's doing. */
  async stopAll(): Promise<void> {
    this.stopping = true;
    clearInterval(this.sampler);
    await Promise.all(this.all.map(async (p) => {
      const exit = await p.signal('SIGTERM', 'teardown', 15_000).catch(() => undefined);
      if (exit === undefined && p.running) await p.signal('SIGKILL', 'teardown', 10_000).catch(() => undefined);
    }));
  }

  private crashed(exit: ProxyExit): void {
    this.crashes.push(exit);
    if (!this.stopping) void this.restart(this.byName(exit.name), 500);
  }
}
