import { multiLine } from '../responses.js';
import { SASL_MECHANISMS } from '../sasl.js';
import { args, type CommandHandler } from './command.js';

/** CAPA (RFC 2449): what this server supports, in either state. */
export const CAPA: CommandHandler = {
  states: ['authorization', 'transaction'],
  acceptsArgs: args.none,
  async run(session) {
    const caps = ['TOP', 'UIDL', 'RESP-CODES', 'AUTH-RESP-CODE', 'PIPELINING'];
    if (session.state === 'authorization') {
      if (session.services.policy.tlsAvailable && !session.io.secure) caps.push('STLS');
      // Where passwords are refused, offering ways to send them would only invite the mistake.
      if (!session.plaintextAuthRefused) caps.push('USER', `SASL ${SASL_MECHANISMS.join(' ')}`);
    }
    const { loginDelayS, expire } = session.services.policy;
    if (loginDelayS !== undefined) caps.push(`LOGIN-DELAY ${loginDelayS}`);
    if (expire !== undefined) caps.push(`EXPIRE ${expire}`);
    caps.push(`IMPLEMENTATION ${session.services.implementation}`);
    await session.io.send(multiLine('Capability list follows', caps));
  },
};
