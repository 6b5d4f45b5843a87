import { isMaildropError } from '../../maildrop/errors.js';
import type { Pop3Session } from '../session.js';
import { describe } from '../session-errors.js';
import { errLine } from '../responses.js';
import { args, type CommandHandler } from './command.js';
import { messageIndex, transactionOf } from './message-arg.js';

/** DELE n: marks the message deleted in the store now; only QUIT removes it. */
export const DELE: CommandHandler = {
  states: ['transaction'],
  acceptsArgs: args.one,
  async run(session, command) {
    const tx = transactionOf(session);
    const index = await messageIndex(session, tx, command.args[0]!);
    if (index === undefined) return;
    try {
      await tx.maildrop.markDeleted(index);
    } catch (err) {
      return storeFailure(session, `Message ${index + 1} could not be marked deleted`, err);
    }
    tx.deleted.add(index);
    session.stats.deleted++;
    session.services.events.deleted();
    await session.ok(`Message ${index + 1} deleted.`);
  },
};

/** RSET: takes back every deletion of this session, and only those. */
export const RSET: CommandHandler = {
  states: ['transaction'],
  acceptsArgs: args.none,
  async run(session) {
    const tx = transactionOf(session);
    const indexes = [...tx.deleted];
    try {
      await tx.maildrop.unmarkDeleted(indexes);
    } catch (err) {
      return storeFailure(session, 'Deletions could not be taken back', err);
    }
    tx.deleted.clear();
    tx.lastRetrieved = 0;
    session.stats.deleted = 0;
    await session.ok(`${tx.messages.length} messages.`);
  },
};

async function storeFailure(session: Pop3Session, what: string, err: unknown): Promise<void> {
  session.logger.warn(`${what}: ${describe(err)}`, session.logMeta());
  // Without a usable backend connection the session cannot go on.
  if (!isMaildropError(err) || err.fatal) return session.end('backend-failed', errLine(`${what}, try again later.`, 'SYS/TEMP'));
  await session.error(`${what}, try again later.`, 'SYS/TEMP');
}
