/**
 * What a server's NO or BAD (or BYE) means for the POP3 client: wrong credentials, try again
 * later, or a refusal that retrying will not change.
 *
 * The RFC 5530 response code decides first. Where a server sends none (Exchange Online never
 * does, Gmail often puts only [ALERT]), the text is looked up in a small table of the texts the
 * big services are known to send. Anything else is left to the caller's default (imapflow calls
 * every NO or BAD to a login an authentication failure).
 */
import type { FailureKind } from '../maildrop/errors.js';

/** RFC 5530 codes saying the credentials (or the token) are the problem. */
const CREDENTIAL_CODES = new Set(['AUTHENTICATIONFAILED', 'AUTHORIZATIONFAILED', 'EXPIRED']);
/**
 * RFC 5530 codes saying it may work later. OVERQUOTA is here because Gmail answers with it
 * when an account has used up its daily IMAP download allowance ("Account exceeded command or
 * bandwidth limits"), which ends by itself.
 */
const TEMPORARY_CODES = new Set(['UNAVAILABLE', 'SERVERBUG', 'LIMIT', 'INUSE', 'OVERQUOTA']);
/** RFC 5530 codes that retrying will not change: the administrator or the configuration must. */
const PERMANENT_CODES = new Set(['PRIVACYREQUIRED', 'CONTACTADMIN', 'NOPERM', 'NONEXISTENT', 'CORRUPTION']);

export interface KnownFailureText {
  /** Whose server sends it. */
  readonly service: string;
  /** Matched against the response text (after the tag, status and any response code). */
  readonly pattern: RegExp;
  readonly kind: FailureKind;
  /** What it means, for the log. */
  readonly meaning: string;
}

/**
 * Texts sent without an RFC 5530 code. Kept small: only texts seen from the services
 * themselves, each with the service named.
 */
export const FAILURE_TEXTS: readonly KnownFailureText[] = [
  // Exchange Online: throttling, `<tag> BAD Request is throttled. Suggested Backoff Time: N
  // milliseconds`, followed by `* BYE Connection closed. 14`.
  { service: 'Exchange Online', pattern: /\bRequest is throttled\b/i, kind: 'temporary', meaning: 'throttled' },
  // Exchange Online: an outage, `NO Server Unavailable. 15` (POP3 says `-ERR Server Unavailable. 21`).
  {
    service: 'Exchange Online',
    pattern: /^Server Unavailable\.(?:\s+\d+)?$/i,
    kind: 'temporary',
    meaning: 'server unavailable',
  },
  // Exchange Online: a wrong password (LOGIN) or a rejected token (AUTHENTICATE XOAUTH2).
  {
    service: 'Exchange Online',
    pattern: /^(?:LOGIN|AUTHENTICATE) failed\.?$/i,
    kind: 'credentials',
    meaning: 'login rejected',
  },
  // Exchange Online: `BAD User is authenticated but not connected.` to the first command after
  // a login it accepted: a wrong password it let through, or a token or service principal
  // without access to the mailbox.
  {
    service: 'Exchange Online',
    pattern: /^User is authenticated but not connected\.?$/i,
    kind: 'credentials',
    meaning: 'authenticated but no access to the mailbox',
  },
  // Gmail: `NO [ALERT] Too many simultaneous connections. (Failure)`: about 15 per account.
  {
    service: 'Gmail',
    pattern: /\bToo many simultaneous connections\b/i,
    kind: 'temporary',
    meaning: 'too many connections',
  },
  // Gmail: `NO [ALERT] Application-specific password required: https://... (Failure)` (an
  // account with 2-step verification), `NO [ALERT] Please log in via your web browser ...` and
  // `NO [WEBALERT https://...] Web login required.`: the user must act, not wait.
  {
    service: 'Gmail',
    pattern: /\bApplication-specific password required\b/i,
    kind: 'credentials',
    meaning: 'app password required',
  },
  {
    service: 'Gmail',
    pattern: /\b(?:Please log in via your web browser|Web login required)\b/i,
    kind: 'credentials',
    meaning: 'web login required',
  },
];

/** The server's "Suggested Backoff Time: N milliseconds" (Exchange Online), in ms. */
export function suggestedBackoffMs(text: string | undefined): number | undefined {
  const m = /\bSuggested Backoff Time:?\s*(\d{1,10})\s*(?:milliseconds|ms)\b/i.exec(text ?? '');
  if (!m) return undefined;
  const ms = Number(m[1]);
  return Number.isSafeInteger(ms) && ms > 0 ? ms : undefined;
}

export interface ServerFailure {
  readonly kind: FailureKind;
  /** The code or the table entry that decided it, for messages and logs. */
  readonly reason: string;
  /** How long the server asked us to stay away, when it said. */
  readonly backoffMs?: number;
}

/**
 * The meaning of a refusal from its RFC 5530 code (`code`, without brackets) or, when the code
 * says nothing, its text; undefined when neither is known.
 */
export function classifyServerFailure(code: string | undefined, text: string | undefined): ServerFailure | undefined {
  const backoffMs = suggestedBackoffMs(text);
  const withBackoff = (kind: FailureKind, reason: string): ServerFailure =>
    backoffMs === undefined ? { kind, reason } : { kind, reason, backoffMs };
  const upper = (code ?? '').trim().toUpperCase();
  if (CREDENTIAL_CODES.has(upper)) return withBackoff('credentials', upper);
  if (TEMPORARY_CODES.has(upper)) return withBackoff('temporary', upper);
  if (PERMANENT_CODES.has(upper)) return withBackoff('permanent', upper);
  const trimmed = stripResponseCode(text ?? '').trim();
  if (trimmed !== '') {
    for (const entry of FAILURE_TEXTS) {
      if (entry.pattern.test(trimmed)) return withBackoff(entry.kind, `${entry.service}: ${entry.meaning}`);
    }
  }
  if (backoffMs !== undefined) return { kind: 'temporary', reason: 'backoff suggested', backoffMs };
  return undefined;
}

/** The text without a leading `[CODE ...]`, should the caller have left it on. */
function stripResponseCode(text: string): string {
  return text.replace(/^\s*\[[^\]]*\]\s*/, '');
}
