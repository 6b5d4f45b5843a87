import type { Command } from '../command-parser.js';
import type { Pop3Session, SessionState } from '../session.js';

/** One POP3 command: where it is allowed, how many arguments it takes, and what it does. */
export interface CommandHandler {
  readonly states: readonly SessionState[];
  acceptsArgs(count: number): boolean;
  run(session: Pop3Session, command: Command): Promise<void>;
}

export const args = {
  none: (n: number) => n === 0,
  one: (n: number) => n === 1,
  two: (n: number) => n === 2,
  optional: (n: number) => n <= 1,
  any: () => true,
};
