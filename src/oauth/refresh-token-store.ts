/**
 * Per-mailbox refresh tokens, encrypted at rest (AES-256-GCM, the mailbox as associated data
 * so that one mailbox's file cannot stand in for another's), one file per mailbox named by a
 * hash of the address, replaced atomically, readable by the proxy's user only.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const VERSION = 'v1';
const IV_BYTES = 12;

export class RefreshTokenStore {
  private readonly key: Buffer;

  /** `key`: 32 bytes, written as 64 hex digits or in base64. */
  constructor(
    private readonly dir: string,
    key: string,
  ) {
    this.key = parseKey(key);
  }

  async load(mailbox: string): Promise<string | undefined> {
    let text: string;
    try {
      text = await readFile(this.pathOf(mailbox), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    const [version, iv, tag, data] = text.trim().split('.');
    if (version !== VERSION || !iv || !tag || data === undefined)
      throw new Error(`refresh token file for ${mailbox} is not in a known format`);
    const decipher = createDecipheriv('aes-256-gcm', this.key, Buffer.from(iv, 'base64url'));
    decipher.setAAD(Buffer.from(normalized(mailbox)));
    decipher.setAuthTag(Buffer.from(tag, 'base64url'));
    try {
      return Buffer.concat([decipher.update(Buffer.from(data, 'base64url')), decipher.final()]).toString('utf8');
    } catch {
      throw new Error(`refresh token file for ${mailbox} does not decrypt with this key`);
    }
  }

  async save(mailbox: string, refreshToken: string): Promise<void> {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(Buffer.from(normalized(mailbox)));
    const data = Buffer.concat([cipher.update(refreshToken, 'utf8'), cipher.final()]);
    const text = [
      VERSION,
      iv.toString('base64url'),
      cipher.getAuthTag().toString('base64url'),
      data.toString('base64url'),
    ].join('.');
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const path = this.pathOf(mailbox);
    const partial = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    await writeFile(partial, `${text}\n`, { mode: 0o600 });
    await rename(partial, path);
  }

  private pathOf(mailbox: string): string {
    return join(this.dir, `${createHash('sha256').update(normalized(mailbox)).digest('hex')}.token`);
  }
}

function normalized(mailbox: string): string {
  return mailbox.trim().toLowerCase();
}

function parseKey(text: string): Buffer {
  const key = /^[0-9a-fA-F]{64}$/.test(text) ? Buffer.from(text, 'hex') : Buffer.from(text, 'base64');
  if (key.length !== 32)
    throw new Error('the token store key must be 32 bytes (64 hex digits or base64), e.g. from: openssl rand -hex 32');
  return key;
}
