/**
 * The command line (yargs): every flag can also come from an environment variable
 * POP3PROXY_<FLAG> (flags win). Parsing ends in a validated ProxyConfig or a ConfigError whose
 * message names the offending flag.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import yargs from 'yargs';
import { needsLocalUsers, parseRouting, type BackendEndpoint, type Routing } from './profiles.js';
import { loadTlsCredentials } from '../tls/tls-credentials.js';
import { COMMANDS_EPILOGUE } from './usage.js';
import { OPTIONS } from './flags.js';
import { flagRelay, smtpConfig, type SmtpConfig } from './smtp-flags.js';
import { httpProxyOf, lookupConfig, type LookupConfig } from './lookup-flags.js';
import { mailboxPolicy, type MailboxPolicy } from './mailbox-flags.js';
import { checkUidlFormat, ConfigError, count, parseDeleteMode, readCa, seconds } from './values.js';
import type { LogFormat, LogLevel } from '../logging/logger.js';

export interface ProxyConfig {
  readonly listen: { readonly host: string; readonly port: number };
  /** The default profile's backend: the one every login goes to that no route names. */
  readonly imap: BackendEndpoint;
  /** Client-side TLS: STLS on the plain port, and implicit TLS on its own port if given. */
  readonly tls: TlsConfig | undefined;
  /** Connections start with a HAProxy PROXY protocol header (v1 or v2) naming the real client. */
  readonly proxyProtocol: boolean;
  /** Accept USER/PASS and AUTH PLAIN/LOGIN over unencrypted connections from other hosts. */
  readonly allowPlaintextAuth: boolean;
  readonly limits: AbuseLimits;
  readonly policy: MailboxPolicy;
  /**
   * The state replicas share in Redis (mailbox locks, the failed-login throttle, LOGIN-DELAY);
   * undefined for all of it in this process.
   */
  readonly redis: { readonly url: string; readonly lockTtlMs: number } | undefined;
  /** Where /metrics, /healthz and /readyz are served; undefined for nowhere. */
  readonly metrics: { readonly host: string; readonly port: number } | undefined;
  /** Where the addresses listened on are written once listening (for `pop3-imap-proxy healthcheck`). */
  readonly statusFile?: string | undefined;
  readonly idleTimeoutMs: number;
  /** On SIGTERM/SIGINT, how long running sessions may go on before they are ended. */
  readonly shutdownGraceMs: number;
  readonly backendTimeoutMs: number;
  /** Longest wait for the backend's TCP/TLS connection and greeting. */
  readonly backendConnectTimeoutMs: number;
  /**
   * How long after its login a backend connection may serve the next session of the same
   * login (--backend-reuse); 0 or undefined: never.
   */
  readonly backendReuseMs?: number | undefined;
  /** Backend profiles (the flags make "default") and the routes of logins to them. */
  readonly routing: Routing;
  /** The proxy's own users, for profiles that log in with tokens of the proxy's own. */
  readonly usersFile: string | undefined;
  readonly log: { readonly level: LogLevel; readonly format: LogFormat };
  /** SMTP submission, when a port for it is given; the relays are the profiles'. */
  readonly smtp?: SmtpConfig | undefined;
  /** Routing by lookup (--lookup-url); undefined: the config file's routes. */
  readonly lookup?: LookupConfig | undefined;
  /** --http-proxy for the proxy's own HTTP requests; undefined: HTTPS_PROXY/HTTP_PROXY/NO_PROXY alone. */
  readonly httpProxy?: string | undefined;
  /** The --config file, named in the commands the log tells an administrator to run. */
  readonly configFile?: string | undefined;
}

export interface TlsConfig {
  readonly certFile: string;
  readonly keyFile: string;
  /** Port for implicit TLS (RFC 8314), or undefined for STLS only. */
  readonly port: number | undefined;
}

