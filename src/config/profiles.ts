/**
 * Backend profiles and the routes to them, from the --config file: each profile names an IMAP
 * server and how the proxy logs in to it (with the client's own password, or with a token it
 * fetches itself), and the routes map login domains and exact login names to profiles. The
 * command-line flags make the profile named "default", which takes every login no route names.
 *
 * Secrets are never values here: only the files or environment variables that hold them, so
 * that --print-config and the config file itself never carry one.
 */
import type { ImapSettings, ImapTlsMode } from '../imap/imap-client.js';
import type { DeleteMode } from '../imap/imap-maildrop.js';
import { DEFAULT_UIDL_FORMAT } from '../imap/uidl-format.js';
import type { RelayEndpoint } from './relay-settings.js';
import { parseRelay, RELAY_KEYS } from './relay-settings.js';
import { checkUidlFormat, ConfigError, parseDeleteMode, readCa } from './values.js';

/** An IMAP server and the mailbox served from it: the backend settings less the timeouts. */
export type BackendEndpoint = Omit<ImapSettings, 'timeoutMs' | 'connectTimeoutMs'>;

/** A secret read at start: a file's contents (trimmed), or an environment variable's value. */
export type SecretRef = { readonly file: string } | { readonly env: string };

/** How the proxy authenticates to a profile's backend. */
export type BackendAuth =
  | { readonly grant: 'password' }
  | {
      readonly grant: 'client-credentials';
      readonly tokenUrl: string;
      readonly clientId: string;
      readonly scope: string;
      /** A client secret, or a private key (with its certificate) for a signed assertion. */
      readonly credential:
        | { readonly kind: 'secret'; readonly secret: SecretRef }
        | { readonly kind: 'certificate'; readonly privateKey: SecretRef; readonly certificate: SecretRef };
    }
  | {
      readonly grant: 'jwt-bearer';
      /** A Google service account key (JSON), with domain-wide delegation. */
      readonly serviceAccount: SecretRef;
      readonly scope: string;
      /** The token endpoint, when it is not the key's token_uri. */
      readonly tokenUrl: string | undefined;
    }
  | {
      readonly grant: 'refresh-token';
      readonly tokenUrl: string;
      /** The device authorization endpoint, for `pop3-imap-proxy oauth-login`. */
      readonly deviceUrl: string | undefined;
      readonly clientId: string;
      readonly clientSecret: SecretRef | undefined;
      readonly scope: string;
      /** Folder of the encrypted per-mailbox refresh tokens. */
      readonly tokenStore: string;
      /** The 32-byte key (hex or base64) that encrypts them. */
      readonly tokenStoreKey: SecretRef;
    };

export type TokenAuth = Exclude<BackendAuth, { grant: 'password' }>;

export interface ProfileSettings {
  readonly imap: BackendEndpoint;
  readonly deleteMode: DeleteMode;
  readonly flagOnDele: boolean;
  readonly uidlFormat: string;
  readonly auth: BackendAuth;
  /** Where this profile's users' SMTP submissions go; undefined: nowhere (sending is refused). */
  readonly smtpRelay: RelayEndpoint | undefined;
  /** The token scope for the relay where it differs from the IMAP one (a token grant only). */
  readonly smtpScope: string | undefined;
}

export interface Routing {
  /** By name; "default" is the one the flags describe. */
  readonly profiles: ReadonlyMap<string, ProfileSettings>;
  /** Lower-case login domain or exact login name to profile name. */
  readonly routes: ReadonlyMap<string, string>;
}

export const DEFAULT_PROFILE = 'default';

const GRANTS = ['password', 'client-credentials', 'jwt-bearer', 'refresh-token'] as const;
const TLS_MODES: readonly string[] = ['implicit', 'starttls', 'none'];
const DEFAULT_SCOPES: Record<string, string> = {
  'client-credentials': 'https://outlook.office365.com/.default',
  'jwt-bearer': 'https://mail.google.com/',
};

const PROFILE_KEYS: readonly string[] = [
  'imap-host',
  'imap-port',
  'imap-tls',
  'imap-tls-verify',
  'imap-ca',
  'imap-servername',
  'mailbox',
  'delete-mode',
  'flag-on-dele',
  'uidl-format',
  'auth',
  ...RELAY_KEYS,
  'smtp-scope',
];

