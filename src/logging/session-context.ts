/**
 * Which session the code now running works for. Each client connection gets a short random id
 * when it is accepted; everything done on its behalf (its commands, its backend connection,
 * the routing, the tokens, the locks) runs inside its context, so that every log line can name
 * it without each module being handed the id, and an error that escapes all handling can still
 * end the one session it belongs to (see unexpected-errors.ts).
 */
import { AsyncLocalStorage, AsyncResource } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';

export interface SessionContext {
  /** The session id: on every log line of the session, and sent to the backend in IMAP ID. */
  readonly cid: string;
  /** Ends the session after an error escaped its own handling. */
  readonly abort: (err: unknown) => void;
}

const storage = new AsyncLocalStorage<SessionContext>();

/** Eight characters of base64url: 48 random bits, short enough to grep for, unique enough for a log's lifetime. */
export function newSessionId(): string {
  return randomBytes(6).toString('base64url');
}

/** Runs `fn` (and everything it starts) as work of this session. */
export function runInSession<T>(context: SessionContext, fn: () => T): T {
  return storage.run(context, fn);
}

/** The session whose work is running now, if any. */
export function currentSession(): SessionContext | undefined {
  return storage.getStore();
}

/**
 * `listener`, bound to the session whose work is running now: for listeners on emitters made
 * elsewhere (an accepted socket), whose events would otherwise run outside the session.
 */
export function inThisSession<A extends unknown[], R>(listener: (...args: A) => R): (...args: A) => R {
  return AsyncResource.bind(listener);
}
