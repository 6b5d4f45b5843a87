import type { CommandHandler } from '../command-context.js';
import { login, refusePlaintext } from '../login.js';
import { args } from './command.js';

export const USER: CommandHandler = {
  states: ['authorization'],
  acceptsArgs: args.one,
  async run(context, command) {
    if (context.plaintextAuthRefused) return refusePlaintext(context);
    context.rememberUser(command.args[0]);
    await context.ok('Send your password.');
  },
};

/** PASS logs in to the store with the user's own credentials, locks the mailbox and snapshots it. */
export const PASS: CommandHandler = {
  states: ['authorization'],
  // The password is the whole rest of the line: it may contain spaces.
  acceptsArgs: args.any,
  async run(context, command) {
    const user = context.takeUser();
    if (context.plaintextAuthRefused) return refusePlaintext(context);
    if (user === undefined) return context.protocolError('Send USER first.');
    if (command.rest.length === 0) return context.protocolError('Missing password.');
    await login(context, { user, password: command.rest });
  },
};

/** APOP needs the user's secret, which a proxy never sees. */
export const APOP: CommandHandler = {
  states: ['authorization'],
  acceptsArgs: args.any,
  async run(context) {
    await context.error('APOP is not supported; use USER and PASS.');
  },
};
