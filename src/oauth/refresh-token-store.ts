/**
 * Per-mailbox refresh tokens, encrypted at rest (AES-256-GCM, the mailbox as associated data
 * so that one mailbox's file cannot stand in for another's), one file per mailbox named by a
 * hash of the address, replaced atomically, readable by the proxy's user only.
 *
 * Since format v2 the encrypted part also holds the account's address, when the token was last
 * rotated (saved) and when it last worked, for `pop3-imap-proxy oauth-status`: the file names
 * are hashes, so without the address inside nobody could tell whose token a file holds. The
 * last use is written at most once an hour per account, so that a busy mailbox does not
 * rewrite its file at every refresh. v1 files (the token alone) are still read.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const VERSION = 'v2';
const IV_BYTES = 12;
/** The last use is recorded at most this often per account. */
const USE_RECORD_MS = 3600 * 1000;

/** What is known of a stored refresh token, never the token itself. */
export interface StoredTokenInfo {
  /** The account's address; undefined for a v1 file whose account is not among `known`. */
  readonly account: string | undefined;
  /** The file's name (a hash of the address). */
  readonly file: string;
  /** When the token was last saved (signed in, or rotated by the server), in ms since the epoch. */
  readonly rotatedAt: number;
  /** When a refresh with it last worked, if recorded. */
  readonly usedAt: number | undefined;
  /** Why the file could not be read (another key, a damaged file); undefined when it could. */
  readonly problem: string | undefined;
}

interface Sealed {
  readonly token: string;
  readonly account: string;
  readonly rotatedAt: number;
  readonly usedAt: number | undefined;
}

export class RefreshTokenStore {
  private readonly key: Buffer;
  /** When the last use of each account was written by this process. */
  private readonly useWritten = new Map<string, number>();

  /** `key`: 32 bytes, written as 64 hex digits or in base64. */
  constructor(
    private readonly dir: string,
    key: string,
    private readonly now: () => number = Date.now,
  ) {
    this.key = parseKey(key);
  }

  async load(mailbox: string): Promise<string | undefined> {
    return (await this.read(mailbox))?.token;
  }

  async save(mailbox: string, refreshToken: string): Promise<void> {
    const now = this.now();
    await this.write({ token: refreshToken, account: normalized(mailbox), rotatedAt: now, usedAt: now });
    this.useWritten.set(normalized(mailbox), now);
  }

  /** A refresh with the stored token worked: recorded when the last record is an hour old. */
  async used(mailbox: string): Promise<void> {
    const account = normalized(mailbox);
    const now = this.now();
    const written = this.useWritten.get(account);
    if (written !== undefined && now - written < USE_RECORD_MS) return;
    const record = await this.read(mailbox);
    if (record === undefined) return;
    this.useWritten.set(account, now);
    if (record.usedAt !== undefined && now - record.usedAt < USE_RECORD_MS) return;
    await this.write({ ...record, usedAt: now });
  }

  /** Every stored token's facts; `known` addresses name the accounts of v1 files. */
  async list(known: readonly string[] = []): Promise<StoredTokenInfo[]> {
    let names: string[];
    try {
      names = (await readdir(this.dir)).filter((n) => n.endsWith('.token')).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const byFile = new Map(known.map((a) => [fileName(a), normalized(a)]));
    const infos: StoredTokenInfo[] = [];
    for (const file of names) {
      const path = join(this.dir, file);
      const text = (await readFile(path, 'utf8')).trim();
      const mtime = (await stat(path)).mtimeMs;
      const guess = byFile.get(file);
      try {
        const record = this.decrypt(text, guess);
        const account = record?.account ?? guess;
        const rotatedAt = record?.rotatedAt ?? mtime;
        infos.push({ account, file, rotatedAt, usedAt: record?.usedAt, problem: undefined });
      } catch (err) {
        infos.push({ account: guess, file, rotatedAt: mtime, usedAt: undefined, problem: (err as Error).message });
      }
    }
    return infos;
  }

  private async read(mailbox: string): Promise<Sealed | undefined> {
    let text: string;
    try {
      text = await readFile(this.pathOf(mailbox), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    let record: Sealed | undefined;
    try {
      record = this.decrypt(text.trim(), normalized(mailbox));
    } catch (err) {
      throw new Error(`refresh token file for ${mailbox} ${(err as Error).message}`, { cause: err });
    }
    if (record === undefined) throw new Error(`refresh token file for ${mailbox} is not in a known format`);
    return record;
  }

  /**
   * A file's record. v2's associated data is the address inside the sealed part, so that a
   * file can be listed without knowing whose it is; v1's is the address given (`account`).
   */
  private decrypt(text: string, account: string | undefined): Sealed | undefined {
    const [version, iv, tag, data] = text.split('.');
    if (!iv || !tag || data === undefined) throw new Error('is not in a known format');
    if (version === 'v1') {
      if (account === undefined) return undefined;
      const token = this.open(iv, tag, data, account).toString('utf8');
      return { token, account, rotatedAt: 0, usedAt: undefined };
    }
    if (version !== VERSION) throw new Error('is not in a known format');
    const sealed = JSON.parse(this.open(iv, tag, data, 'v2').toString('utf8')) as Partial<Sealed>;
    if (typeof sealed.token !== 'string' || typeof sealed.account !== 'string') {
      throw new Error('is not in a known format');
    }
    if (account !== undefined && sealed.account !== account) {
      throw new Error("does not decrypt as this account's: it holds another account's token");
    }
    return { token: sealed.token, account: sealed.account, rotatedAt: Number(sealed.rotatedAt), usedAt: sealed.usedAt };
  }

  private open(iv: string, tag: string, data: string, aad: string): Buffer {
    const decipher = createDecipheriv('aes-256-gcm', this.key, Buffer.from(iv, 'base64url'));
    decipher.setAAD(Buffer.from(aad));
    decipher.setAuthTag(Buffer.from(tag, 'base64url'));
    try {
      return Buffer.concat([decipher.update(Buffer.from(data, 'base64url')), decipher.final()]);
    } catch {
      throw new Error('does not decrypt with this key');
    }
  }

  private async write(record: Sealed): Promise<void> {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(Buffer.from(VERSION));
    const data = Buffer.concat([cipher.update(JSON.stringify(record), 'utf8'), cipher.final()]);
    const text = [
      VERSION,
      iv.toString('base64url'),
      cipher.getAuthTag().toString('base64url'),
      data.toString('base64url'),
    ].join('.');
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const path = this.pathOf(record.account);
    const partial = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    await writeFile(partial, `${text}\n`, { mode: 0o600 });
    await rename(partial, path);
  }

  private pathOf(mailbox: string): string {
    return join(this.dir, fileName(mailbox));
  }
}

function fileName(mailbox: string): string {
  return `${createHash('sha256').update(normalized(mailbox)).digest('hex')}.token`;
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
