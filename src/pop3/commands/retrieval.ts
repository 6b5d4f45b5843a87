import type { Readable } from 'node:stream';
import { isMaildropError } from '../../maildrop/errors.js';
import { parseLineCount } from '../command-parser.js';
import { errLine } from '../responses.js';
import { DotStuffer } from '../dot-stuffer.js';
import type { Pop3Session } from '../session.js';
import { ClientGoneError, describe } from '../session-errors.js';
import { TopFilter } from '../top-filter.js';
import { args, type CommandHandler } from './command.js';
import { messageIndex, transactionOf } from './message-arg.js';

const MESSAGE_FOLLOWS = Buffer.from('+OK Message follows.\r\n');
/** Bytes of a message gathered at most for one write to the client. */
const WRITE_BYTES = 256 * 1024;

/** RETR n: the whole message, streamed and byte-stuffed. */
export const RETR: CommandHandler = {
  states: ['transaction'],
  acceptsArgs: args.one,
  async run(session, command) {
    const tx = transactionOf(session);
    const index = await messageIndex(session, tx, command.args[0]!);
    if (index === undefined) return;
    tx.lastRetrieved = Math.max(tx.lastRetrieved, index + 1);
    const sent = await deliver(session, index, undefined);
    if (sent === undefined) return;
    session.stats.retrieved++;
    session.stats.retrievedBytes += sent;
    session.services.events.retrieved(sent, true);
    try {
      await tx.maildrop.retrieved(index);
    } catch (err) {
      // The message was delivered; only its read mark is missing. Not worth failing the session.
      session.logger.warn(`Marking message ${index + 1} read failed: ${describe(err)}`, session.logMeta());
    }
  },
};

/** TOP n k: the header, the empty line and the first k lines of the body. */
export const TOP: CommandHandler = {
  states: ['transaction'],
  acceptsArgs: args.two,
  async run(session, command) {
    const tx = transactionOf(session);
    const lines = parseLineCount(command.args[1]!);
    if (lines === undefined) return session.error(`Invalid line count: ${command.args[1]!.slice(0, 20)}`);
    const index = await messageIndex(session, tx, command.args[0]!);
    if (index === undefined) return;
    const sent = await deliver(session, index, new TopFilter(lines));
    if (sent === undefined) return;
    session.stats.topped++;
    session.stats.toppedBytes += sent;
    session.services.events.retrieved(sent, false);
  },
};

/**
 * Streams a message to the client. Returns the number of message octets sent, or undefined
 * when nothing (or not all of it) was delivered. If the message cannot be delivered whole, the
 * connection is dropped without the terminating line, so that a client never takes a truncated
 * message for a complete one.
 */
async function deliver(session: Pop3Session, index: number, top: TopFilter | undefined): Promise<number | undefined> {
  const tx = transactionOf(session);
  let source: Readable;
  try {
    source = await tx.maildrop.read(index);
  } catch (err) {
    await replyReadFailure(session, err);
    return undefined;
  }
  const stuffer = new DotStuffer();
  let octets = 0;
  // The status line leaves with the first data, and what has already arrived leaves together:
  // a message read ahead goes out in one write with its terminating line, while one still
  // arriving is passed on as it comes.
  let pieces: Buffer[] = [MESSAGE_FOLLOWS];
  let gathered = MESSAGE_FOLLOWS.length;
  try {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      const part = top ? top.push(chunk) : chunk;
      octets += part.length;
      for (const piece of stuffer.push(part)) {
        pieces.push(piece);
        gathered += piece.length;
      }
      if (top?.done) break;
      // Nothing more at hand (the next chunk is still on its way), or enough for one write.
      if (gathered >= WRITE_BYTES || (source.readableLength === 0 && !allArrived(source))) {
        if (pieces.length > 0) await session.io.send(pieces);
        pieces = [];
        gathered = 0;
      }
    }
    pieces.push(...stuffer.finish());
    await session.io.send(pieces);
  } catch (err) {
    source.destroy();
    session.logger.warn(`Message ${index + 1} not delivered whole: ${describe(err)}`, session.logMeta());
    // No terminating line: the client must not take what it got for the whole message.
    session.end(err instanceof ClientGoneError ? 'client-closed' : 'delivery-failed', 'cut');
    return undefined;
  }
  return octets;
}

/**
 * Whether the source has been given all of its data (what is left of it is buffered). Node
 * tells this only in the readable state's `ended` (its public readableEnded comes later, once
 * the reader has taken everything).
 */
function allArrived(source: Readable): boolean {
  return (source as unknown as { _readableState?: { ended?: boolean } })._readableState?.ended === true;
}

async function replyReadFailure(session: Pop3Session, err: unknown): Promise<void> {
  if (isMaildropError(err) && err.kind === 'gone') {
    return session.error('Message was removed from the mailbox by another client.');
  }
  session.logger.warn(`Reading a message failed: ${describe(err)}`, session.logMeta());
  const text = 'Mail server failed to deliver the message, try again later.';
  // Without a usable backend connection the session cannot go on.
  if (!isMaildropError(err) || err.fatal) return session.end('backend-failed', errLine(text, 'SYS/TEMP'));
  await session.error(text, 'SYS/TEMP');
}
