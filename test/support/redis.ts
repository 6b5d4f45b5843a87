/**
 * A private Redis on a free loopback port (or a given one, to bring a stopped Redis back where
 * the proxies look for it), with no persistence, for the state proxy replicas share.
 */
import { spawn } from 'node:child_process';
import net from 'node:net';
import { ensureSystemDeps } from './system.js';

export interface TestRedis {
  readonly url: string;
  readonly port: number;
  stop(): Promise<void>;
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

function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => socket.end('PING\r\n'));
    socket.once('data', (d: Buffer) => resolve(d.toString().startsWith('+PONG')));
    socket.once('error', () => resolve(false));
  });
}

export async function startRedis(onPort?: number): Promise<TestRedis> {
  ensureSystemDeps();
  const port = onPort ?? (await freePort());
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  for (let i = 0; i < 100; i++) {
    if (await answers(port)) {
      return {
        url: `redis://127.0.0.1:${port}/0`,
        port,
        stop: async () => {
          child.kill('SIGTERM');
          await exited;
        },
      };
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGKILL');
  throw new Error(`redis-server did not start on port ${port}: ${stderr}`);
}
