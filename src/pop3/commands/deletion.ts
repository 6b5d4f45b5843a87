import { isMaildropError } from '../../maildrop/errors.js';
import type { Pop3Session } from '../session.js';
import { describe } from '../session.js';
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
    session.stats.deleted = 0;
    await session.ok(`${tx.messages.length} messages.`);
  },
};

async function storeFailure(session: Pop3Session, what: string, err: unknown): Promise<void> {
  session.logger.warn(`${what}: ${describe(err)}`, session.logMeta());
  await session.error(`${what}, try again later.`, 'SYS/TEMP');
  if (!isMaildropError(err) || err.fatal) {
    session.io.close();
    await session.end('backend-failed');
  }
}
