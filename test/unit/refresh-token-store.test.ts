import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { RefreshTokenStore } from '../../src/oauth/refresh-token-store.js';

let dir: string;
const key = randomBytes(32).toString('hex');

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'pop3-tokens-'));
}, { timeout: 30_000 });

after(async () => {
  await rm(dir, { recursive: true, force: true });
}, { timeout: 30_000 });

test('tokens are saved encrypted, per mailbox, readable by the owner only, and replaced whole', { timeout: 30_000 }, async () => {
  const store = new RefreshTokenStore(path.join(dir, 'a'), key);
  assert.equal(await store.load('alice@example.com'), undefined);
  await store.save('alice@example.com', 'refresh-one');
  await store.save('bob@example.com', 'refresh-bob');
  await store.save('Alice@Example.com', 'refresh-two');
  assert.equal(await store.load('alice@example.com'), 'refresh-two');
  assert.equal(await store.load('bob@example.com'), 'refresh-bob');
  const files = await readdir(path.join(dir, 'a'));
  assert.equal(files.length, 2, `no partial files left: ${files.join(', ')}`);
  for (const f of files) {
    const text = await readFile(path.join(dir, 'a', f), 'utf8');
    // Long enough not to turn up in random base64url by chance ("bob" does, once in ~700 runs).
    assert.doesNotMatch(text, /refresh-|alice@|bob@/);
    assert.equal((await stat(path.join(dir, 'a', f))).mode & 0o777, 0o600);
  }
});

test('another key, or one mailbox\'s file put in another\'s place, does not decrypt', { timeout: 30_000 }, async () => {
  const store = new RefreshTokenStore(path.join(dir, 'b'), key);
  await store.save('alice@example.com', 'secret-a');
  await store.save('mallory@example.com', 'secret-m');
  const other = new RefreshTokenStore(path.join(dir, 'b'), randomBytes(32).toString('base64'));
  await assert.rejects(other.load('alice@example.com'), /does not decrypt with this key/);
  const files = await readdir(path.join(dir, 'b'));
  const contents = await Promise.all(files.map((f) => readFile(path.join(dir, 'b', f), 'utf8')));
  // Swap the two files' contents: each mailbox's token is bound to its address.
  await writeFile(path.join(dir, 'b', files[0]!), contents[1]!);
  await writeFile(path.join(dir, 'b', files[1]!), contents[0]!);
  await assert.rejects(store.load('alice@example.com'), /does not decrypt/);
});

test('a key that is not 32 bytes is refused with a hint', { timeout: 30_000 }, () => {
  assert.throws(() => new RefreshTokenStore(dir, 'short'), /32 bytes .* openssl rand -hex 32/);
});

test('a file of the first format (v1: the token alone) is still read, and listed by a known address', { timeout: 30_000 }, async () => {
  const { createCipheriv, createHash } = await import('node:crypto');
  const folder = path.join(dir, 'v1');
  const store = new RefreshTokenStore(folder, key);
  await store.save('new@example.com', 'refresh-new');
  // What the first format wrote: AES-256-GCM of the token, the address as associated data.
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', Buffer.from(key, 'hex'), iv);
  cipher.setAAD(Buffer.from('old@example.com'));
  const data = Buffer.concat([cipher.update('refresh-old', 'utf8'), cipher.final()]);
  const name = `${createHash('sha256').update('old@example.com').digest('hex')}.token`;
  const text = ['v1', iv.toString('base64url'), cipher.getAuthTag().toString('base64url'), data.toString('base64url')].join('.');
  await writeFile(path.join(folder, name), `${text}\n`, { mode: 0o600 });
  assert.equal(await store.load('old@example.com'), 'refresh-old');
  const listed = await store.list(['old@example.com']);
  assert.deepEqual(listed.map((i) => i.account).sort(), ['new@example.com', 'old@example.com']);
  assert.equal((await store.list()).find((i) => i.file === name)?.account, undefined, 'a v1 file names no address by itself');
  assert.equal(listed.some((i) => i.problem !== undefined), false);
});
