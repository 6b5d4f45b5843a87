/**
 * A reply the front door gives a client instead of going on: the code, the enhanced status
 * code (RFC 3463) and the text. smtp-server takes an Error with a responseCode; the enhanced
 * code leads the text, and the front door tells smtp-server not to add one of its own.
 */
export class SmtpReply extends Error {
  readonly responseCode: number;

  constructor(
    code: number,
    readonly enhanced: string,
    readonly text: string,
    /** The connection is closed after this reply (too many failed logins). */
    readonly last = false,
  ) {
    super(`${enhanced} ${text}`);
    this.name = 'SmtpReply';
    this.responseCode = code;
  }
}

/** Text that starts with an enhanced status code: smtp-server must not add another. */
export const LEADING_ENHANCED = /^[245]\.\d{1,3}\.\d{1,3} /;
