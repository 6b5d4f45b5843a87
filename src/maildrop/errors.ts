/**
 * Failures of a mail store, classified by what the client should do about them.
 * - credentials: the store rejected the user's credentials.
 * - temporary: the store is unreachable, slow or failed; trying again later may work.
 * - permanent: the store refuses for a reason that retrying will not change.
 * - gone: the message no longer exists in the store.
 */
export type FailureKind = 'credentials' | 'temporary' | 'permanent' | 'gone';

export class MaildropError extends Error {
  readonly kind: FailureKind;
  /** True when the connection to the store is no longer usable: the session cannot go on. */
  readonly fatal: boolean;
  /**
   * What the client may be told, when it is about what the client itself asked for (a folder it
   * named); otherwise the message is for the log alone.
   */
  readonly clientText: string | undefined;

  constructor(
    kind: FailureKind,
    message: string,
    options: { fatal?: boolean; cause?: unknown; clientText?: string } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = 'MaildropError';
    this.kind = kind;
    this.fatal = options.fatal ?? false;
    this.clientText = options.clientText;
  }
}

export function isMaildropError(err: unknown): err is MaildropError {
  return err instanceof MaildropError;
}
