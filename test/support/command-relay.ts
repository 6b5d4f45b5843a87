/**
 * A loopback TCP relay in front of an IMAP server that passes every byte through unchanged and
 * notes the lines clients send (each line as sent, literals included), so that a test can count
 * the commands a proxy issued between two moments: `mark()`, then `since(mark)`.
 */
import { listenRelay } from './tcp-relay.js';

export interface CommandRelay {
  readonly port: number;
  /** Every line clients sent so far, over all connections, without CRLF. */
  readonly lines: readonly string[];
  /** A position in `lines`, for `since`. */
  mark(): number;
  /** The lines sent after `mark`. */
  since(mark: number): string[];
  close(): Promise<void>;
}

/** A full listing: `FETCH 1:*` by sequence numbers (`UID FETCH` of chosen UIDs is not one). */
export const FULL_FETCH = /^\S+ FETCH 1:\* /i;

export async function startCommandRelay(targetPort: number, targetHost = '127.0.0.1'): Promise<CommandRelay> {
  const lines: string[] = [];
  const relay = await listenRelay(targetPort, targetHost, (client, upstream) => {
    let partial = '';
    client.on('data', (d: Buffer) => {
      upstream.write(d);
      partial += d.toString('latin1');
      for (let end = partial.indexOf('\r\n'); end >= 0; end = partial.indexOf('\r\n')) {
        lines.push(partial.slice(0, end));
        partial = partial.slice(end + 2);
      }
    });
    upstream.on('data', (d: Buffer) => client.write(d));
  });
  return {
    port: relay.port,
    lines,
    mark: () => lines.length,
    since: (mark) => lines.slice(mark),
    close: relay.close,
  };
}
