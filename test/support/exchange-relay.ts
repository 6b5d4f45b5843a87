/**
 * A loopback TCP relay in front of the test Dovecot's IMAP port that makes it look like
 * Exchange Online (or, with options, like another server with fewer extensions):
 *
 * - Every capability list the server sends (the untagged CAPABILITY line, [CAPABILITY ...] in
 *   the greeting and in tagged OKs) is replaced by Exchange Online's: `IMAP4 IMAP4rev1
 *   AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+`
 *   (no CONDSTORE, no ESEARCH, no ENABLE). The HIGHESTMODSEQ and NOMODSEQ codes of SELECT are
 *   taken out with them.
 * - RFC822.SIZE in FETCH responses becomes an estimate (by default 3 % more, at least 1 octet),
 *   as Exchange Online reports it; the message bytes themselves (BODY[] literals) are untouched.
 * - With `stripUidNext`, SELECT's `* OK [UIDNEXT n]` line is taken out (Courier-IMAP sends none).
 * - On demand, the next login is answered with a chosen line (an outage, a wrong password,
 *   throttling) instead of the server's, and the next client command matching a pattern is
 *   answered as Exchange answers a throttled client: `<tag> BAD Request is throttled. Suggested
 *   Backoff Time: N milliseconds`, `* BYE Connection closed. 14`, and the connection closed.
 *
 * Both directions are parsed with ImapSplitter (literals passed through byte-exact).
 */
import type net from 'node:net';
import { ImapSplitter } from './gmail-relay.js';
import { listenRelay } from './tcp-relay.js';

export const EXCHANGE_CAPABILITIES = 'IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+';
export const EXCHANGE_BYE = '* BYE Connection closed. 14';

/** Exchange's estimate: 3 % over, at least one octet, so that it is never right. */
export const estimateSize = (size: number): number => size + Math.max(1, Math.round(size * 0.03));

export interface ExchangeRelayOptions {
  /** The capability list to advertise; default Exchange Online's. */
  capabilities?: string;
  /** Take UIDNEXT out of SELECT answers. Default false. */
  stripUidNext?: boolean;
  /** RFC822.SIZE as reported, from the true size; default estimateSize. */
  reportSize?: (size: number) => number;
}

export interface LoginAnswer {
  /** Status and text after the tag, e.g. `NO Server Unavailable. 15`. */
  readonly answer: string;
  /** Then this untagged BYE line and a closed connection. */
  readonly bye?: string;
}

export interface ExchangeRelay {
  readonly port: number;
  /** Connections opened so far. */
  readonly connections: number;
  /** Command lines (first lines only) the relay has seen from clients, over all connections. */
  readonly commands: readonly string[];
  /** The next LOGIN or AUTHENTICATE is answered this way instead of as the server answered it. */
  failNextLogin(answer: LoginAnswer): void;
  /**
   * The next client command matching `pattern` never reaches the server: it is answered as
   * throttled, with this suggested backoff, then BYE, and the connection is closed.
   */
  throttleNext(pattern: RegExp, backoffMs: number): void;
  close(): Promise<void>;
}

const LOGIN = /^(\S+) (?:LOGIN|AUTHENTICATE) /i;

/** A server line (without literals) as the relay passes it on; undefined to drop it. */
function rewriteServerLine(text: string, options: Required<ExchangeRelayOptions>): string | undefined {
  if (/^\* OK \[(?:HIGHESTMODSEQ \d+|NOMODSEQ)\]/i.test(text)) return undefined;
  if (options.stripUidNext && /^\* OK \[UIDNEXT \d+\]/i.test(text)) return undefined;
  let out = text;
  const untagged = /^(\* CAPABILITY )([^\r\n]*)(\r?\n)$/i.exec(out);
  if (untagged) out = untagged[1] + options.capabilities + untagged[3];
  out = out.replace(/\[CAPABILITY [^\]]*\]/i, `[CAPABILITY ${options.capabilities}]`);
  return out.replace(/\bRFC822\.SIZE (\d+)/gi, (_, size: string) => `RFC822.SIZE ${options.reportSize(Number(size))}`);
}

export async function startExchangeRelay(targetPort: number, relayOptions: ExchangeRelayOptions = {}, targetHost = '127.0.0.1'): Promise<ExchangeRelay> {
  const options: Required<ExchangeRelayOptions> = {
    capabilities: relayOptions.capabilities ?? EXCHANGE_CAPABILITIES,
    stripUidNext: relayOptions.stripUidNext ?? false,
    reportSize: relayOptions.reportSize ?? estimateSize,
  };
  const commands: string[] = [];
  let loginAnswer: LoginAnswer | undefined;
  let throttle: { pattern: RegExp; backoffMs: number } | undefined;

  /** Writes the last lines to the client and closes both sides once they are out. */
  const hangUp = (client: net.Socket, upstream: net.Socket, lines: string[]) => {
    client.end(lines.map((l) => `${l}\r\n`).join(''), () => upstream.destroy());
  };

  const relay = await listenRelay(targetPort, targetHost, (client, upstream) => {
    /** The tag of this connection's login, when its answer is to be replaced. */
    let loginTag: { tag: string; answer: LoginAnswer } | undefined;
    /** Set once the relay has said goodbye for the server: nothing more is passed on. */
    let closing = false;
    /** Whether the lines of the current client command are being swallowed. */
    let swallowing = false;

    const fromClient = new ImapSplitter(
      (line, starts) => {
        if (closing) return;
        if (!starts) {
          if (!swallowing) upstream.write(line);
          return;
        }
        swallowing = false;
        const text = line.toString('latin1');
        commands.push(text.trimEnd());
        const tag = text.slice(0, text.indexOf(' '));
        if (throttle !== undefined && throttle.pattern.test(text)) {
          const { backoffMs } = throttle;
          throttle = undefined;
          swallowing = true;
          closing = true;
          hangUp(client, upstream, [`${tag} BAD Request is throttled. Suggested Backoff Time: ${backoffMs} milliseconds`, EXCHANGE_BYE]);
          return;
        }
        const login = LOGIN.exec(text);
        if (login && loginAnswer !== undefined) {
          loginTag = { tag: login[1]!, answer: loginAnswer };
          loginAnswer = undefined;
        }
        upstream.write(line);
      },
      (bytes) => {
        if (!closing && !swallowing) upstream.write(bytes);
      },
    );

    const fromServer = new ImapSplitter(
      (line, starts) => {
        if (closing) return;
        const text = line.toString('latin1');
        if (starts && loginTag !== undefined && text.startsWith(`${loginTag.tag} `)) {
          const { tag, answer } = loginTag;
          loginTag = undefined;
          if (answer.bye !== undefined) {
            closing = true;
            hangUp(client, upstream, [`${tag} ${answer.answer}`, answer.bye]);
            return;
          }
          client.write(`${tag} ${answer.answer}\r\n`);
          return;
        }
        const out = rewriteServerLine(text, options);
        if (out !== undefined) client.write(Buffer.from(out, 'latin1'));
      },
      (bytes) => {
        if (!closing) client.write(bytes);
      },
    );

    client.on('data', (d: Buffer) => fromClient.push(d));
    upstream.on('data', (d: Buffer) => fromServer.push(d));
  });

  return {
    port: relay.port,
    get connections() {
      return relay.connections;
    },
    commands,
    failNextLogin(answer: LoginAnswer) {
      loginAnswer = answer;
    },
    throttleNext(pattern: RegExp, backoffMs: number) {
      throttle = { pattern, backoffMs };
    },
    close: relay.close,
  };
}