export interface AbuseLimits {
  readonly maxConnections: number;
  readonly maxConnectionsPerIp: number;
  /** A connection must have logged in within this time. */
  readonly authTimeoutMs: number;
  /** Failed logins on one connection before it is closed. */
  readonly maxAuthFailures: number;
  /** Longest delay before a failed login's reply; it grows with the address's recent failures. */
  readonly authFailDelayMs: number;
  /** Protocol errors on one connection before it is closed. */
  readonly maxErrors: number;
}

export { ConfigError, type MailboxPolicy };

export const ENV_PREFIX = 'POP3PROXY';

/** Values read from --config, kept to tell where a bad value came from. */
interface ConfigFile {
  path: string | undefined;
  /** The settings that are also flags. */
  values: Record<string, unknown>;
  /** The settings only the file can hold: backend profiles and routes. */
  profiles: unknown;
  routes: unknown;
}

/** Keys of the config file that are not flags: they hold structures. */
const FILE_ONLY_KEYS = ['profiles', 'routes'];

function parser(argv: readonly string[], file: ConfigFile) {
  return yargs([...argv])
    .scriptName('pop3-imap-proxy')
    .usage(
      "$0 --imap-host HOST [options]\n$0 COMMAND [options]\n\nA POP3 server that serves each user's mailbox " +
        'from an IMAP server, and SMTP submission to its mail service.',
    )
    .epilogue(COMMANDS_EPILOGUE)
    .env(ENV_PREFIX)
    .config(
      'config',
      'YAML or JSON file with the same keys as the flags (flags > environment > file > defaults), and backend ' +
        'profiles and routes',
      (path: string) => {
        const { profiles, routes, ...values } = readConfigFile(path);
        Object.assign(file, { path, values, profiles, routes });
        return values;
      },
    )
    .options(OPTIONS)
    .strict()
    .help()
    .alias('h', 'help')
    .version()
    .wrap(Math.min(110, process.stdout.columns || 110))
    .exitProcess(false)
    .fail((msg, err) => {
      // yargs spreads some messages over several lines; ours are one line each.
      throw new ConfigError(
        withoutCamelCaseTwins((msg || err?.message || 'invalid arguments').replace(/\s*\n\s*/g, ' ')),
      );
    });
}

/** yargs names an unknown --some-flag twice, as some-flag and someFlag: keep the spelling users typed. */
function withoutCamelCaseTwins(message: string): string {
  const match = /^(Unknown arguments?): (.*)$/.exec(message);
  if (!match) return message;
  const names = match[2].split(', ');
  const typed = names.filter(
    (n) => !names.includes(n.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)) || !/[A-Z]/.test(n),
  );
  return `${typed.length > 1 ? 'Unknown arguments' : 'Unknown argument'}: ${typed.join(', ')}`;
}

export interface ParsedCommandLine {
  readonly config: ProxyConfig;
  /** --print-config: the effective settings, by flag name, to be shown instead of running. */
  readonly print: Record<string, unknown> | undefined;
}

/** Parses argv; returns undefined when --help or --version was answered. */
export async function parseCommandLine(argv: readonly string[]): Promise<ParsedCommandLine | undefined> {
  const file: ConfigFile = { path: undefined, values: {}, profiles: undefined, routes: undefined };
  const raw = await parser(argv, file).parseAsync();
  if (raw.help || raw.version) return undefined;
  const config = validate(raw, origins(argv, file), file);
  return { config, print: raw['print-config'] ? effectiveSettings(raw, file) : undefined };
}

/** Parses argv into a configuration; undefined when --help or --version was answered. */
export async function parseConfig(argv: readonly string[]): Promise<ProxyConfig | undefined> {
  return (await parseCommandLine(argv))?.config;
}

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`--config: cannot read ${path}: ${(err as Error).message}`);
  }
  let values: unknown;
  try {
    // YAML is a superset of JSON: one parser reads both.
    values = parseYaml(text);
  } catch (err) {
    throw new ConfigError(`--config: ${path} is neither YAML nor JSON: ${(err as Error).message.split('\n', 1)[0]}`);
  }
  if (values === null || values === undefined) return {};
  if (typeof values !== 'object' || Array.isArray(values))
    throw new ConfigError(`--config: ${path} must hold a mapping of flag names to values`);
  const unknown = Object.keys(values).find(
    (key) => (!(key in OPTIONS) && !FILE_ONLY_KEYS.includes(key)) || key === 'print-config',
  );
  if (unknown !== undefined) throw new ConfigError(`--config: ${path} has an unknown setting "${unknown}"`);
  return values as Record<string, unknown>;
}

