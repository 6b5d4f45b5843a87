/**
 * One backend step (a command, or a few that do one thing) run with the backend timeout, its
 * time told for the metrics, and its failure turned into a MaildropError the POP3 side can
 * answer. The failure is classified by the server's RFC 5530 code or known text where it gave
 * one (failure-texts.ts), so that Exchange's "User is authenticated but not connected." right
 * after login counts as a credentials problem and a missing folder as a permanent one;
 * otherwise as temporary. Any failure marks the connection interrupted: it may be in the middle
 * of something, and is never kept for another session.
 */
import { MaildropError } from '../maildrop/errors.js';
import { serverFailureOf, withTimeout } from './imap-client.js';

/** Whether a connection can still carry commands (imapflow's `usable`). */
export interface Usable {
  readonly usable: boolean;
}

/** What the steps need of the session's backend connection. */
export interface StepConnection {
  /** The connection the steps run on now (a new login may replace it). */
  readonly client: Usable;
  /** A command failed or was cut short: the connection is not to be kept. */
  interrupt(): void;
}

export interface StepOptions {
  /** Longest wait for one step. */
  readonly timeoutMs: number;
  /** Told how long each step took (for metrics). */
  readonly onStep?: (step: string, seconds: number) => void;
}

export class BackendSteps {
  constructor(
    private readonly options: StepOptions,
    private readonly connection: StepConnection,
  ) {}

  /** Runs one step: `what` names it in the error and (without UIDs) in the metrics. */
  async run<T>(what: string, run: () => Promise<T>): Promise<T> {
    const started = performance.now();
    try {
      return await withTimeout(run(), this.options.timeoutMs, what);
    } catch (err) {
      this.connection.interrupt();
      throw stepError(what, err, !this.connection.client.usable);
    } finally {
      // UIDs are left out of the step's name: one series per kind of step.
      this.options.onStep?.(what.replace(/ UID \d+/, ''), (performance.now() - started) / 1000);
    }
  }

  /** A command imapflow answered with false (its way of saying the server refused it). */
  failed(what: string, client: Usable = this.connection.client): MaildropError {
    return new MaildropError('temporary', `${what} failed`, { fatal: !client.usable });
  }
}

/**
 * A step's failure as a MaildropError: one already classified is kept as it is; a message
 * cut short by the server (imapflow's DownloadIncomplete) is gone; the server's own refusal
 * is what its code or text says; anything else is temporary. `fatal`: the connection is no
 * longer usable, so the session cannot go on.
 */
export function stepError(what: string, err: unknown, fatal: boolean): MaildropError {
  if (err instanceof MaildropError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: string }).code;
  if (code === 'DownloadIncomplete') return new MaildropError('gone', `${what}: ${message}`, { cause: err });
  // imapflow's own mark for a SELECT of a folder the server does not have (it passes no code on).
  if ((err as { mailboxMissing?: unknown }).mailboxMissing === true) {
    const text = (err as { responseText?: unknown }).responseText;
    return new MaildropError('permanent', `${what}: no such folder${typeof text === 'string' ? ` (${text})` : ''}`, {
      cause: err,
      fatal,
    });
  }
  const failure = serverFailureOf(err);
  if (failure !== undefined) {
    const text = (err as { responseText?: unknown }).responseText;
    const said = typeof text === 'string' && text !== '' ? `: ${text}` : '';
    const refused = `${what}: the server refused (${failure.reason})${said}`;
    return new MaildropError(failure.kind, refused, { cause: err, fatal });
  }
  return new MaildropError('temporary', `${what}: ${message}`, { cause: err, fatal });
}
