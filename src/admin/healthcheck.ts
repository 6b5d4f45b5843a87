/**
 * A health check that needs no copy of the proxy's configuration. Once listening, the proxy
 * writes the addresses it really listens on to its status file (--status-file), whichever way
 * they were given (flag, environment variable, config file, or port 0); `pop3-imap-proxy
 * healthcheck [FILE]` reads that file and asks the metrics endpoint's /healthz. The container
 * image sets POP3PROXY_STATUS_FILE, so its HEALTHCHECK works with any configuration.
 */
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';

export interface ProxyStatus {
  readonly pid: number;
  readonly pop3: Address;
  readonly tls?: Address | undefined;
  /** Absent when the proxy serves no metrics endpoint. */
  readonly metrics?: Address | undefined;
}

interface Address {
  readonly host: string;
  readonly port: number;
}

const PROBE_TIMEOUT_MS = 4_000;

export function address(info: AddressInfo | undefined): Address | undefined {
  return info && { host: info.address, port: info.port };
}

/** Written whole or not at all: a reader never sees half a file. */
export function writeStatusFile(path: string, status: ProxyStatus): void {
  const temporary = `${path}.${process.pid}.tmp`;
  writeFileSync(temporary, `${JSON.stringify(status)}\n`, { mode: 0o644 });
  renameSync(temporary, path);
}

export function removeStatusFile(path: string): void {
  try {
    rmSync(path, { force: true });
  } catch {
    // A status file left behind names a pid that is gone: the health check says so.
  }
}

/** Exit status 0 when the proxy named in the status file answers on /healthz, else 1. */
export async function healthcheckCommand(
  args: readonly string[],
  output: NodeJS.WritableStream,
  errors: NodeJS.WritableStream,
): Promise<number> {
  const fail = (why: string) => {
    errors.write(`pop3-imap-proxy healthcheck: ${why}\n`);
    return 1;
  };
  const path = args[0] ?? process.env.POP3PROXY_STATUS_FILE;
  if (!path) return fail('no status file: give its path, or set POP3PROXY_STATUS_FILE as the proxy has --status-file');
  let status: ProxyStatus;
  try {
    status = JSON.parse(readFileSync(path, 'utf8')) as ProxyStatus;
  } catch (err) {
    return fail(`cannot read ${path} (written once the proxy listens): ${(err as Error).message}`);
  }
  if (!running(status.pid)) return fail(`the proxy that wrote ${path} (pid ${status.pid}) is not running`);
  if (!status.metrics) return fail('the proxy serves no metrics endpoint to ask: give it --metrics-port');
  const url = `http://${hostForUrl(status.metrics.host)}:${status.metrics.port}/healthz`;
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
    if (!response.ok) return fail(`${url} answered ${response.status}`);
  } catch (err) {
    return fail(`${url}: ${(err as Error).message}`);
  }
  output.write(`ok: ${url}\n`);
  return 0;
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A wildcard address is asked on loopback; an IPv6 address goes in brackets. */
function hostForUrl(host: string): string {
  if (host === '0.0.0.0' || host === '') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}
