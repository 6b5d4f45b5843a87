/**
 * A shared mailbox read with a delegate's token: the users-file entry names the shared mailbox
 * as its account (XOAUTH2's user=) and the delegate as its token-account (whose refresh token
 * opens it); its folder goes with the login. Real users file, real token cache; the store is the
 * in-memory one, recording what it was asked to log in with.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import winston from 'winston';
import { LocalUsers } from '../../src/auth/local-users.js';
import { hashPassword } from '../../src/auth/password-hash.js';
import type { ClientInfo, Credentials, Maildrop, MaildropProvider } from '../../src/maildrop/maildrop.js';
import { TokenCache } from '../../src/oauth/token-cache.js';
import { TokenLogin } from '../../src/routing/token-login.js';

const T = { timeout: 30_000 };
const dirs: string[] = [];

after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
}, T);

/** A store that records the credentials it is given and opens nothing. */
class RecordingStore implements MaildropProvider {
  readonly logins: Credentials[] = [];
  authenticate(credentials: Credentials, _client: ClientInfo): Promise<Maildrop> {
    this.logins.push(credentials);
    return Promise.resolve({ mailboxKey: 'k' } as Maildrop);
  }
}

test('the delegate\'s token opens the shared mailbox: user= is the mailbox, the token the delegate\'s, the folder the entry\'s', T, async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'shared-mailbox-'));
  dirs.push(dir);
  const file = path.join(dir, 'users.yaml');
  const hash = await hashPassword('desk-pw', { ln: 10, r: 8, p: 1 });
  await writeFile(
    file,
    ['helpdesk:', '  account: support@contoso.test', '  token-account: agent@contoso.test', '  folder: Tickets', `  passwords: "${hash}"`].join('\n'),
  );
  const asked: string[] = [];
  const tokens = new TokenCache((key) => {
    asked.push(key);
    return Promise.resolve({ value: `token-of-${key}`, expiresAt: Date.now() + 3_600_000 });
  });
  const store = new RecordingStore();
  const login = new TokenLogin(store, new LocalUsers(file), tokens, (mailbox) => mailbox.toLowerCase(), winston.createLogger({ silent: true }));
  await login.authenticate({ user: 'helpdesk', password: 'desk-pw' }, { address: '127.0.0.1', port: 1 });
  assert.deepEqual(asked, ['agent@contoso.test'], 'the delegate\'s token is fetched');
  assert.deepEqual(store.logins, [{ user: 'support@contoso.test', accessToken: 'token-of-agent@contoso.test', folder: 'Tickets' }]);
  // A folder the login names wins over the entry's.
  await login.authenticate({ user: 'helpdesk', password: 'desk-pw', folder: 'Escalations' }, { address: '127.0.0.1', port: 1 });
  assert.equal(store.logins[1]!.folder, 'Escalations');
  await assert.rejects(login.authenticate({ user: 'helpdesk', password: 'wrong' }, { address: '127.0.0.1', port: 1 }), /wrong password/);
  assert.equal(asked.length, 1, 'a wrong password touches no token');
});
