import type { CommandContext, CommandHandler, Transaction } from '../command-context.js';
import { multiLine } from '../responses.js';
import { args } from './command.js';
import { messageIndex } from './message-arg.js';

/** STAT: count and total size of the messages not marked deleted. */
export const STAT: CommandHandler = {
  states: ['transaction'],
  acceptsArgs: args.none,
  async run(context) {
    const tx = context.transaction;
    let count = 0;
    let octets = 0;
    tx.messages.forEach((m, i) => {
      if (tx.deleted.has(i)) return;
      count++;
      octets += m.size;
    });
    await context.ok(`${count} ${octets}`);
  },
};

/** LIST [n]: sizes; numbers never shift, deleted messages are simply left out. */
export const LIST: CommandHandler = {
  states: ['transaction'],
  acceptsArgs: args.optional,
  async run(context, command) {
    await listing(
      context,
      command.args[0],
      (tx, i) => String(tx.messages[i].size),
      (count) => `${count} messages`,
    );
  },
};

/** UIDL [n]: the unique ids, stable across sessions. */
export const UIDL: CommandHandler = {
  states: ['transaction'],
  acceptsArgs: args.optional,
  async run(context, command) {
    await listing(
      context,
      command.args[0],
      (tx, i) => tx.messages[i].uidl,
      () => 'Unique-ID listing follows',
    );
  },
};

export const NOOP: CommandHandler = {
  states: ['transaction'],
  acceptsArgs: args.none,
  async run(context) {
    await context.ok('');
  },
};

async function listing(
  context: CommandContext,
  arg: string | undefined,
  value: (tx: Transaction, index: number) => string,
  status: (count: number) => string,
): Promise<void> {
  const tx = context.transaction;
  if (arg !== undefined) {
    const index = await messageIndex(context, arg);
    if (index === undefined) return;
    return context.ok(`${index + 1} ${value(tx, index)}`);
  }
  const lines: string[] = [];
  for (let i = 0; i < tx.messages.length; i++) {
    if (!tx.deleted.has(i)) lines.push(`${i + 1} ${value(tx, i)}`);
  }
  await context.send(multiLine(status(lines.length), lines));
}
