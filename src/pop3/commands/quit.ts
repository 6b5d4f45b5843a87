import type { CommandHandler } from '../command-context.js';
import { okLine } from '../responses.js';
import { args } from './command.js';

/** QUIT: in AUTHORIZATION just says goodbye; in TRANSACTION enters UPDATE. */
export const QUIT: CommandHandler = {
  states: ['authorization', 'transaction'],
  acceptsArgs: args.none,
  async run(context) {
    if (context.state === 'transaction') return context.update();
    context.end('quit', okLine('Bye.'));
  },
};
