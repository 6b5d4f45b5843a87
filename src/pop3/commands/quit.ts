import { okLine } from '../responses.js';
import { args, type CommandHandler } from './command.js';

/** QUIT: in AUTHORIZATION just says goodbye; in TRANSACTION enters UPDATE. */
export const QUIT: CommandHandler = {
  states: ['authorization', 'transaction'],
  acceptsArgs: args.none,
  async run(session) {
    if (session.state === 'transaction') return session.update();
    session.end('quit', okLine('Bye.'));
  },
};
