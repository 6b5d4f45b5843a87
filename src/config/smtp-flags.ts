/**
 * The SMTP submission flags: the ports (RFC 6409 submission with STARTTLS, RFC 8314 implicit
 * TLS), the size announced in EHLO, and the default profile's relay. Merged into the command
 * line's table by options.ts.
 */
import type { RelayEndpoint } from './relay-settings.js';
import { parseRelay, RELAY_KEYS } from './relay-settings.js';
import { ConfigError } from './values.js';

/** Microsoft 365's default message size limit. */
const DEFAULT_MAX_SIZE = 35 * 1024 * 1024;
const GROUP = 'SMTP submission:';

export const SMTP_OPTIONS = {
  'smtp-port': {
    type: 'number',
    describe: 'Port for SMTP submission (conventionally 587; STARTTLS with --tls-cert); off by default',
    group: GROUP,
  },
  'smtp-tls-port': {
    type: 'number',
    describe: 'Port for SMTP submission over implicit TLS (conventionally 465; needs --tls-cert)',
    group: GROUP,
  },
  'smtp-max-size': {
    type: 'number',
    default: DEFAULT_MAX_SIZE,
    describe: 'Largest message accepted, in octets (announced in EHLO SIZE)',
    group: GROUP,
  },
  'smtp-relay-host': {
    type: 'string',
    describe: 'Submission server the messages are relayed to (e.g. smtp.office365.com)',
    group: GROUP,
  },
  'smtp-relay-port': {
    type: 'number',
    describe: 'Its port [default: 465 with --smtp-relay-tls implicit, else 587]',
    group: GROUP,
  },
  'smtp-relay-tls': {
    choices: ['implicit', 'starttls', 'none'],
    default: 'starttls',
    describe: 'TLS to the relay',
    group: GROUP,
  },
  'smtp-relay-tls-verify': {
    type: 'boolean',
    default: true,
    describe: "Verify the relay's certificate (--no-smtp-relay-tls-verify to skip)",
    group: GROUP,
  },
  'smtp-relay-ca': { type: 'string', describe: 'PEM file with extra CA certificates for the relay', group: GROUP },
  'smtp-relay-servername': {
    type: 'string',
    describe: 'TLS server name to expect from the relay [default: --smtp-relay-host]',
    group: GROUP,
  },
} as const;

export interface SmtpConfig {
  /** Plain submission port (STARTTLS offered when TLS is configured). */
  readonly port: number | undefined;
  /** Implicit-TLS submission port. */
  readonly tlsPort: number | undefined;
  readonly maxSize: number;
}

type Raw = Record<string, unknown>;

/** The SMTP front door's settings, or undefined when no SMTP port is asked for. */
export function smtpConfig(raw: Raw, at: (key: string) => string, tlsConfigured: boolean): SmtpConfig | undefined {
  const port = optionalPort(raw['smtp-port'], at('smtp-port'));
  const tlsPort = optionalPort(raw['smtp-tls-port'], at('smtp-tls-port'));
  if (tlsPort !== undefined && !tlsConfigured)
    throw new ConfigError(`${at('smtp-tls-port')} needs --tls-cert and --tls-key`);
  const maxSize = raw['smtp-max-size'];
  if (!Number.isInteger(maxSize) || (maxSize as number) < 1024 || (maxSize as number) > 2 ** 31) {
    throw new ConfigError(
      `${at('smtp-max-size')}: ${String(maxSize)} is not a number of octets between 1024 and 2147483648`,
    );
  }
  if (port === undefined && tlsPort === undefined) return undefined;
  return { port, tlsPort, maxSize: maxSize as number };
}

/** The flags' relay: the default profile's, and every profile's that names none. */
export function flagRelay(raw: Raw, at: (key: string) => string): RelayEndpoint | undefined {
  // yargs fills in the defaults of TLS and verification: they alone name no relay.
  const given: Raw = {};
  for (const key of RELAY_KEYS) if (raw[key] !== undefined) given[key] = raw[key];
  if (given['smtp-relay-host'] === undefined) return undefined;
  return parseRelay(given, at);
}

function optionalPort(value: unknown, flag: string): number | undefined {
  if (value === undefined) return undefined;
  if (!Number.isInteger(value) || (value as number) < 0 || (value as number) > 65535) {
    throw new ConfigError(`${flag}: ${JSON.stringify(value)} is not a valid port (0-65535)`);
  }
  return value as number;
}
