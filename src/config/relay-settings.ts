/**
 * Where SMTP submissions are relayed: the same keys as flags (`--smtp-relay-host`, ...) and as
 * a profile's settings (`smtp-relay-host: ...`), checked the same way. The port defaults to
 * 465 with implicit TLS, 587 otherwise; TLS to STARTTLS; the certificate is verified as on the
 * IMAP side, with the same CA and server-name options.
 */
import { ConfigError, readCa } from './values.js';

export type RelayTlsMode = 'implicit' | 'starttls' | 'none';

/** Where SMTP submissions are relayed, and how its certificate is checked. */
export interface RelayEndpoint {
  readonly host: string;
  readonly port: number;
  readonly tls: RelayTlsMode;
  readonly verifyTls: boolean;
  readonly ca: Buffer | undefined;
  readonly servername: string | undefined;
}

export const RELAY_KEYS = [
  'smtp-relay-host',
  'smtp-relay-port',
  'smtp-relay-tls',
  'smtp-relay-tls-verify',
  'smtp-relay-ca',
  'smtp-relay-servername',
] as const;

const RELAY_TLS_MODES: readonly string[] = ['implicit', 'starttls', 'none'];

/** The relay named by these values, or undefined when they name none (no host). */
export function parseRelay(values: Record<string, unknown>, where: (key: string) => string): RelayEndpoint | undefined {
  const host = values['smtp-relay-host'];
  if (host === undefined) {
    const stray = RELAY_KEYS.find((key) => key !== 'smtp-relay-host' && values[key] !== undefined);
    if (stray !== undefined) throw new ConfigError(`${where(stray)} needs smtp-relay-host`);
    return undefined;
  }
  if (typeof host !== 'string' || host.trim() === '')
    throw new ConfigError(`${where('smtp-relay-host')} must be a host name`);
  const tls = values['smtp-relay-tls'] ?? 'starttls';
  if (typeof tls !== 'string' || !RELAY_TLS_MODES.includes(tls))
    throw new ConfigError(`${where('smtp-relay-tls')} must be implicit, starttls or none`);
  const port = values['smtp-relay-port'] ?? (tls === 'implicit' ? 465 : 587);
  if (!Number.isInteger(port) || (port as number) < 1 || (port as number) > 65535) {
    throw new ConfigError(`${where('smtp-relay-port')}: ${JSON.stringify(port)} is not a valid port`);
  }
  const verify = values['smtp-relay-tls-verify'] ?? true;
  if (typeof verify !== 'boolean') throw new ConfigError(`${where('smtp-relay-tls-verify')} must be true or false`);
  const ca = values['smtp-relay-ca'];
  if (ca !== undefined && typeof ca !== 'string')
    throw new ConfigError(`${where('smtp-relay-ca')} must be a file name`);
  const servername = values['smtp-relay-servername'];
  if (servername !== undefined && (typeof servername !== 'string' || servername === '')) {
    throw new ConfigError(`${where('smtp-relay-servername')} must be a host name`);
  }
  return {
    host,
    port: port as number,
    tls: tls as RelayTlsMode,
    verifyTls: verify,
    ca: ca === undefined ? undefined : readCa(where('smtp-relay-ca'), ca),
    servername: servername,
  };
}