/** Reads `profiles` and `routes` from the config file's values; `defaults` is the flags' profile. */
export function parseRouting(profiles: unknown, routes: unknown, defaults: ProfileSettings, where: string): Routing {
  const byName = new Map<string, ProfileSettings>([[DEFAULT_PROFILE, defaults]]);
  for (const [name, value] of Object.entries(mapping(profiles, `profiles in ${where}`))) {
    if (name === DEFAULT_PROFILE)
      throw new ConfigError(
        `profiles in ${where}: "${DEFAULT_PROFILE}" is the profile the flags describe; name yours otherwise`,
      );
    byName.set(name, parseProfile(value, `profile ${name} in ${where}`, defaults.smtpRelay));
  }
  const table = new Map<string, string>();
  for (const [login, name] of Object.entries(mapping(routes, `routes in ${where}`))) {
    if (typeof name !== 'string' || !byName.has(name))
      throw new ConfigError(`routes in ${where}: ${login} names no known profile (${String(name)})`);
    table.set(login.toLowerCase(), name);
  }
  return { profiles: byName, routes: table };
}

/** The profile for a login: its exact name, else its domain, else the default. */
export function routeOf(routing: Routing, login: string): string {
  const name = login.toLowerCase();
  const at = name.lastIndexOf('@');
  return routing.routes.get(name) ?? (at >= 0 ? routing.routes.get(name.slice(at + 1)) : undefined) ?? DEFAULT_PROFILE;
}

/** Whether any profile logs in with tokens of the proxy's own (so local users are needed). */
export function needsLocalUsers(routing: Routing): boolean {
  return [...routing.profiles.values()].some((p) => p.auth.grant !== 'password');
}

/** A profile; one that names no relay of its own uses the flags' (`defaultRelay`). */
function parseProfile(value: unknown, where: string, defaultRelay: RelayEndpoint | undefined): ProfileSettings {
  const v = mapping(value, where);
  const unknown = Object.keys(v).find((k) => !PROFILE_KEYS.includes(k));
  if (unknown !== undefined) throw new ConfigError(`${where}: unknown setting "${unknown}"`);
  const tls = optionalString(v, 'imap-tls', where) ?? 'implicit';
  if (!TLS_MODES.includes(tls)) throw new ConfigError(`${where}: imap-tls must be implicit, starttls or none`);
  const port = v['imap-port'] ?? (tls === 'implicit' ? 993 : 143);
  if (!Number.isInteger(port) || (port as number) < 1 || (port as number) > 65535)
    throw new ConfigError(`${where}: imap-port ${JSON.stringify(port)} is not a valid port`);
  return {
    imap: {
      host: requiredString(v, 'imap-host', where),
      port: port as number,
      tls: tls as ImapTlsMode,
      verifyTls: optionalBoolean(v, 'imap-tls-verify', where) ?? true,
      ca: v['imap-ca'] === undefined ? undefined : readCa(`${where}: imap-ca`, requiredString(v, 'imap-ca', where)),
      mailbox: optionalString(v, 'mailbox', where) ?? 'INBOX',
      servername: optionalString(v, 'imap-servername', where),
    },
    deleteMode: parseDeleteMode(`${where}: delete-mode`, optionalString(v, 'delete-mode', where) ?? 'expunge'),
    flagOnDele: optionalBoolean(v, 'flag-on-dele', where) ?? false,
    uidlFormat: checkUidlFormat(
      `${where}: uidl-format`,
      optionalString(v, 'uidl-format', where) ?? DEFAULT_UIDL_FORMAT,
    ),
    auth: v.auth === undefined ? { grant: 'password' } : parseAuth(v.auth, `${where}, auth`),
    smtpRelay: parseRelay(v, (key) => `${where}: ${key}`) ?? defaultRelay,
    smtpScope: optionalString(v, 'smtp-scope', where),
  };
}

