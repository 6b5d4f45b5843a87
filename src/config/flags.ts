/**
 * The command line's flags: name, type, default, help text and group, as yargs takes them;
 * each area's own table (mailbox policy, SMTP submission, routing by lookup) merged in. Every
 * flag can also come from an environment variable POP3PROXY_<FLAG> or the --config file.
 */
import type { ImapTlsMode } from '../imap/imap-client.js';
import { DEFAULT_UIDL_FORMAT } from '../imap/uidl-format.js';
import type { LogFormat, LogLevel } from '../logging/logger.js';
import { LOOKUP_OPTIONS } from './lookup-flags.js';
import { MAILBOX_OPTIONS } from './mailbox-flags.js';
import { SMTP_OPTIONS } from './smtp-flags.js';

const TLS_MODES = ['implicit', 'starttls', 'none'] as const;
const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;
const LOG_FORMATS = ['text', 'json'] as const;

/** Every flag, by name, as yargs takes it (each group's own table merged in). */
export const OPTIONS = {
  ...MAILBOX_OPTIONS,
  'print-config': {
    type: 'boolean',
    default: false,
    describe: 'Print the effective configuration and exit',
    group: 'Operations:',
  },
  'imap-host': { type: 'string', describe: 'IMAP server to proxy to (required)', group: 'Backend:' },
  'imap-port': {
    type: 'number',
    describe: 'IMAP port [default: 993, or 143 unless --imap-tls is implicit]',
    group: 'Backend:',
  },
  'imap-tls': {
    choices: TLS_MODES,
    default: 'implicit' as ImapTlsMode,
    describe: 'TLS to the IMAP server',
    group: 'Backend:',
  },
  'imap-tls-verify': {
    type: 'boolean',
    default: true,
    describe: 'Verify the IMAP server certificate (--no-imap-tls-verify to skip)',
    group: 'Backend:',
  },
  'imap-ca': { type: 'string', describe: 'PEM file with extra CA certificates for the IMAP server', group: 'Backend:' },
  'imap-servername': {
    type: 'string',
    describe: 'TLS server name to expect from the IMAP server [default: --imap-host]',
    group: 'Backend:',
  },
  mailbox: {
    type: 'string',
    default: 'INBOX',
    describe: 'IMAP mailbox served as the POP3 maildrop',
    group: 'Backend:',
  },
  'backend-timeout': {
    type: 'number',
    default: 30,
    describe: 'Seconds to wait for a login or any one command on the backend (must cover its failed-login penalty)',
    group: 'Backend:',
  },
  'backend-connect-timeout': {
    type: 'number',
    default: 5,
    describe: "Seconds to wait for the backend's connection and greeting",
    group: 'Backend:',
  },
  'backend-reuse': {
    type: 'number',
    default: 30,
    describe:
      'Seconds after its login a backend connection may serve the next session of the same user with the same ' +
      'password (kept after QUIT; a password changed on the server takes effect within this time); 0: never',
    group: 'Backend:',
  },
  'uidl-format': {
    type: 'string',
    default: DEFAULT_UIDL_FORMAT,
    describe: 'UIDL template: %u UID, %v UIDVALIDITY (Dovecot syntax, e.g. %08Xu%08Xv)',
    group: 'Backend:',
  },
  host: { type: 'string', default: '0.0.0.0', describe: 'Address to listen on for POP3', group: 'POP3:' },
  port: { type: 'number', default: 110, describe: 'Port to listen on for POP3 (0 picks a free one)', group: 'POP3:' },
  'idle-timeout': {
    type: 'number',
    default: 600,
    describe: 'Seconds of client inactivity before a session is ended',
    group: 'POP3:',
  },
  'proxy-protocol': {
    type: 'boolean',
    default: false,
    describe: 'Expect a HAProxy PROXY protocol header (v1 or v2) on every connection, from a load balancer',
    group: 'POP3:',
  },
  'shutdown-grace': {
    type: 'number',
    default: 5,
    describe:
      'Seconds running sessions may go on after SIGTERM/SIGINT before they are ended (keep it 4 s under the ' +
      'SIGKILL deadline: docker stop -t, terminationGracePeriodSeconds)',
    group: 'POP3:',
  },
  'tls-cert': {
    type: 'string',
    describe: 'PEM certificate (chain) for client TLS: enables STLS, and --tls-port',
    group: 'POP3 TLS:',
  },
  'tls-key': { type: 'string', describe: 'PEM private key for --tls-cert', group: 'POP3 TLS:' },
  'tls-port': {
    type: 'number',
    describe: 'Port for implicit TLS, conventionally 995 (needs --tls-cert)',
    group: 'POP3 TLS:',
  },
  'allow-plaintext-auth': {
    type: 'boolean',
    default: false,
    describe: 'With TLS configured, still accept passwords over unencrypted connections from other hosts',
    group: 'POP3 TLS:',
  },
  'max-connections': {
    type: 'number',
    default: 1000,
    describe: 'Client connections at once, in all',
    group: 'Limits:',
  },
  'max-connections-per-ip': {
    type: 'number',
    default: 50,
    describe: 'Client connections at once from one address',
    group: 'Limits:',
  },
  'auth-timeout': { type: 'number', default: 60, describe: 'Seconds a connection has to log in', group: 'Limits:' },
  'max-auth-failures': {
    type: 'number',
    default: 3,
    describe: 'Failed logins on one connection before it is closed',
    group: 'Limits:',
  },
  'auth-fail-delay': {
    type: 'number',
    default: 8,
    describe: 'Longest delay in seconds before a failed login is answered (grows per address)',
    group: 'Limits:',
  },
  'max-errors': {
    type: 'number',
    default: 10,
    describe: 'Protocol errors on one connection before it is closed',
    group: 'Limits:',
  },
  'users-file': {
    type: 'string',
    describe:
      "YAML file of the proxy's own users (login, mailbox, password hashes), for profiles that log in with " +
      'tokens; re-read on SIGHUP',
    group: 'Operations:',
  },
  redis: {
    type: 'string',
    describe:
      'Redis URL (redis://host:6379/0, rediss:// for TLS) for the state proxy replicas share: mailbox locks, ' +
      'the failed-login throttle, LOGIN-DELAY',
    group: 'Operations:',
  },
  'lock-redis': {
    type: 'string',
    describe: 'The old name of --redis (the same URL, or leave one out)',
    group: 'Operations:',
  },
  'lock-ttl': {
    type: 'number',
    default: 60,
    describe: 'Seconds a Redis lock outlives a replica that died holding it',
    group: 'Operations:',
  },
  'metrics-port': {
    type: 'number',
    describe: 'Serve /metrics (Prometheus), /healthz and /readyz over HTTP on this port',
    group: 'Operations:',
  },
  'metrics-host': { type: 'string', default: '0.0.0.0', describe: 'Address for --metrics-port', group: 'Operations:' },
  'status-file': {
    type: 'string',
    describe:
      'Once listening, write the process id and the addresses listened on (POP3, TLS, metrics) to this JSON ' +
      'file, for `pop3-imap-proxy healthcheck`',
    group: 'Operations:',
  },
  'log-level': {
    choices: LOG_LEVELS,
    default: 'info' as LogLevel,
    describe: 'Log level (debug adds protocol traces)',
    group: 'Logging:',
  },
  'log-format': { choices: LOG_FORMATS, default: 'text' as LogFormat, describe: 'Log line format', group: 'Logging:' },
  ...SMTP_OPTIONS,
  ...LOOKUP_OPTIONS,
} as const;