/** Names where a setting came from, for error messages: the flag, the variable or the file. */
function origins(argv: readonly string[], file: ConfigFile): (key: string) => string {
  return (key) => {
    const typed = argv.some((a) => a === `--${key}` || a.startsWith(`--${key}=`) || a === `--no-${key}`);
    const variable = `${ENV_PREFIX}_${key.toUpperCase().replace(/-/g, '_')}`;
    if (typed) return `--${key}`;
    if (process.env[variable] !== undefined) return variable;
    if (file.path !== undefined && key in file.values) return `${key} in ${file.path}`;
    return `--${key}`;
  };
}

/**
 * Settings shown by --print-config: every flag's effective value, and the profiles and routes.
 * Nothing here is secret: secrets are only ever named by the files or variables holding them.
 */
function effectiveSettings(raw: Raw, file: ConfigFile): Record<string, unknown> {
  const shown: Record<string, unknown> = {};
  if (file.profiles !== undefined) shown.profiles = file.profiles;
  if (file.routes !== undefined) shown.routes = file.routes;
  for (const [key, value] of Object.entries(raw)) {
    if (key === '_' || key === '$0' || key === 'config' || key === 'print-config' || /[A-Z]/.test(key)) continue;
    shown[key] = value;
  }
  return shown;
}

type Raw = Awaited<ReturnType<ReturnType<typeof parser>['parseAsync']>>;

function validate(raw: Raw, at: (key: string) => string, file: ConfigFile): ProxyConfig {
  const imapHost = raw['imap-host'];
  if (!imapHost)
    throw new ConfigError('--imap-host is required (or POP3PROXY_IMAP_HOST, or imap-host in a --config file)');
  const tls = raw['imap-tls'];
  const uidlFormat = checkUidlFormat(at('uidl-format'), raw['uidl-format']);
  const imap: BackendEndpoint = {
    host: imapHost,
    port: port(at('imap-port'), raw['imap-port'] ?? (tls === 'implicit' ? 993 : 143), false),
    tls,
    verifyTls: raw['imap-tls-verify'],
    ca: raw['imap-ca'] === undefined ? undefined : readCa(at('imap-ca'), raw['imap-ca']),
    mailbox: nonEmpty(at('mailbox'), raw.mailbox),
    servername: raw['imap-servername'],
  };
  const deleteMode = parseDeleteMode(at('delete-mode'), raw['delete-mode']);
  const smtpRelay = flagRelay(raw, at);
  const defaults = {
    imap,
    deleteMode,
    flagOnDele: raw['flag-on-dele'],
    uidlFormat,
    auth: { grant: 'password' as const },
    smtpRelay,
    smtpScope: undefined,
  };
  const routing = parseRouting(file.profiles, file.routes, defaults, file.path ?? '--config');
  const usersFile = raw['users-file'];
  if (needsLocalUsers(routing) && usersFile === undefined)
    throw new ConfigError(
      `${at('users-file')} is required: a profile logs in with tokens of the proxy's own, so the proxy must ` +
        `check its clients itself`,
    );
  return {
    listen: { host: raw.host, port: port(at('port'), raw.port, true) },
    imap,
    tls: tlsConfig(raw, at),
    allowPlaintextAuth: raw['allow-plaintext-auth'],
    proxyProtocol: raw['proxy-protocol'],
    limits: {
      maxConnections: count(at('max-connections'), raw['max-connections']),
      maxConnectionsPerIp: count(at('max-connections-per-ip'), raw['max-connections-per-ip']),
      authTimeoutMs: seconds(at('auth-timeout'), raw['auth-timeout']),
      maxAuthFailures: count(at('max-auth-failures'), raw['max-auth-failures']),
      authFailDelayMs: seconds(at('auth-fail-delay'), raw['auth-fail-delay'], true),
      maxErrors: count(at('max-errors'), raw['max-errors']),
    },
    policy: mailboxPolicy(raw, at),
    redis: sharedRedis(raw, at),
    metrics:
      raw['metrics-port'] === undefined
        ? undefined
        : { host: raw['metrics-host'], port: port(at('metrics-port'), raw['metrics-port'], true) },
    statusFile: raw['status-file'],
    idleTimeoutMs: seconds(at('idle-timeout'), raw['idle-timeout']),
    shutdownGraceMs: seconds(at('shutdown-grace'), raw['shutdown-grace'], true),
    backendTimeoutMs: seconds(at('backend-timeout'), raw['backend-timeout']),
    backendConnectTimeoutMs: seconds(at('backend-connect-timeout'), raw['backend-connect-timeout']),
    backendReuseMs: backendReuse(at('backend-reuse'), raw['backend-reuse']),
    routing,
    usersFile,
    log: { level: raw['log-level'], format: raw['log-format'] },
    smtp: smtpConfig(raw, at, raw['tls-cert'] !== undefined),
    lookup: lookupConfig(raw, at),
    httpProxy: httpProxyOf(raw, at),
    configFile: file.path,
  };
}

