/**
 * Values shared by the session, the connection and the command handlers. A leaf module: it
 * imports nothing of theirs, so that none of them imports another in a cycle.
 */

/** A write failed because the client is gone. */
export class ClientGoneError extends Error {
  constructor() {
    super('Client connection closed');
    this.name = 'ClientGoneError';
  }
}

/** An error's message, for a log line or a reply. */
export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
