import type { CommandContext } from '../command-context.js';
import { parseMessageNumber } from '../command-parser.js';

/**
 * Resolves a message-number argument to a 0-based index of the snapshot, replying -ERR and
 * returning undefined when it is malformed, out of range, or names a deleted message.
 */
export async function messageIndex(context: CommandContext, arg: string): Promise<number | undefined> {
  const tx = context.transaction;
  if (!/^[0-9]+$/.test(arg)) {
    await context.error(`Invalid message number: ${arg.slice(0, 20)}`);
    return undefined;
  }
  const n = parseMessageNumber(arg, tx.messages.length);
  if (n === undefined) {
    await context.error('No such message.');
    return undefined;
  }
  if (tx.deleted.has(n - 1)) {
    await context.error(`Message ${n} is deleted.`);
    return undefined;
  }
  return n - 1;
}
