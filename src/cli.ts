#!/usr/bin/env node
/**
 * pop3-imap-proxy: the administrator's commands (hash-password, oauth-login, oauth-status,
 * healthcheck), or
 * else: parse the command line, start the POP3 server, write the status file, re-read the TLS certificate
 * and the users file on SIGHUP, and end every session through its cleanup path on SIGTERM/SIGINT.
 */
import { hashPasswordCommand } from './admin/hash-password.js';
import { address, healthcheckCommand, removeStatusFile, writeStatusFile } from './admin/healthcheck.js';
import { oauthLoginCommand } from './admin/oauth-login.js';
import { OAUTH_STATUS_USAGE, oauthStatusCommand } from './admin/oauth-status.js';
import { HASH_PASSWORD_USAGE, HEALTHCHECK_USAGE, wantsHelp } from './config/usage.js';
import { ConfigError, parseCommandLine } from './config/options.js';
import { createLogger } from './logging/logger.js';
import { installLastResort } from './logging/unexpected-errors.js';
import { createProxy } from './proxy.js';

/** The administrator's commands, besides running the proxy. */
async function admin(command: string, args: readonly string[]): Promise<number> {
  try {
    if (command === 'hash-password') return await hashPasswordCommand(process.stdin, process.stdout, process.stderr);
    if (command === 'oauth-status') await oauthStatusCommand(args, process.stdout);
    else await oauthLoginCommand(args, process.stdout);
    return 0;
  } catch (err) {
    console.error(`pop3-imap-proxy ${command}: ${(err as Error).message}`);
    return err instanceof ConfigError ? 2 : 1;
  }
}

async function main(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  if (command === 'hash-password' && wantsHelp(rest)) return void process.stdout.write(HASH_PASSWORD_USAGE);
  if (command === 'healthcheck' && wantsHelp(rest)) return void process.stdout.write(HEALTHCHECK_USAGE);
  if (command === 'oauth-status' && wantsHelp(rest)) return void process.stdout.write(OAUTH_STATUS_USAGE);
  const admins = ['hash-password', 'oauth-login', 'oauth-status'];
  if (command !== undefined && admins.includes(command)) process.exit(await admin(command, rest));
  if (command === 'healthcheck') process.exit(await healthcheckCommand(rest, process.stdout, process.stderr));
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
  let server;
  try {
    server = createProxy(config, logger);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`pop3-imap-proxy: ${err.message}`);
    process.exit(2);
  }
  // From here on no session's failure may end the process (see unexpected-errors.ts).
  const metrics = server.metrics;
  installLastResort(logger, { count: (kind) => metrics.unexpectedError(kind) });
  let listening;
  try {
    listening = await server.listen();
  } catch (err) {
    logger.error(`Cannot listen on ${config.listen.host}:${config.listen.port}: ${(err as Error).message}`);
    process.exit(1);
  }
  const statusFile = config.statusFile;
  if (statusFile !== undefined) {
    try {
      writeStatusFile(statusFile, {
        pid: process.pid,
        pop3: address(listening)!,
        tls: address(server.tlsAddress),
        metrics: address(server.metricsAddress),
      });
    } catch (err) {
      logger.warn(`Cannot write the status file (health checks will fail): ${(err as Error).message}`);
    }
  }
  const exit = (status: number) => {
    if (statusFile !== undefined) removeStatusFile(statusFile);
    process.exit(status);
  };
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info(
      `${signal} received: no new connections; ${server.activeSessions} session(s) get ` +
        `${config.shutdownGraceMs / 1000} s to finish`,
    );
    server.close(config.shutdownGraceMs).then(
      () => exit(0),
      (err: unknown) => {
        logger.error(`Shutdown failed: ${(err as Error).message}`);
        exit(1);
      },
    );
  };
  // A renewed certificate is picked up without dropping anyone.
  process.on('SIGHUP', () => server.reload());
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
