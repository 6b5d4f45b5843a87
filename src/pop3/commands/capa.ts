import { multiLine } from '../responses.js';
import { args, type CommandHandler } from './command.js';

/** CAPA (RFC 2449): what this server supports, in either state. */
export const CAPA: CommandHandler = {
  states: ['authorization', 'transaction'],
  acceptsArgs: args.none,
  async run(session) {
    const caps = ['TOP', 'UIDL', 'RESP-CODES', 'AUTH-RESP-CODE', 'PIPELINING'];
    if (session.state === 'authorization') caps.push('USER');
    caps.push(`IMPLEMENTATION ${session.services.implementation}`);
    await session.io.send(multiLine('Capability list follows', caps));
  },
};
