/**
 * Runs the proxy in this process in front of a test Dovecot, on a free loopback port, with its
 * log captured so tests can read it.
 */
import { Writable } from 'node:stream';
import type { ProxyConfig } from '../../src/config/options.js';
import type { LockRegistry } from '../../src/lock/lock-registry.js';
import { createLogger, type LogFormat, type LogLevel } from '../../src/logging/logger.js';
import { createProxy } from '../../src/proxy.js';
import type { Pop3Server } from '../../src/pop3/server.js';

export interface TestProxy {
  readonly port: number;
  readonly server: Pop3Server;
  /** Every log line so far. */
  log(): string;
  close(): Promise<void>;
}

export interface TestProxyOptions {
  imapPort: number;
  imapHost?: string;
  idleTimeoutMs?: number;
  backendTimeoutMs?: number;
  uidlFormat?: string;
  mailbox?: string;
  logLevel?: LogLevel;
  logFormat?: LogFormat;
  locks?: LockRegistry;
}

export async function startProxy(options: TestProxyOptions): Promise<TestProxy> {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  const config: ProxyConfig = {
    listen: { host: '127.0.0.1', port: 0 },
    imap: {
      host: options.imapHost ?? '127.0.0.1',
      port: options.imapPort,
      tls: 'none',
      verifyTls: true,
      ca: undefined,
      mailbox: options.mailbox ?? 'INBOX',
    },
    idleTimeoutMs: options.idleTimeoutMs ?? 600_000,
    backendTimeoutMs: options.backendTimeoutMs ?? 30_000,
    uidlFormat: options.uidlFormat ?? '%08Xu%08Xv',
    log: { level: options.logLevel ?? 'debug', format: options.logFormat ?? 'text' },
  };
  const logger = createLogger({ ...config.log, stream: sink });
  const server = createProxy(config, logger, options.locks);
  const address = await server.listen();
  return {
    port: address.port,
    server,
    log: () => lines.join(''),
    close: () => server.close(),
  };
}