function port(flag: string, value: number, allowZero: boolean): number {
  if (!Number.isInteger(value) || value < (allowZero ? 0 : 1) || value > 65535) {
    throw new ConfigError(`${flag}: ${String(value)} is not a valid port (1-65535)`);
  }
  return value;
}

function tlsConfig(raw: Raw, at: (key: string) => string): TlsConfig | undefined {
  const certFile = raw['tls-cert'];
  const keyFile = raw['tls-key'];
  const tlsPort = raw['tls-port'];
  if (certFile === undefined && keyFile === undefined) {
    if (tlsPort !== undefined) throw new ConfigError('--tls-port needs --tls-cert and --tls-key');
    return undefined;
  }
  if (certFile === undefined) throw new ConfigError('--tls-key needs --tls-cert');
  if (keyFile === undefined) throw new ConfigError('--tls-cert needs --tls-key');
  try {
    loadTlsCredentials(certFile, keyFile);
  } catch (err) {
    throw new ConfigError(`${at('tls-cert')}/${at('tls-key')}: ${(err as Error).message}`);
  }
  return { certFile, keyFile, port: tlsPort === undefined ? undefined : port(at('tls-port'), tlsPort, true) };
}

/** --redis, or its old name --lock-redis; both only when they agree. */
function sharedRedis(raw: Raw, at: (key: string) => string): ProxyConfig['redis'] {
  const url = raw.redis;
  const oldName = raw['lock-redis'];
  if (url !== undefined && oldName !== undefined && url !== oldName) {
    throw new ConfigError(`${at('redis')} and ${at('lock-redis')} (its old name) differ: give one Redis URL`);
  }
  if (url === undefined && oldName === undefined) return undefined;
  const flag = url !== undefined ? at('redis') : at('lock-redis');
  return { url: redisUrl(flag, (url ?? oldName)!), lockTtlMs: seconds(at('lock-ttl'), raw['lock-ttl']) };
}

/** At most an hour: it is also how long a password changed on the server may still be honoured. */
function backendReuse(flag: string, value: number): number {
  if (!Number.isFinite(value) || value < 0 || value > 3600)
    throw new ConfigError(`${flag}: ${String(value)} is not a number of seconds between 0 and 3600`);
  return Math.round(value * 1000);
}

function redisUrl(flag: string, value: string): string {
  if (!/^rediss?:\/\/[^\s]+$/.test(value))
    throw new ConfigError(`${flag}: ${value} is not a redis:// or rediss:// URL`);
  return value;
}

function nonEmpty(flag: string, value: string): string {
  if (value.trim() === '') throw new ConfigError(`${flag} must not be empty`);
  return value;
}
