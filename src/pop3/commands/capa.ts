import type { CommandHandler } from '../command-context.js';
import { multiLine } from '../responses.js';
import { SASL_MECHANISMS } from '../sasl.js';
import { args } from './command.js';

/** CAPA (RFC 2449): what this server supports, in either state. */
export const CAPA: CommandHandler = {
  states: ['authorization', 'transaction'],
  acceptsArgs: args.none,
  async run(context) {
    const caps = ['TOP', 'UIDL', 'RESP-CODES', 'AUTH-RESP-CODE', 'PIPELINING'];
    const { policy, implementation } = context.services;
    if (context.state === 'authorization') {
      if (policy.tlsAvailable && !context.secure) caps.push('STLS');
      // Where passwords are refused, offering ways to send them would only invite the mistake.
      if (!context.plaintextAuthRefused) caps.push('USER', `SASL ${SASL_MECHANISMS.join(' ')}`);
    }
    if (policy.loginDelayS !== undefined) caps.push(`LOGIN-DELAY ${policy.loginDelayS}`);
    if (policy.expire !== undefined) caps.push(`EXPIRE ${policy.expire}`);
    caps.push(`IMPLEMENTATION ${implementation}`);
    await context.send(multiLine('Capability list follows', caps));
  },
};
