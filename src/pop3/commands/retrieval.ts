import { isMaildropError } from '../../maildrop/errors.js';
import type { MessageStream } from '../../maildrop/maildrop.js';
import type { CommandContext, CommandHandler } from '../command-context.js';
import { parseLineCount } from '../command-parser.js';
import { errLine } from '../responses.js';
import { DotStuffer } from '../../net/dot-stuffer.js';
import { ClientGoneError, errorText } from '../session-errors.js';
import { TopFilter } from '../top-filter.js';
import { args } from './command.js';
import { messageIndex } from './message-arg.js';

const MESSAGE_FOLLOWS = Buffer.from('+OK Message follows.\r\n');
/** Bytes of a message gathered at most for one write to the client. */
const WRITE_BYTES = 256 * 1024;

/** RETR n: the whole message, streamed and byte-stuffed. */
export const RETR: CommandHandler = {
  states: ['transaction'],
  acceptsArgs: args.one,
  async run(context, command) {
    const index = await messageIndex(context, command.args[0]);
    if (index === undefined) return;
    const sent = await deliver(context, index, undefined);
    if (sent === undefined) return;
    context.retrieved(index, sent);
    try {
      await context.transaction.maildrop.retrieved(index);
    } catch (err) {
      // The message was delivered; only its read mark is missing. Not worth failing the session.
      context.logger.warn(`Marking message ${index + 1} read failed: ${errorText(err)}`, context.logMeta());
    }
  },
};

/** TOP n k: the header, the empty line and the first k lines of the body. */
export const TOP: CommandHandler = {
  states: ['transaction'],
  acceptsArgs: args.two,
  async run(context, command) {
    const lines = parseLineCount(command.args[1]);
    if (lines === undefined) return context.error(`Invalid line count: ${command.args[1].slice(0, 20)}`);
    const index = await messageIndex(context, command.args[0]);
    if (index === undefined) return;
    const sent = await deliver(context, index, new TopFilter(lines));
    if (sent === undefined) return;
    context.topped(sent);
  },
};

/**
 * Streams a message to the client. Returns the number of message octets sent, or undefined
 * when nothing (or not all of it) was delivered. If the message cannot be delivered whole, the
 * connection is dropped without the terminating line, so that a client never takes a truncated
 * message for a complete one.
 */
async function deliver(
  context: CommandContext,
  index: number,
  top: TopFilter | undefined,
): Promise<number | undefined> {
  let source: MessageStream;
  try {
    source = await context.transaction.maildrop.read(index);
  } catch (err) {
    await replyReadFailure(context, err);
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
      if (gathered >= WRITE_BYTES || (source.readableLength === 0 && !source.arrived)) {
        if (pieces.length > 0) await context.send(pieces);
        pieces = [];
        gathered = 0;
      }
    }
    pieces.push(...stuffer.finish());
    await context.send(pieces);
  } catch (err) {
    source.destroy();
    context.logger.warn(`Message ${index + 1} not delivered whole: ${errorText(err)}`, context.logMeta());
    // No terminating line: the client must not take what it got for the whole message.
    context.end(err instanceof ClientGoneError ? 'client-closed' : 'delivery-failed', 'cut');
    return undefined;
  }
  return octets;
}

async function replyReadFailure(context: CommandContext, err: unknown): Promise<void> {
  if (isMaildropError(err) && err.kind === 'gone') {
    return context.error('Message was removed from the mailbox by another client.');
  }
  context.logger.warn(`Reading a message failed: ${errorText(err)}`, context.logMeta());
  const text = 'Mail server failed to deliver the message, try again later.';
  // Without a usable backend connection the session cannot go on.
  if (!isMaildropError(err) || err.fatal) return context.end('backend-failed', errLine(text, 'SYS/TEMP'));
  await context.error(text, 'SYS/TEMP');
}
