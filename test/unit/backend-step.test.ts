/**
 * A backend step's failure as the POP3 side sees it (src/imap/backend-step.ts): the server's
 * own code or known text decides the kind, a message cut short by the server is gone, anything
 * else is temporary; fatal when the connection is no longer usable; and every failure marks
 * the connection interrupted, so that it is never kept for another session.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BackendSteps, stepError } from '../../src/imap/backend-step.js';
import { MaildropError } from '../../src/maildrop/errors.js';
import { stepConnection } from './fake-imap.js';

const T = { timeout: 30_000 };

function serverError(status: string, code: string | undefined, text: string): Error {
  const fields = { responseStatus: status, serverResponseCode: code, responseText: text };
  return Object.assign(new Error('Command failed'), fields);
}

test('a step that works: its value, its time told under a name without the UID, nothing interrupted', T, async () => {
  const told: string[] = [];
  const connection = stepConnection({ usable: true });
  const steps = new BackendSteps({ timeoutMs: 1000, onStep: (step) => told.push(step) }, connection);
  assert.equal(await steps.run('fetching message UID 42', async () => 'body'), 'body');
  assert.deepEqual(told, ['fetching message']);
  assert.equal(connection.interrupted, false);
});

test('a failed step interrupts the connection and is still timed', T, async () => {
  const told: string[] = [];
  const connection = stepConnection({ usable: true });
  const steps = new BackendSteps({ timeoutMs: 1000, onStep: (step) => told.push(step) }, connection);
  const err = await steps.run('expunging', () => Promise.reject(new Error('socket closed'))).catch((e: unknown) => e);
  assert.ok(err instanceof MaildropError);
  assert.equal(err.kind, 'temporary');
  assert.equal(err.message, 'expunging: socket closed');
  assert.equal(err.fatal, false, 'the connection is still usable');
  assert.equal(connection.interrupted, true);
  assert.deepEqual(told, ['expunging']);
});

test('a step past the backend timeout fails temporary and fatal', T, async () => {
  const connection = stepConnection({ usable: true });
  const steps = new BackendSteps({ timeoutMs: 20 }, connection);
  const err = await steps.run('listing messages', () => new Promise(() => undefined)).catch((e: unknown) => e);
  assert.ok(err instanceof MaildropError);
  assert.equal(err.kind, 'temporary');
  assert.equal(err.fatal, true);
  assert.match(err.message, /^listing messages timed out after 0\.02 s$/);
  assert.equal(connection.interrupted, true);
});

test('fatal follows the connection: a failure on a connection that is gone ends the session', T, async () => {
  const client = { usable: true };
  const steps = new BackendSteps({ timeoutMs: 1000 }, stepConnection(client));
  const err = await steps
    .run('opening the mailbox', async () => {
      client.usable = false;
      throw new Error('Connection not available');
    })
    .catch((e: unknown) => e);
  assert.ok(err instanceof MaildropError);
  assert.equal(err.fatal, true);
});

test('the server\'s refusal: its RFC 5530 code, or a known text, decides the kind; its text is kept', T, () => {
  const missing = stepError('moving to Archive', serverError('NO', 'NONEXISTENT', 'Mailbox does not exist'), false);
  assert.equal(missing.kind, 'permanent');
  assert.equal(missing.message, 'moving to Archive: the server refused (NONEXISTENT): Mailbox does not exist');
  const notConnected = serverError('BAD', undefined, 'User is authenticated but not connected.');
  const exchange = stepError('opening the mailbox', notConnected, true);
  assert.equal(exchange.kind, 'credentials');
  assert.equal(exchange.fatal, true);
  const busy = stepError('expunging', serverError('NO', 'INUSE', ''), false);
  assert.equal(busy.kind, 'temporary');
  assert.equal(busy.message, 'expunging: the server refused (INUSE)', 'no empty text after the reason');
});

test('a message the server cut short is gone; an error already classified is kept as it is', T, () => {
  const incomplete = Object.assign(new Error('Download incomplete'), { code: 'DownloadIncomplete' });
  const cut = stepError('fetching message UID 3', incomplete, true);
  assert.equal(cut.kind, 'gone');
  assert.equal(cut.fatal, false);
  const known = new MaildropError('permanent', 'mailbox INBOX is read-only');
  assert.equal(stepError('opening the mailbox', known, true), known);
  const odd = stepError('logout', 'a string', false);
  assert.equal(odd.kind, 'temporary');
  assert.equal(odd.message, 'logout: a string');
});

test('a command imapflow answered with false: temporary, fatal only on a connection that is gone', T, () => {
  const client = { usable: true };
  const steps = new BackendSteps({ timeoutMs: 1000 }, stepConnection(client));
  const refused = steps.failed('expunging the deleted messages');
  assert.equal(refused.kind, 'temporary');
  assert.equal(refused.message, 'expunging the deleted messages failed');
  assert.equal(refused.fatal, false);
  assert.equal(steps.failed('removing \\Deleted flags', { usable: false }).fatal, true, 'the client named counts');
  client.usable = false;
  assert.equal(steps.failed('expunging the deleted messages').fatal, true);
});
