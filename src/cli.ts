#!/usr/bin/env node
/**
 * pop3-imap-proxy: parse the command line, start the POP3 server, re-read the TLS certificate
 * on SIGHUP, and end every session through its cleanup path on SIGTERM/SIGINT.
 */
import { ConfigError, parseCommandLine } from './config/options.js';
import { createLogger } from './logging/logger.js';
import { createProxy } from './proxy.js';

async function main(): Promise<void> {
  let parsed;
  try {
    parsed = await parseCommandLine(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`pop3-imap-proxy: ${err.message} (see --help)`);
    process.exit(2);
  }
  if (!parsed) return;
  if (parsed.print) {
    process.stdout.write(`${JSON.stringify(parsed.print, null, 2)}\n`);
    return;
  }
  const config = parsed.config;
  const logger = createLogger(config.log);
  const server = createProxy(config, logger);
  try {
    await server.listen();
  } catch (err) {
    logger.error(`Cannot listen on ${config.listen.host}:${config.listen.port}: ${(err as Error).message}`);
    process.exit(1);
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info(`${signal} received: no new connections; ${server.activeSessions} session(s) get ${config.shutdownGraceMs / 1000} s to finish`);
    server.close(config.shutdownGraceMs).then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error(`Shutdown failed: ${(err as Error).message}`);
        process.exit(1);
      },
    );
  };
  // A renewed certificate is picked up without dropping anyone.
  process.on('SIGHUP', () => server.reloadTls());
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
