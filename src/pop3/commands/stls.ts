import { okLine } from '../responses.js';
import { args, type CommandHandler } from './command.js';

/** STLS (RFC 2595): TLS on the plain port, before logging in. */
export const STLS: CommandHandler = {
  states: ['authorization'],
  acceptsArgs: args.none,
  async run(session) {
    if (!session.services.policy.tlsAvailable) return session.protocolError('STLS is not available on this server.');
    if (session.io.secure) return session.protocolError('TLS is already in use.');
    // Everything the client said before TLS is forgotten (RFC 2595 section 4).
    session.pendingUser = undefined;
    await session.io.startTls(okLine('Begin TLS negotiation.'));
  },
};
