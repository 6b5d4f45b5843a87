import type { CommandHandler } from '../command-context.js';
import { okLine } from '../responses.js';
import { args } from './command.js';

/** STLS (RFC 2595): TLS on the plain port, before logging in. */
export const STLS: CommandHandler = {
  states: ['authorization'],
  acceptsArgs: args.none,
  async run(context) {
    if (!context.services.policy.tlsAvailable) return context.protocolError('STLS is not available on this server.');
    if (context.secure) return context.protocolError('TLS is already in use.');
    await context.startTls(okLine('Begin TLS negotiation.'));
  },
};
