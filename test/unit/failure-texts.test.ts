import assert from 'node:assert/strict';
import { test } from 'node:test';
import { classifyLoginError } from '../../src/imap/imap-client.js';
import { classifyServerFailure, FAILURE_TEXTS, suggestedBackoffMs } from '../../src/imap/failure-texts.js';
import { MaildropError } from '../../src/maildrop/errors.js';

test('RFC 5530 codes decide first', { timeout: 30_000 }, () => {
  for (const code of ['AUTHENTICATIONFAILED', 'AUTHORIZATIONFAILED', 'EXPIRED']) assert.equal(classifyServerFailure(code, 'whatever')?.kind, 'credentials');
  for (const code of ['UNAVAILABLE', 'SERVERBUG', 'LIMIT', 'INUSE', 'OVERQUOTA']) assert.equal(classifyServerFailure(code, 'LOGIN failed.')?.kind, 'temporary');
  for (const code of ['PRIVACYREQUIRED', 'CONTACTADMIN', 'NOPERM', 'NONEXISTENT']) assert.equal(classifyServerFailure(code, undefined)?.kind, 'permanent');
  assert.equal(classifyServerFailure('unavailable', '')?.kind, 'temporary', 'codes are case-insensitive');
});

test('without a code, the known texts of the big services', { timeout: 30_000 }, () => {
  assert.deepEqual(classifyServerFailure(undefined, 'Server Unavailable. 15'), { kind: 'temporary', reason: 'Exchange Online: server unavailable' });
  assert.equal(classifyServerFailure(undefined, 'LOGIN failed.')?.kind, 'credentials');
  assert.equal(classifyServerFailure(undefined, 'AUTHENTICATE failed.')?.kind, 'credentials');
  assert.equal(classifyServerFailure(undefined, 'User is authenticated but not connected.')?.kind, 'credentials');
  assert.deepEqual(classifyServerFailure(undefined, 'Request is throttled. Suggested Backoff Time: 92415 milliseconds'), {
    kind: 'temporary',
    reason: 'Exchange Online: throttled',
    backoffMs: 92415,
  });
  // Gmail puts [ALERT] in front, which is no RFC 5530 code.
  assert.equal(classifyServerFailure('ALERT', 'Too many simultaneous connections. (Failure)')?.kind, 'temporary');
  assert.equal(classifyServerFailure('ALERT', 'Application-specific password required: https://support.google.com/accounts/answer/185833 (Failure)')?.kind, 'credentials');
  assert.equal(classifyServerFailure(undefined, '[ALERT] Please log in via your web browser and then try again.')?.kind, 'credentials');
  assert.equal(classifyServerFailure(undefined, 'Something else went wrong'), undefined);
  assert.equal(classifyServerFailure(undefined, undefined), undefined);
  for (const entry of FAILURE_TEXTS) assert.ok(entry.service.length > 0 && entry.meaning.length > 0);
});

test('the suggested backoff is read from the text', { timeout: 30_000 }, () => {
  assert.equal(suggestedBackoffMs('Request is throttled. Suggested Backoff Time: 2000 milliseconds'), 2000);
  assert.equal(suggestedBackoffMs('Request is throttled.'), undefined);
  assert.equal(suggestedBackoffMs(undefined), undefined);
});

/** An error as imapflow makes it for a tagged NO/BAD to LOGIN or AUTHENTICATE. */
const refusal = (status: 'NO' | 'BAD', text: string, code?: string) =>
  Object.assign(new Error('Command failed'), {
    responseStatus: status,
    responseText: text,
    authenticationFailed: true,
    ...(code ? { serverResponseCode: code } : {}),
  });

test('classifyLoginError: an Exchange outage is temporary although imapflow calls it an authentication failure', { timeout: 30_000 }, () => {
  assert.equal(classifyLoginError(refusal('NO', 'Server Unavailable. 15')).kind, 'temporary');
  assert.equal(classifyLoginError(refusal('NO', 'LOGIN failed.')).kind, 'credentials');
  assert.equal(classifyLoginError(refusal('NO', 'Authentication failed.', 'AUTHENTICATIONFAILED')).kind, 'credentials');
  assert.equal(classifyLoginError(refusal('NO', 'Temporary authentication failure', 'UNAVAILABLE')).kind, 'temporary');
  assert.equal(classifyLoginError(refusal('NO', 'Some unknown text')).kind, 'credentials', 'a NO without code or known text stays a refusal');
  const throttled = Object.assign(new Error('Command failed'), { code: 'ETHROTTLE', throttleReset: 5000, responseStatus: 'BAD', responseText: 'Request is throttled. Suggested Backoff Time: 5000 milliseconds' });
  assert.equal(classifyLoginError(throttled).kind, 'temporary');
  // Exchange closes the connection while imapflow waits out the hint: a lost connection, the hint seen in its log.
  const cut = Object.assign(new Error('Connection not available'), { code: 'NoConnection' });
  assert.match(classifyLoginError(cut, 3000).message, /throttled.*3000 ms/);
  assert.equal(classifyLoginError(new MaildropError('temporary', 'IMAP login timed out'), 3000).kind, 'temporary');
  assert.equal(classifyLoginError(cut).kind, 'temporary');
});
