/**
 * Password hashes for the proxy's own users: scrypt (memory-hard, in Node's crypto), in the
 * PHC string format `$scrypt$ln=15,r=8,p=1$<salt>$<hash>` (base64 without padding), so that
 * the cost travels with each hash and can be raised for new ones without breaking old ones.
 */
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

export interface ScryptCost {
  /** log2 of N, the CPU/memory cost. */
  readonly ln: number;
  readonly r: number;
  readonly p: number;
}

/** 32 MiB and about 0.1 s per check on a small server: costly to guess, cheap enough to log in. */
export const DEFAULT_COST: ScryptCost = { ln: 15, r: 8, p: 1 };

const SALT_BYTES = 16;
const HASH_BYTES = 32;
const FORMAT = /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]{16,})\$([A-Za-z0-9+/]{32,})$/;

export class PasswordHashError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PasswordHashError';
  }
}

interface ParsedHash {
  readonly cost: ScryptCost;
  readonly salt: Buffer;
  readonly hash: Buffer;
}

export async function hashPassword(password: string, cost: ScryptCost = DEFAULT_COST): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const hash = await derive(password, salt, cost, HASH_BYTES);
  return `$scrypt$ln=${cost.ln},r=${cost.r},p=${cost.p}$${unpadded(salt)}$${unpadded(hash)}`;
}

/** Throws PasswordHashError when `encoded` is not a hash this module can check. */
export function checkHashFormat(encoded: string): void {
  parse(encoded);
}

/** Whether `password` matches `encoded`, compared in constant time. */
export async function verifyPassword(password: string, encoded: string): Promise<boolean> {
  const { cost, salt, hash } = parse(encoded);
  const candidate = await derive(password, salt, cost, hash.length);
  return timingSafeEqual(candidate, hash);
}

function parse(encoded: string): ParsedHash {
  const match = FORMAT.exec(encoded);
  if (!match)
    throw new PasswordHashError(
      'not a $scrypt$ln=..,r=..,p=..$salt$hash string (make one with: pop3-imap-proxy hash-password)',
    );
  const cost = { ln: Number(match[1]), r: Number(match[2]), p: Number(match[3]) };
  if (cost.ln < 10 || cost.ln > 22 || cost.r < 1 || cost.p < 1)
    throw new PasswordHashError(`scrypt cost out of range: ln=${cost.ln}, r=${cost.r}, p=${cost.p}`);
  return { cost, salt: Buffer.from(match[4], 'base64'), hash: Buffer.from(match[5], 'base64') };
}

function derive(password: string, salt: Buffer, cost: ScryptCost, length: number): Promise<Buffer> {
  const N = 2 ** cost.ln;
  // Node refuses more than 32 MiB unless told: allow what these parameters need, with room.
  const options: ScryptOptions = { N, r: cost.r, p: cost.p, maxmem: 256 * N * cost.r + 1024 * 1024 };
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFC'), salt, length, options, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

function unpadded(bytes: Buffer): string {
  return bytes.toString('base64').replace(/=+$/, '');
}
