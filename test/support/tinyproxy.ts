/**
 * Debian's tinyproxy, a real forward proxy, started privately on a free loopback port with a
 * config of its own, as a corporate network's proxy in front of the token endpoints. It runs
 * as its own user "tinyproxy" when started as root, so its folder lives under tempBase() (the
 * checkout may be closed to other users) and its log file is handed to that user. Its log
 * (LogLevel Connect) names every CONNECT and GET it relays.
 */
import { execFileSync } from 'node:child_process';
import { chownSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { HOST, freePort, readLogs, ServerProcess, sleep, startInTempDir, StartError, stopOnce, which } from './private-server.js';
import { ensureSystemDeps } from './system.js';

export interface Tinyproxy {
  /** http://127.0.0.1:PORT */
  readonly url: string;
  readonly port: number;
  /** Its log so far. */
  log(): string;
  stop(): Promise<void>;
}

const START_ATTEMPTS = 3;
const START_TIMEOUT_MS = 10_000;

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, HOST);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export async function startTinyproxy(): Promise<Tinyproxy> {
  ensureSystemDeps();
  const binary = which('tinyproxy', ['/usr/bin/tinyproxy', '/usr/sbin/tinyproxy']);
  if (binary === undefined) throw new Error('tinyproxy is not installed (scripts/system-deps.sh)');
  const root = (process.getuid?.() ?? 0) === 0;
  const started = await startInTempDir('tinyproxy', START_ATTEMPTS, {
    prepare: async (dir) => {
      const log = join(dir, 'tinyproxy.log');
      writeFileSync(log, '', { mode: 0o644 });
      // As root tinyproxy becomes its own user, who must still write the log.
      if (root) chownSync(log, Number(execFileSync('id', ['-u', 'tinyproxy'], { encoding: 'utf8' })), Number(execFileSync('id', ['-g', 'tinyproxy'], { encoding: 'utf8' })));
    },
    startOnce: async (dir) => {
      const port = await freePort();
      const config = [
        ...(root ? ['User tinyproxy', 'Group tinyproxy'] : []),
        `Port ${port}`,
        `Listen ${HOST}`,
        'Timeout 30',
        `LogFile "${join(dir, 'tinyproxy.log')}"`,
        'LogLevel Connect',
        'MaxClients 50',
        `Allow ${HOST}`,
        // No ConnectPort line: CONNECT to any port (the test servers' ports are random).
        'DisableViaHeader Yes',
      ].join('\n');
      writeFileSync(join(dir, 'tinyproxy.conf'), `${config}\n`, { mode: 0o644 });
      const proc = ServerProcess.spawn('tinyproxy', dir, [binary, '-d', '-c', join(dir, 'tinyproxy.conf')], join(dir, 'stdout.log'), process.env, 'TERM');
      const deadline = Date.now() + START_TIMEOUT_MS;
      while (Date.now() < deadline && proc.running && !(await accepts(port))) await sleep(50);
      if (!(await accepts(port))) {
        await proc.kill().catch(() => undefined);
        const logs = readLogs(dir, ['stdout.log', 'tinyproxy.log']);
        throw new StartError(`tinyproxy did not listen on ${HOST}:${port}\n${logs}`, /Address already in use|bind/i.test(logs));
      }
      return { proc, port };
    },
  });
  const { dir, proc, port } = started;
  return {
    url: `http://${HOST}:${port}`,
    port,
    log: () => {
      try {
        return readFileSync(join(dir, 'tinyproxy.log'), 'utf8');
      } catch {
        return '';
      }
    },
    stop: stopOnce(proc, dir),
  };
}
