/**
 * Logging in, whichever command asked (PASS, or AUTH once its SASL exchange is done): the
 * store checks the credentials, LOGIN-DELAY is checked, the mailbox lock taken and the mailbox
 * opened and listed. Every step's hold on the mailbox is the session's (holdForLogin), so that
 * a session that ends in the middle lets go of it through its one teardown, and a failed step
 * goes back to AUTHORIZATION through that same path (abandonLogin).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { LockLease } from '../lock/lock-registry.js';
import { isMaildropError } from '../maildrop/errors.js';
import type { Credentials, Maildrop } from '../maildrop/maildrop.js';
import type { CommandContext } from './command-context.js';
import { errLine } from './responses.js';
import { errorText } from './session-errors.js';

/** C0 controls and DEL: never part of a user name. */
// eslint-disable-next-line no-control-regex -- control characters are what it finds
const CONTROL = /[\u0000-\u001f\u007f]/;

/** Logs in to the store with the client's credentials, locks the mailbox and snapshots it. */
export async function login(context: CommandContext, credentials: Credentials): Promise<void> {
  // No mail server takes such a name (IMAP cannot even quote it): a wrong login, not an outage.
  if (CONTROL.test(credentials.user)) {
    context.logger.info('Login refused: the user name holds control characters', context.logMeta());
    context.services.events.login('auth');
    return refuseCredentials(context);
  }
  context.beginLogin(credentials.user);
  let maildrop: Maildrop;
  try {
    maildrop = await context.services.provider.authenticate(withFolder(credentials, context), context.client);
  } catch (err) {
    await context.abandonLogin();
    return refuse(context, err);
  }
  context.holdForLogin(maildrop);
  const lease = await lock(context, maildrop);
  if (lease === undefined) return;
  context.holdForLogin(maildrop, lease);
  let messages;
  try {
    messages = await maildrop.open();
  } catch (err) {
    await context.abandonLogin();
    return refuse(context, err);
  }
  context.enterTransaction(messages);
  context.services.policy.loggedIn(maildrop.mailboxKey);
  context.services.events.login('ok');
  const count = messages.length;
  context.logger.info(`Logged in, ${count} messages`, context.logMeta());
  await context.ok(`Logged in, ${count} ${count === 1 ? 'message' : 'messages'}.`);
}

/** NAME#FOLDER (with --folder-separator #): the folder goes with the credentials, apart. */
function withFolder(credentials: Credentials, context: CommandContext): Credentials {
  const separator = context.services.policy.folderSeparator;
  const at = separator === undefined ? -1 : credentials.user.indexOf(separator);
  if (at <= 0 || at === credentials.user.length - 1) return credentials;
  return { ...credentials, user: credentials.user.slice(0, at), folder: credentials.user.slice(at + 1) };
}

/**
 * LOGIN-DELAY, then the mailbox lock. Resolves to the lease, or to undefined once the login was
 * refused and answered.
 */
async function lock(context: CommandContext, maildrop: Maildrop): Promise<LockLease | undefined> {
  const wait = await context.services.policy.loginWait(maildrop.mailboxKey);
  if (wait > 0) {
    await giveUp(context, 'info', `Login refused: logged in too recently (LOGIN-DELAY), ${wait} s to wait`);
    await context.error(`Logged in too recently; try again in ${wait} seconds.`, 'LOGIN-DELAY');
    return undefined;
  }
  const lockStarted = performance.now();
  let lease: LockLease | undefined;
  try {
    lease = await context.services.locks.acquire(maildrop.mailboxKey);
  } catch (err) {
    context.services.events.login('backend-error');
    await giveUp(context, 'warn', `Login refused: the mailbox lock could not be taken: ${errorText(err)}`);
    await context.error('Mailbox lock service unavailable, try again later.', 'SYS/TEMP');
    return undefined;
  }
  context.services.events.lockWaited((performance.now() - lockStarted) / 1000);
  if (lease === undefined) {
    context.services.events.login('in-use');
    await giveUp(context, 'info', 'Login refused: mailbox in use by another session');
    await context.error('Mailbox is in use by another POP3 session.', 'IN-USE');
  }
  return lease;
}

async function giveUp(context: CommandContext, level: 'info' | 'warn', why: string): Promise<void> {
  context.logger[level](why, context.logMeta());
  await context.abandonLogin();
}

/** A failed login goes back to AUTHORIZATION with a reply code saying whose fault it was. */
async function refuse(context: CommandContext, err: unknown): Promise<void> {
  const failure = isMaildropError(err) ? err : undefined;
  context.logger.info(`Login failed: ${errorText(err)}`, context.logMeta());
  context.services.events.login(failure?.kind === 'credentials' ? 'auth' : 'backend-error');
  switch (failure?.kind) {
    case 'credentials':
      return refuseCredentials(context);
    case 'permanent':
      // The reason (a folder's name, the identity provider's words) is the log's, not the client's,
      // unless it is about what the client itself asked for (a folder its login named).
      return context.error(failure.clientText ?? 'Mailbox not available; tell the administrator.', 'SYS/PERM');
    default:
      return context.error('Mail server temporarily unavailable, try again later.', 'SYS/TEMP');
  }
}

/**
 * A wrong user name or password (the same reply for both), answered after a delay that grows
 * with the address's recent failures; past the per-connection limit the connection is closed.
 */
async function refuseCredentials(context: CommandContext): Promise<void> {
  const failures = context.authFailed();
  const policy = context.services.policy;
  await sleep(await policy.authFailed(context.client.address));
  if (failures < policy.maxAuthFailures) return context.error('Authentication failed.', 'AUTH');
  context.end('auth-failures', errLine('Authentication failed; too many failures, closing connection.', 'AUTH'));
}

/** Refuses a password on a connection that TLS could, and does not, protect. */
export function refusePlaintext(context: CommandContext): Promise<void> {
  return context.error(
    'Plaintext authentication is disallowed on non-secure connections; use STLS or the TLS port.',
    'AUTH',
  );
}
