/**
 * SASL mechanisms for POP3 AUTH (RFC 5034): PLAIN (RFC 4616), LOGIN, XOAUTH2 and OAUTHBEARER
 * (RFC 7628). Each turns the client's decoded responses into the credentials the backend needs;
 * nothing here checks them. Challenges and responses travel base64-encoded.
 */
import type { Credentials } from '../maildrop/maildrop.js';

export const SASL_MECHANISMS = ['PLAIN', 'LOGIN', 'XOAUTH2', 'OAUTHBEARER'] as const;

export type SaslStep =
  | { readonly kind: 'challenge'; readonly challenge: Buffer }
  | { readonly kind: 'done'; readonly credentials: Credentials }
  | { readonly kind: 'fail'; readonly reason: string };

/** One exchange: fed the client's responses in turn (undefined: no initial response). */
export type SaslMechanism = (response: Buffer | undefined) => SaslStep;

const fail = (reason: string): SaslStep => ({ kind: 'fail', reason });
const challenge = (text: string): SaslStep => ({ kind: 'challenge', challenge: Buffer.from(text) });

export function startMechanism(name: string): SaslMechanism | undefined {
  switch (name.toUpperCase()) {
    case 'PLAIN':
      return plain();
    case 'LOGIN':
      return login();
    case 'XOAUTH2':
      return oneShot(parseXoauth2);
    case 'OAUTHBEARER':
      return oneShot(parseOauthBearer);
    default:
      return undefined;
  }
}

/**
 * Strict base64 (RFC 4648 alphabet, padded). "=" alone is an empty response (RFC 5034
 * section 4). Returns undefined for anything else.
 */
export function decodeBase64(text: string): Buffer | undefined {
  if (text === '=') return Buffer.alloc(0);
  if (text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return undefined;
  return Buffer.from(text, 'base64');
}

/**
 * Mechanisms whose whole message is the client's first response: without one (or with an
 * empty one, "="), an empty challenge asks for it.
 */
function oneShot(parse: (response: Buffer) => SaslStep): SaslMechanism {
  let asked = false;
  return (response) => {
    if (response !== undefined && (response.length > 0 || asked)) return parse(response);
    asked = true;
    return challenge('');
  };
}

function plain(): SaslMechanism {
  return oneShot((response) => {
    const parts = response.toString('utf8').split('\0');
    if (parts.length !== 3) return fail('Malformed PLAIN response.');
    const [authzid, user, password] = parts as [string, string, string];
    if (authzid !== '' && authzid !== user) return fail('Logging in as another user is not supported.');
    if (user === '' || password === '') return fail('Malformed PLAIN response.');
    return { kind: 'done', credentials: { user, password } };
  });
}

function login(): SaslMechanism {
  let user: string | undefined;
  return (response) => {
    if (user === undefined) {
      if (response === undefined) return challenge('Username:');
      user = response.toString('utf8');
      if (user === '') return fail('Empty user name.');
      return challenge('Password:');
    }
    const password = (response ?? Buffer.alloc(0)).toString('utf8');
    if (password === '') return fail('Empty password.');
    return { kind: 'done', credentials: { user, password } };
  };
}

/** "user=" user ^A "auth=Bearer " token ^A ^A */
function parseXoauth2(response: Buffer): SaslStep {
  const fields = keyValues(response.toString('utf8').split('\x01'));
  const user = fields.get('user');
  const token = bearer(fields.get('auth'));
  if (!user || !token) return fail('Malformed XOAUTH2 response.');
  return { kind: 'done', credentials: { user, accessToken: token } };
}

/** GS2 header "n,a=" user "," then ^A-separated key=value pairs with "auth=Bearer " token (RFC 7628). */
function parseOauthBearer(response: Buffer): SaslStep {
  const [gs2, ...rest] = response.toString('utf8').split('\x01');
  const header = /^[ny],(?:a=([^,]*))?,$/.exec(gs2 ?? '');
  const user = header?.[1]?.replace(/=2C/g, ',').replace(/=3D/g, '=');
  const token = bearer(keyValues(rest).get('auth'));
  if (!user || !token) return fail('Malformed OAUTHBEARER response (it must name the user).');
  return { kind: 'done', credentials: { user, accessToken: token } };
}

function keyValues(pairs: string[]): Map<string, string> {
  const map = new Map<string, string>();
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq > 0) map.set(pair.slice(0, eq), pair.slice(eq + 1));
  }
  return map;
}

function bearer(auth: string | undefined): string | undefined {
  const match = /^Bearer ([\x21-\x7e]+)$/i.exec(auth ?? '');
  return match?.[1];
}
