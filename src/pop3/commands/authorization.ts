import { isMaildropError, type MaildropError } from '../../maildrop/errors.js';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LockLease } from '../../lock/lock-registry.js';
import type { Credentials, Maildrop } from '../../maildrop/maildrop.js';
import type { Pop3Session } from '../session.js';
import { describe } from '../session-errors.js';
import { errLine } from '../responses.js';
import { args, type CommandHandler } from './command.js';

/** C0 controls and DEL: never part of a user name. */
const CONTROL = /[\u0000-\u001f\u007f]/;

export const USER: CommandHandler = {
  states: ['authorization'],
  acceptsArgs: args.one,
  async run(session, command) {
    if (session.plaintextAuthRefused) return refusePlaintext(session);
    session.pendingUser = command.args[0];
    await session.ok('Send your password.');
  },
};

/** PASS logs in to the store with the user's own credentials, locks the mailbox and snapshots it. */
export const PASS: CommandHandler = {
  states: ['authorization'],
  // The password is the whole rest of the line: it may contain spaces.
  acceptsArgs: args.any,
  async run(session, command) {
    const user = session.pendingUser;
    session.pendingUser = undefined;
    if (session.plaintextAuthRefused) return refusePlaintext(session);
    if (user === undefined) return session.protocolError('Send USER first.');
    if (command.rest.length === 0) return session.protocolError('Missing password.');
    await login(session, { user, password: command.rest });
  },
};

/** APOP needs the user's secret, which a proxy never sees. */
export const APOP: CommandHandler = {
  states: ['authorization'],
  acceptsArgs: args.any,
  async run(session) {
    await session.error('APOP is not supported; use USER and PASS.');
  },
};

/** Refuses a password on a connection that TLS could, and does not, protect. */
export function refusePlaintext(session: Pop3Session): Promise<void> {
  return session.error('Plaintext authentication is disallowed on non-secure connections; use STLS or the TLS port.', 'AUTH');
}

/** Logs in to the store with the client's credentials, locks the mailbox and snapshots it. */
export async function login(session: Pop3Session, credentials: Credentials): Promise<void> {
  const user = credentials.user;
  // No mail server takes such a name (IMAP cannot even quote it): a wrong login, not an outage.
  if (CONTROL.test(user)) {
    session.logger.info('Login refused: the user name holds control characters', session.logMeta());
    session.services.events.login('auth');
    return refuseCredentials(session);
  }
  session.user = user;
  let maildrop: Maildrop;
  try {
    maildrop = await session.services.provider.authenticate(credentials, session.client);
  } catch (err) {
    session.user = undefined;
    return refuse(session, err);
  }
  session.pendingMaildrop = maildrop;
  const wait = await session.services.policy.loginWait(maildrop.mailboxKey);
  if (wait > 0) {
    await letGo(session, maildrop, 'info', `Login refused: logged in too recently (LOGIN-DELAY), ${wait} s to wait`);
    return session.error(`Logged in too recently; try again in ${wait} seconds.`, 'LOGIN-DELAY');
  }
  const lockStarted = performance.now();
  let lease: LockLease | undefined;
  try {
    lease = await session.services.locks.acquire(maildrop.mailboxKey);
  } catch (err) {
    session.services.events.login('backend-error');
    await letGo(session, maildrop, 'warn', `Login refused: the mailbox lock could not be taken: ${describe(err)}`);
    return session.error('Mailbox lock service unavailable, try again later.', 'SYS/TEMP');
  }
  session.services.events.lockWaited((performance.now() - lockStarted) / 1000);
  if (!lease) {
    session.services.events.login('in-use');
    await letGo(session, maildrop, 'info', 'Login refused: mailbox in use by another session');
    return session.error('Mailbox is in use by another POP3 session.', 'IN-USE');
  }
  try {
    const messages = await maildrop.open();
    session.pendingMaildrop = undefined;
    session.transaction = { user, maildrop, lease, messages, deleted: new Set(), lastRetrieved: 0 };
    session.state = 'transaction';
    session.watchLock(lease);
    session.io.loggedIn();
    session.services.policy.loggedIn(maildrop.mailboxKey);
    session.services.events.login('ok');
  } catch (err) {
    session.pendingMaildrop = undefined;
    await maildrop.abandon().catch(() => undefined);
    await lease.release();
    session.user = undefined;
    return refuse(session, err);
  }
  const count = session.transaction.messages.length;
  session.logger.info(`Logged in, ${count} messages`, session.logMeta());
  await session.ok(`Logged in, ${count} ${count === 1 ? 'message' : 'messages'}.`);
}

/** Lets go of a maildrop the store accepted but this session will not open: back to AUTHORIZATION. */
async function letGo(session: Pop3Session, maildrop: Maildrop, level: 'info' | 'warn', why: string): Promise<void> {
  session.logger[level](why, session.logMeta());
  session.pendingMaildrop = undefined;
  session.user = undefined;
  await maildrop.abandon().catch(() => undefined);
}

/** A failed login goes back to AUTHORIZATION with a reply code saying whose fault it was. */
async function refuse(session: Pop3Session, err: unknown): Promise<void> {
  const failure: MaildropError | undefined = isMaildropError(err) ? err : undefined;
  session.logger.info(`Login failed: ${describe(err)}`, session.logMeta());
  session.services.events.login(failure?.kind === 'credentials' ? 'auth' : 'backend-error');
  switch (failure?.kind) {
    case 'credentials':
      return refuseCredentials(session);
    case 'permanent':
      return session.error(`Mailbox not available: ${failure.message}`, 'SYS/PERM');
    default:
      return session.error('Mail server temporarily unavailable, try again later.', 'SYS/TEMP');
  }
}

/**
 * A wrong user name or password (the same reply for both), answered after a delay that grows
 * with the address's recent failures; past the per-connection limit the connection is closed.
 */
async function refuseCredentials(session: Pop3Session): Promise<void> {
  session.authFailures++;
  const policy = session.services.policy;
  await sleep(await policy.authFailed(session.client.address));
  if (session.authFailures < policy.maxAuthFailures) return session.error('Authentication failed.', 'AUTH');
  session.end('auth-failures', errLine('Authentication failed; too many failures, closing connection.', 'AUTH'));
}
