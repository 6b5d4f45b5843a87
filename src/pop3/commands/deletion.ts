import { isMaildropError } from '../../maildrop/errors.js';
import type { CommandContext, CommandHandler } from '../command-context.js';
import { errLine } from '../responses.js';
import { errorText } from '../session-errors.js';
import { args } from './command.js';
import { messageIndex } from './message-arg.js';

/** DELE n: marks the message deleted in this session (in the store too with --flag-on-dele); only QUIT removes it. */
export const DELE: CommandHandler = {
  states: ['transaction'],
  acceptsArgs: args.one,
  async run(context, command) {
    const index = await messageIndex(context, command.args[0]);
    if (index === undefined) return;
    try {
      await context.transaction.maildrop.markDeleted(index);
    } catch (err) {
      return storeFailure(context, `Message ${index + 1} could not be marked deleted`, err);
    }
    context.markDeleted(index);
    await context.ok(`Message ${index + 1} deleted.`);
  },
};

/** RSET: takes back every deletion of this session, and only those. */
export const RSET: CommandHandler = {
  states: ['transaction'],
  acceptsArgs: args.none,
  async run(context) {
    const tx = context.transaction;
    try {
      await tx.maildrop.unmarkDeleted([...tx.deleted]);
    } catch (err) {
      return storeFailure(context, 'Deletions could not be taken back', err);
    }
    context.resetDeletions();
    await context.ok(`${tx.messages.length} messages.`);
  },
};

async function storeFailure(context: CommandContext, what: string, err: unknown): Promise<void> {
  context.logger.warn(`${what}: ${errorText(err)}`, context.logMeta());
  // Without a usable backend connection the session cannot go on.
  if (!isMaildropError(err) || err.fatal)
    return context.end('backend-failed', errLine(`${what}, try again later.`, 'SYS/TEMP'));
  await context.error(`${what}, try again later.`, 'SYS/TEMP');
}
