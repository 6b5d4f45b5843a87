import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseRouting, routeOf, type ProfileSettings } from '../../src/config/profiles.js';

const defaults: ProfileSettings = {
  imap: { host: 'mail.example.net', port: 993, tls: 'implicit', verifyTls: true, ca: undefined, mailbox: 'INBOX', servername: undefined },
  deleteMode: { kind: 'expunge' },
  flagOnDele: false,
  uidlFormat: '%08Xu%08Xv',
  auth: { grant: 'password' },
  smtpRelay: undefined,
  smtpScope: undefined,
};

const m365 = {
  'imap-host': 'outlook.office365.com',
  auth: { grant: 'client-credentials', 'token-url': 'https://login.microsoftonline.com/contoso/oauth2/v2.0/token', 'client-id': 'app', 'client-secret-file': '/run/secrets/m365' },
};
const google = { 'imap-host': 'imap.gmail.com', 'delete-mode': 'move:\\Trash', auth: { grant: 'jwt-bearer', 'service-account-env': 'GOOGLE_SA' } };

test('logins go to the profile of their exact name, else of their domain, else to the default', { timeout: 30_000 }, () => {
  const routing = parseRouting({ m365, google }, { 'contoso.com': 'm365', 'Fabrikam.com': 'google', 'boss@contoso.com': 'google', scanner: 'm365' }, defaults, 'test');
  assert.equal(routeOf(routing, 'alice@contoso.com'), 'm365');
  assert.equal(routeOf(routing, 'ALICE@CONTOSO.COM'), 'm365');
  assert.equal(routeOf(routing, 'boss@contoso.com'), 'google');
  assert.equal(routeOf(routing, 'someone@fabrikam.com'), 'google');
  assert.equal(routeOf(routing, 'scanner'), 'm365');
  assert.equal(routeOf(routing, 'bob@example.org'), 'default');
  assert.equal(routeOf(routing, 'bob'), 'default');
});

test('profiles take the defaults a server needs and the grant\'s usual scope', { timeout: 30_000 }, () => {
  const routing = parseRouting({ m365, google }, {}, defaults, 'test');
  const m = routing.profiles.get('m365')!;
  assert.deepEqual(m.imap, { host: 'outlook.office365.com', port: 993, tls: 'implicit', verifyTls: true, ca: undefined, mailbox: 'INBOX', servername: undefined });
  assert.deepEqual(m.auth, {
    grant: 'client-credentials',
    tokenUrl: 'https://login.microsoftonline.com/contoso/oauth2/v2.0/token',
    clientId: 'app',
    scope: 'https://outlook.office365.com/.default',
    credential: { kind: 'secret', secret: { file: '/run/secrets/m365' } },
  });
  const g = routing.profiles.get('google')!;
  assert.deepEqual(g.deleteMode, { kind: 'move', folder: '\\Trash' });
  assert.deepEqual(g.auth, { grant: 'jwt-bearer', serviceAccount: { env: 'GOOGLE_SA' }, scope: 'https://mail.google.com/', tokenUrl: undefined });
});

test('mistakes are named: an inline secret, an unknown profile, plain http to another host, a missing setting', { timeout: 30_000 }, () => {
  const bad = (profiles: unknown, routes: unknown, reason: RegExp) => assert.throws(() => parseRouting(profiles, routes, defaults, 'conf.yaml'), reason);
  bad({ x: { ...m365, auth: { ...m365.auth, 'client-secret': 'hunter2' } } }, {}, /unknown setting "client-secret".*secrets are named by -file or -env/);
  bad({ m365 }, { 'contoso.com': 'nope' }, /contoso\.com names no known profile/);
  bad({ x: { ...m365, auth: { ...m365.auth, 'token-url': 'http://login.example.com/token' } } }, {}, /must be https:\/\/ \(http:\/\/ only to loopback\)/);
  bad({ x: { auth: m365.auth } }, {}, /profile x in conf\.yaml: imap-host is required/);
  bad({ x: { ...m365, auth: { grant: 'client-credentials', 'token-url': 'https://t.example/token', 'client-id': 'a' } } }, {}, /either client-secret-file\/-env or private-key-file/);
  bad({ default: m365 }, {}, /"default" is the profile the flags describe/);
  bad({ x: { ...m365, 'imap-tls': 'maybe' } }, {}, /imap-tls must be implicit, starttls or none/);
  bad({ x: { ...google, 'delete-mode': 'shred' } }, {}, /shred is not expunge, flag, seen or move:FOLDER/);
  bad({ x: { ...m365, auth: { grant: 'kerberos' } } }, {}, /grant must be one of password, client-credentials, jwt-bearer, refresh-token/);
});

test('http:// to loopback is allowed (a local token service)', { timeout: 30_000 }, () => {
  const routing = parseRouting({ x: { ...m365, auth: { ...m365.auth, 'token-url': 'http://127.0.0.1:8080/token' } } }, {}, defaults, 'test');
  assert.equal((routing.profiles.get('x')!.auth as { tokenUrl: string }).tokenUrl, 'http://127.0.0.1:8080/token');
});
