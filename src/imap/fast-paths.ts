/**
 * The proxy's hooks into imapflow's internals, and whether the installed imapflow fits each.
 * They are fast paths, never the only way: each is checked once against a sample connection
 * object (made, never connected), and one that does not fit is switched off with one warning
 * and a metric, the proxy then doing that part imapflow's own way. A release of imapflow that
 * renames what a hook relies on costs speed, never a login.
 *
 * - literal-tap: message bodies taken out of the response stream as they arrive (literal-tap.ts);
 * - login-diet: the round trips cut from imapflow's login (imap-client.ts);
 * - busy-check: whether a connection is between commands, before it is kept for reuse.
 */
import { ImapFlow } from 'imapflow';
import type { Logger } from 'winston';
import { loginDietFits } from './imap-client.js';
import { LiteralTap } from './literal-tap.js';

export type FastPathHook = 'literal-tap' | 'login-diet' | 'busy-check';

export type FastPaths = Readonly<Record<FastPathHook, boolean>>;

/** What each hook relies on, looked for on `client` (an ImapFlow, or what stands for one in a test). */
export function inspectFastPaths(client: object): FastPaths {
  return {
    'literal-tap': LiteralTap.fits(client),
    'login-diet': loginDietFits(client),
    'busy-check': typeof (client as { connectionBusy?: unknown }).connectionBusy === 'function',
  };
}

let installed: FastPaths | undefined;

/** The verdict for the installed imapflow, found once per process. */
export function fastPaths(): FastPaths {
  installed ??= inspectFastPaths(new ImapFlow({ host: '127.0.0.1', port: 1, logger: false }));
  return installed;
}

/** Says at start which hooks are off (one warning each) and sets pop3proxy_fast_path. */
export function reportFastPaths(
  logger: Logger,
  gauge: (hook: FastPathHook, on: boolean) => void,
  paths: FastPaths = fastPaths(),
): void {
  for (const [hook, on] of Object.entries(paths) as [FastPathHook, boolean][]) {
    gauge(hook, on);
    if (!on) {
      logger.warn(
        `Fast path ${hook} is off: the installed imapflow does not have the internals it relies on; ` +
          "imapflow's own way is used",
      );
    }
  }
}

/**
 * Whether a connection is in the middle of a command: without the internal to ask, it is taken
 * to be, so that it is never kept for another session.
 */
export function connectionBusy(client: ImapFlow, paths: FastPaths = fastPaths()): boolean {
  if (!paths['busy-check']) return true;
  return (client as unknown as { connectionBusy: () => boolean }).connectionBusy() === true;
}
