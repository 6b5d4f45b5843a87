import type { CommandHandler } from '../command-context.js';
import { args } from './command.js';

/**
 * LAST (RFC 1725, dropped by RFC 1939): the highest message number retrieved in the session, 0
 * after RSET. Old clients (tcllib's pop3) still send it before every RETR and DELE; answered as
 * Dovecot answers it with pop3_enable_last (RSET does not clear \Seen here: the proxy's marks
 * are its own).
 */
export const LAST: CommandHandler = {
  states: ['transaction'],
  acceptsArgs: args.none,
  async run(context) {
    await context.ok(String(context.transaction.lastRetrieved));
  },
};
