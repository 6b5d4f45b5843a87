/**
 * What a session's log lines say of it: its commands (never a secret), and the one summary
 * line at its end, in words and as fields for the JSON format.
 */
import type { EndReason } from './command-context.js';
import type { Command } from './command-parser.js';

export interface SessionStats {
  retrieved: number;
  retrievedBytes: number;
  topped: number;
  toppedBytes: number;
  deleted: number;
  expunged: number;
}

export function noStats(): SessionStats {
  return { retrieved: 0, retrievedBytes: 0, topped: 0, toppedBytes: 0, deleted: 0, expunged: 0 };
}

/** A message RETR delivered whole, or the octets TOP sent. */
export function countDelivery(s: SessionStats, octets: number, whole: boolean): void {
  if (whole) {
    s.retrieved++;
    s.retrievedBytes += octets;
  } else {
    s.topped++;
    s.toppedBytes += octets;
  }
}

/** The end-of-session line: how it ended, what it did, how long it took. */
export function sessionSummary(reason: EndReason, s: SessionStats, ms: number): { message: string; fields: object } {
  const seconds = (ms / 1000).toFixed(3);
  const message =
    `Session ended: ${reason}, top=${s.topped}/${s.toppedBytes}, retr=${s.retrieved}/${s.retrievedBytes}, ` +
    `del=${s.deleted}, expunged=${s.expunged}, duration=${seconds}s`;
  return { message, fields: { event: 'session-end', reason, ...s, durationSeconds: Number(seconds) } };
}

/**
 * A command line as the log may show it: never a password, a SASL response (an AUTH initial
 * response carries credentials or a token), or an unknown line that might carry either.
 */
export function shownCommand(command: Command | undefined, line: Buffer): string {
  if (!command) return `<unrecognised line, ${line.length} bytes>`;
  if (command.verb === 'PASS') return 'PASS ***';
  // An APOP digest is derived from the password: no more fit for a log than the password.
  if (command.verb === 'APOP') return `APOP ${command.args[0] ?? ''} ***`.trim();
  if (command.verb === 'AUTH')
    return command.args.length > 1 ? `AUTH ${command.args[0]} ***` : `AUTH ${command.args.join(' ')}`.trim();
  return `${command.verb} ${command.args.join(' ')}`.trim();
}
