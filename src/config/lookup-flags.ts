/**
 * The flags of routing by lookup (an HTTP service in the shape of nginx mail's auth_http picks
 * each login's profile) and of the outbound HTTP proxy every request of the proxy's own goes
 * through. Merged into the command line's table by options.ts.
 */
import { proxyUrlProblem } from '../net/outbound-http.js';
import { ConfigError } from './values.js';

const GROUP = 'Routing and outbound HTTP:';

export const LOOKUP_OPTIONS = {
  'lookup-url': {
    type: 'string',
    describe: 'Ask this HTTP service (nginx auth_http style) which profile each login goes to, instead of the routes',
    group: GROUP,
  },
  'lookup-send-password': {
    type: 'boolean',
    default: false,
    describe: "Send the client's password to the lookup service (Auth-Pass); https:// unless on loopback",
    group: GROUP,
  },
  'lookup-timeout': { type: 'number', default: 3, describe: 'Seconds to wait for the lookup service', group: GROUP },
  'lookup-cache': {
    type: 'number',
    default: 30,
    describe: 'Seconds an OK answer of the lookup service is kept, per user and protocol; 0: never',
    group: GROUP,
  },
  'http-proxy': {
    type: 'string',
    describe:
      'HTTP proxy for token endpoints and the lookup (wins over HTTPS_PROXY and HTTP_PROXY; NO_PROXY still applies)',
    group: GROUP,
  },
} as const;

export interface LookupConfig {
  readonly url: string;
  /** Whether Auth-Pass carries the client's password. */
  readonly sendPassword: boolean;
  readonly timeoutMs: number;
  /** How long an OK answer is kept; 0: never. */
  readonly cacheMs: number;
}

type Raw = Record<string, unknown>;

/** The lookup's settings, or undefined when no --lookup-url is given (the static routes then). */
export function lookupConfig(raw: Raw, at: (key: string) => string): LookupConfig | undefined {
  const url = raw['lookup-url'];
  if (url === undefined) return undefined;
  if (typeof url !== 'string') throw new ConfigError(`${at('lookup-url')} must be a URL`);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ConfigError(`${at('lookup-url')}: ${url} is not a URL`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new ConfigError(`${at('lookup-url')} must be http:// or https://`);
  }
  const sendPassword = raw['lookup-send-password'] === true;
  // Passwords travel in clear only to this machine.
  if (sendPassword && parsed.protocol === 'http:' && !loopback(parsed.hostname)) {
    const why = `${at('lookup-url')} must be https:// (http:// only to loopback)`;
    throw new ConfigError(`${at('lookup-send-password')}: ${why}`);
  }
  return {
    url,
    sendPassword,
    timeoutMs: seconds(at('lookup-timeout'), raw['lookup-timeout'], 0.001, 60),
    cacheMs: seconds(at('lookup-cache'), raw['lookup-cache'], 0, 86400),
  };
}

/** --http-proxy, checked. */
export function httpProxyOf(raw: Raw, at: (key: string) => string): string | undefined {
  const value = raw['http-proxy'];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw new ConfigError(`${at('http-proxy')} must be a URL`);
  const problem = proxyUrlProblem(value);
  if (problem !== undefined) throw new ConfigError(`${at('http-proxy')}: ${value} ${problem}`);
  return value;
}

function loopback(host: string): boolean {
  return host === 'localhost' || host === '[::1]' || host.startsWith('127.');
}

function seconds(flag: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    throw new ConfigError(`${flag}: ${String(value)} is not a number of seconds between ${min} and ${max}`);
  }
  return Math.round(value * 1000);
}
