import { parseMessageNumber } from '../command-parser.js';
import type { Pop3Session, Transaction } from '../session.js';

/**
 * Resolves a message-number argument to a 0-based index of the snapshot, replying -ERR and
 * returning undefined when it is malformed, out of range, or names a deleted message.
 */
export async function messageIndex(session: Pop3Session, tx: Transaction, arg: string): Promise<number | undefined> {
  if (!/^[0-9]+$/.test(arg)) {
    await session.error(`Invalid message number: ${arg.slice(0, 20)}`);
    return undefined;
  }
  const n = parseMessageNumber(arg, tx.messages.length);
  if (n === undefined) {
    await session.error('No such message.');
    return undefined;
  }
  if (tx.deleted.has(n - 1)) {
    await session.error(`Message ${n} is deleted.`);
    return undefined;
  }
  return n - 1;
}

/** The session's transaction; handlers run only in TRANSACTION, where it always exists. */
export function transactionOf(session: Pop3Session): Transaction {
  const tx = session.transaction;
  if (!tx) throw new Error('No open maildrop in this state');
  return tx;
}
