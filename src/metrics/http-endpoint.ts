/**
 * The operations endpoint: /metrics (Prometheus text format), /healthz (the process is up) and
 * /readyz (the backend answers a connection and, with shared state, Redis answers), for
 * scrapers, load balancers and container orchestrators.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'winston';
import type { ProxyMetrics } from './metrics.js';

export interface MetricsEndpointOptions {
  readonly host: string;
  readonly port: number;
  readonly metrics: ProxyMetrics;
  /** Resolves when the backend is reachable. */
  readonly ready: () => Promise<void>;
  /**
   * With shared state: resolves when Redis answers. A replica that cannot reach Redis refuses
   * every login ([SYS/TEMP], no mailbox lock), so it is not ready: a balancer that checks
   * /readyz sends the clients to the replicas that can. /healthz stays 200: the process
   * reconnects by itself and needs no restart.
   */
  readonly redisReady?: (() => Promise<void>) | undefined;
  readonly logger: Logger;
}

export async function startMetricsEndpoint(options: MetricsEndpointOptions): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    handle(options, req.url ?? '/').then(
      ({ status, type, body }) => {
        res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
        res.end(body);
      },
      (err: unknown) => {
        options.logger.warn(`Metrics endpoint failed: ${(err as Error).message}`);
        res.writeHead(500).end();
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  // A failure of the listening socket after start is logged, never the end of the process.
  server.on('error', (err) => options.logger.error(`Metrics endpoint error: ${err.message}`));
  const address = server.address() as AddressInfo;
  options.logger.info(`Metrics on http://${address.address}:${address.port}/metrics (also /healthz, /readyz)`);
  return server;
}

async function handle(
  options: MetricsEndpointOptions,
  url: string,
): Promise<{ status: number; type: string; body: string }> {
  const path = url.split('?', 1)[0];
  const text = 'text/plain; charset=utf-8';
  switch (path) {
    case '/metrics':
      return {
        status: 200,
        type: options.metrics.registry.contentType,
        body: await options.metrics.registry.metrics(),
      };
    case '/healthz':
      return { status: 200, type: text, body: 'ok\n' };
    case '/readyz':
      if (options.redisReady) {
        try {
          await options.redisReady();
        } catch (err) {
          return { status: 503, type: text, body: `redis not reachable: ${(err as Error).message}\n` };
        }
      }
      try {
        await options.ready();
        return { status: 200, type: text, body: 'ready\n' };
      } catch (err) {
        return { status: 503, type: text, body: `backend not reachable: ${(err as Error).message}\n` };
      }
    default:
      return { status: 404, type: text, body: 'not found\n' };
  }
}
