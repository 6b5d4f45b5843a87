import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { LocalUsers, UsersFileError } from '../../src/auth/local-users.js';
import { hashPassword, verifyPassword } from '../../src/auth/password-hash.js';

let dir: string;
/** A cheap cost for the tests; the default is for production. */
const FAST = { ln: 10, r: 8, p: 1 };

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'pop3-users-'));
}, { timeout: 30_000 });

after(async () => {
  await rm(dir, { recursive: true, force: true });
}, { timeout: 30_000 });

async function usersFile(text: string): Promise<string> {
  const file = path.join(dir, `users-${Math.random().toString(36).slice(2)}.yaml`);
  await writeFile(file, text);
  return file;
}

test('hashes are salted scrypt in PHC form, and verify only the right password', { timeout: 30_000 }, async () => {
  const a = await hashPassword('s3cret pass', FAST);
  const b = await hashPassword('s3cret pass', FAST);
  assert.match(a, /^\$scrypt\$ln=10,r=8,p=1\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$/);
  assert.notEqual(a, b, 'a fresh salt each time');
  assert.equal(await verifyPassword('s3cret pass', a), true);
  assert.equal(await verifyPassword('s3cret pasS', a), false);
  assert.equal(await verifyPassword('', a), false);
});

test('the default cost is memory-hard: 2^15 with r=8 (32 MiB)', { timeout: 30_000 }, async () => {
  assert.match(await hashPassword('x'), /^\$scrypt\$ln=15,r=8,p=1\$/);
});

test('a user with several passwords (one per application) logs in with each; names are case-insensitive', { timeout: 30_000 }, async () => {
  const file = await usersFile(
    [
      'erp-importer:',
      '  account: invoices@example.com',
      '  passwords:',
      `    - "${await hashPassword('erp-pw', FAST)}"`,
      `    - "${await hashPassword('scanner-pw', FAST)}"`,
      'Ticketing:',
      '  mailbox: support@example.com',
      `  passwords: "${await hashPassword('tix', FAST)}"`,
    ].join('\n'),
  );
  const users = new LocalUsers(file);
  // Ticketing still says mailbox: the old name is read, with a warning saying the new one.
  assert.deepEqual(users.warnings, [`users file ${file}, user Ticketing: "mailbox" is now "account" (the address logged in to); the old name is still read`]);
  assert.equal((await users.verify('erp-importer', 'erp-pw'))?.account, 'invoices@example.com');
  assert.equal((await users.verify('ERP-Importer', 'scanner-pw'))?.account, 'invoices@example.com');
  assert.equal(await users.verify('erp-importer', 'tix'), undefined);
  assert.equal((await users.verify('ticketing', 'tix'))?.account, 'support@example.com');
  assert.equal(await users.verify('nobody', 'erp-pw'), undefined);
});

test('a bad users file is refused with the reason; reload keeps the users in force', { timeout: 30_000 }, async () => {
  const h = await hashPassword('x', FAST);
  const cases: Array<[string, RegExp]> = [
    ['alice: [1, 2]', /expected account and passwords/],
    ['alice:\n  account: not-an-address\n  passwords: x', /account must be an address/],
    ['alice:\n  mailbox: not-an-address\n  passwords: x', /account must be an address/],
    ['alice:\n  account: a@example.com\n  mailbox: a@example.com\n  passwords: x', /give account \(the new name of mailbox\), not both/],
    [`alice:\n  account: a@example.com\n  send-as: nope\n  passwords: "${h}"`, /send-as must be one or more addresses/],
    ['alice:\n  mailbox: a@example.com\n  passwords: plaintext', /not a \$scrypt/],
    ['alice:\n  mailbox: a@example.com\n  passwords: []', /one or more hashes/],
    ['alice:\n  mailbox: a@example.com\n  password: x', /unknown setting "password"/],
    [`alice: {mailbox: a@example.com, passwords: "${h}"}\nALICE: {mailbox: a@example.com, passwords: "${h}"}`, /appears twice/],
    ['[not, a, mapping]', /must map login names/],
    ['alice: {', /users file/],
  ];
  for (const [text, reason] of cases) {
    const file = await usersFile(text);
    assert.throws(() => new LocalUsers(file), (err: Error) => err instanceof UsersFileError && reason.test(err.message), text);
  }
  assert.throws(() => new LocalUsers(path.join(dir, 'missing.yaml')), /users file .*missing\.yaml/);

  const file = await usersFile(`bob:\n  mailbox: bob@example.com\n  passwords: "${await hashPassword('pw', FAST)}"\n`);
  const users = new LocalUsers(file);
  await writeFile(file, 'bob: {');
  assert.throws(() => users.reload(), UsersFileError);
  assert.equal((await users.verify('bob', 'pw'))?.account, 'bob@example.com', 'the old users stay');
  await writeFile(file, `carol:\n  mailbox: carol@example.com\n  passwords: "${await hashPassword('pw2', FAST)}"\n`);
  users.reload();
  assert.equal(await users.verify('bob', 'pw'), undefined);
  assert.equal((await users.verify('carol', 'pw2'))?.account, 'carol@example.com');
});
