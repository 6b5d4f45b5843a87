/**
 * The last resort, not the mechanism: every stream, socket and emitter has its error handled
 * where it is made. An error that still escapes (a bug, or a library emitting where it never
 * did before) is logged once with its stack and the session it belongs to, counted, and ends
 * only that session when it can be told; the process goes on serving everyone else. Without
 * this, Node ends the process, and with it every session on it.
 */
import type { Logger } from 'winston';
import { currentSession } from './session-context.js';

export interface UnexpectedErrorHandling {
  /** Counts one error (pop3proxy_unexpected_errors_total). */
  readonly count: (kind: 'exception' | 'rejection') => void;
}

/** Handles one escaped error: logs, counts, and ends the session it came from. */
export function handleUnexpected(
  err: unknown,
  kind: 'exception' | 'rejection',
  logger: Logger,
  handling: UnexpectedErrorHandling,
): void {
  const session = currentSession();
  const stack = err instanceof Error ? (err.stack ?? `${err.name}: ${err.message}`) : String(err);
  const what = kind === 'exception' ? 'An uncaught exception' : 'An unhandled promise rejection';
  const whose =
    session === undefined
      ? 'no session could be told; the process goes on'
      : 'its session is ended; the process goes on';
  logger.error(`${what} escaped all handling (${whose}): ${stack}`, { event: 'unexpected-error', kind });
  handling.count(kind);
  try {
    session?.abort(err);
  } catch (abortErr) {
    logger.error(`Ending the session after an unexpected error failed: ${String(abortErr)}`);
  }
}

/** Installs the last resort for the whole process. */
export function installLastResort(logger: Logger, handling: UnexpectedErrorHandling): void {
  process.on('uncaughtException', (err) => handleUnexpected(err, 'exception', logger, handling));
  process.on('unhandledRejection', (reason) => handleUnexpected(reason, 'rejection', logger, handling));
}
