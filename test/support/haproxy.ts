/**
 * A real HAProxy in TCP mode in front of a proxy port that expects the PROXY protocol: each
 * frontend listens on a free loopback port and announces each client to its target with a v1
 * or v2 header. A frontend with `source` announces that address instead of the client's own
 * (`tcp-request connection set-src`), which is how a test on loopback gets a client the proxy
 * must treat as remote: no packet ever goes to that address, it is only written in the header.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort, sleep } from './private-server.js';

export interface Frontend {
  name: string;
  /** The loopback port HAProxy forwards to. */
  target: number;
  proxy: 'v1' | 'v2';
  /** The client address to announce instead of the real one. */
  source?: string;
}

export interface HAProxy {
  /** The port of a frontend. */
  port(name: string): number;
  /** What HAProxy wrote to stderr. */
  log(): string;
  stop(): Promise<void>;
}

const START_TIMEOUT_MS = 10_000;

export async function startHaproxy(frontends: Frontend[]): Promise<HAProxy> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pop3-haproxy-'));
  const ports = new Map<string, number>();
  const lines = ['global', '  maxconn 200', 'defaults', '  mode tcp', '  timeout connect 5s', '  timeout client 120s', '  timeout server 120s'];
  for (const f of frontends) {
    let port: number;
    do port = await freePort(); while ([...ports.values()].includes(port));
    ports.set(f.name, port);
    lines.push(`frontend ${f.name}`, `  bind 127.0.0.1:${port}`);
    if (f.source !== undefined) lines.push(`  tcp-request connection set-src ipv4(${f.source})`);
    lines.push(`  default_backend to_${f.name}`, `backend to_${f.name}`, `  server target 127.0.0.1:${f.target} ${f.proxy === 'v1' ? 'send-proxy' : 'send-proxy-v2'}`);
  }
  const config = path.join(dir, 'haproxy.cfg');
  await writeFile(config, `${lines.join('\n')}\n`);
  const child = spawn('haproxy', ['-db', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    child.kill('SIGTERM');
    const gone = await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]);
    if (!gone) child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  };
  // Listening is checked by binding: a connection would reach the target as a client.
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (const port of ports.values()) {
    while (await bindable(port)) {
      if (Date.now() > deadline || child.exitCode !== null) {
        await stop();
        throw new Error(`HAProxy did not listen on ${port}: ${stderr}`);
      }
      await sleep(50);
    }
  }
  return { port: (name) => ports.get(name)!, log: () => stderr, stop };
}

/** Whether nothing listens on the port yet (it can still be bound). */
function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}