function parseAuth(value: unknown, where: string): BackendAuth {
  const v = mapping(value, where);
  const grant = requiredString(v, 'grant', where);
  const allowed: Record<string, readonly string[]> = {
    password: ['grant'],
    'client-credentials': [
      'grant',
      'token-url',
      'client-id',
      'scope',
      'client-secret-file',
      'client-secret-env',
      'private-key-file',
      'private-key-env',
      'certificate-file',
    ],
    'jwt-bearer': ['grant', 'service-account-file', 'service-account-env', 'scope', 'token-url'],
    'refresh-token': [
      'grant',
      'token-url',
      'device-url',
      'client-id',
      'client-secret-file',
      'client-secret-env',
      'scope',
      'token-store',
      'token-store-key-file',
      'token-store-key-env',
    ],
  };
  const keys = allowed[grant];
  if (!keys) throw new ConfigError(`${where}: grant must be one of ${GRANTS.join(', ')}`);
  const unknown = Object.keys(v).find((k) => !keys.includes(k));
  if (unknown !== undefined) {
    const hint =
      /secret|key|token$/.test(unknown) && !/-(file|env)$/.test(unknown)
        ? ' (secrets are named by -file or -env, never written here)'
        : '';
    throw new ConfigError(`${where}: unknown setting "${unknown}" for grant ${grant}${hint}`);
  }
  const scope = optionalString(v, 'scope', where) ?? DEFAULT_SCOPES[grant];
  switch (grant) {
    case 'password':
      return { grant };
    case 'client-credentials': {
      const secret = secretRef(v, 'client-secret', where);
      const privateKey = secretRef(v, 'private-key', where);
      if ((secret === undefined) === (privateKey === undefined))
        throw new ConfigError(
          `${where}: give either client-secret-file/-env or private-key-file/-env with certificate-file`,
        );
      const certificate = optionalString(v, 'certificate-file', where);
      if (privateKey !== undefined && certificate === undefined)
        throw new ConfigError(`${where}: private-key needs certificate-file (its thumbprint goes in the assertion)`);
      return {
        grant,
        tokenUrl: url(v, 'token-url', where),
        clientId: requiredString(v, 'client-id', where),
        scope: scope,
        credential:
          secret !== undefined
            ? { kind: 'secret', secret }
            : { kind: 'certificate', privateKey: privateKey!, certificate: { file: certificate! } },
      };
    }
    case 'jwt-bearer': {
      const serviceAccount = secretRef(v, 'service-account', where);
      if (serviceAccount === undefined)
        throw new ConfigError(`${where}: service-account-file or service-account-env is required`);
      return {
        grant,
        serviceAccount,
        scope: scope,
        tokenUrl: v['token-url'] === undefined ? undefined : url(v, 'token-url', where),
      };
    }
    default: {
      const tokenStoreKey = secretRef(v, 'token-store-key', where);
      if (tokenStoreKey === undefined)
        throw new ConfigError(`${where}: token-store-key-file or token-store-key-env is required`);
      if (scope === undefined) throw new ConfigError(`${where}: scope is required for grant refresh-token`);
      return {
        grant: 'refresh-token',
        tokenUrl: url(v, 'token-url', where),
        deviceUrl: v['device-url'] === undefined ? undefined : url(v, 'device-url', where),
        clientId: requiredString(v, 'client-id', where),
        clientSecret: secretRef(v, 'client-secret', where),
        scope,
        tokenStore: requiredString(v, 'token-store', where),
        tokenStoreKey,
      };
    }
  }
}

function secretRef(v: Record<string, unknown>, name: string, where: string): SecretRef | undefined {
  const file = optionalString(v, `${name}-file`, where);
  const env = optionalString(v, `${name}-env`, where);
  if (file !== undefined && env !== undefined)
    throw new ConfigError(`${where}: give ${name}-file or ${name}-env, not both`);
  if (file !== undefined) return { file };
  if (env !== undefined) return { env };
  return undefined;
}

function url(v: Record<string, unknown>, key: string, where: string): string {
  const value = requiredString(v, key, where);
  let parsed: URL;
  try {
    parsed = new URL(value);
  } catch {
    throw new ConfigError(`${where}: ${key} ${value} is not a URL`);
  }
  // Tokens travel in clear only to this machine (a local token service, a test).
  const loopback = parsed.hostname === 'localhost' || parsed.hostname === '[::1]' || parsed.hostname.startsWith('127.');
  if (parsed.protocol !== 'https:' && !(parsed.protocol === 'http:' && loopback))
    throw new ConfigError(`${where}: ${key} must be https:// (http:// only to loopback)`);
  return value;
}

function mapping(value: unknown, where: string): Record<string, unknown> {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw new ConfigError(`${where} must be a mapping`);
  return value as Record<string, unknown>;
}

function requiredString(v: Record<string, unknown>, key: string, where: string): string {
  const value = optionalString(v, key, where);
  if (value === undefined) throw new ConfigError(`${where}: ${key} is required`);
  return value;
}

function optionalString(v: Record<string, unknown>, key: string, where: string): string | undefined {
  const value = v[key];
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value.trim() === '')
    throw new ConfigError(`${where}: ${key} must be a non-empty string`);
  return value;
}

function optionalBoolean(v: Record<string, unknown>, key: string, where: string): boolean | undefined {
  const value = v[key];
  if (value === undefined) return undefined;
  if (typeof value !== 'boolean') throw new ConfigError(`${where}: ${key} must be true or false`);
  return value;
}
