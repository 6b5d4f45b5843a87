/**
 * What QUIT does with the messages the session deleted, as --delete-mode says: expunge them
 * (UID EXPUNGE of exactly these UIDs), move them to a folder (keeping a copy), only leave
 * them flagged \Deleted for the server's own policy, or mark them \Seen and keep them. Each
 * touches exactly the UIDs it is given, never another message that carries \Deleted. A failure
 * part way leaves the flags it stored in the ledger, for the session's abandon to take back.
 */
import type { ImapFlow, ListResponse } from 'imapflow';
import type { Logger } from 'winston';
import { MaildropError } from '../maildrop/errors.js';
import type { BackendSteps } from './backend-step.js';
import type { DeletedFlags } from './deleted-flags.js';
import type { DeletionLedger } from './deletion-ledger.js';
import { ensureNamespace } from './imap-client.js';
import { uidSet } from './uid-set.js';

/**
 * Remove for good, move to a folder (keeping a copy), or only leave them flagged \Deleted.
 * A folder written as a special-use name (RFC 6154), such as `\Trash`, is the folder the server
 * flags with it: Gmail's is `[Gmail]/Trash`, or `[Gmail]/Papierkorb` on a German account.
 */
export type DeleteMode =
  | { readonly kind: 'expunge' }
  | { readonly kind: 'move'; readonly folder: string }
  | { readonly kind: 'flag' }
  | { readonly kind: 'seen' };

/** A special-use mailbox name (RFC 6154) such as \Trash, written with its backslash. */
const SPECIAL_USE_NAME = /^\\[A-Za-z]+$/;

/** What a commit works with: the session's connection, its steps and its \Deleted flags. */
export interface Committing {
  readonly client: ImapFlow;
  readonly steps: BackendSteps;
  readonly flags: DeletedFlags;
  readonly ledger: DeletionLedger;
  readonly logger: Logger;
}

/** Removes exactly these UIDs as `mode` says; resolves once the server confirmed it. */
export async function commitDeletions(mode: DeleteMode, uids: number[], session: Committing): Promise<void> {
  if (mode.kind === 'expunge') return expunge(uids, session);
  if (mode.kind === 'seen') return markSeen(uids, session);
  if (mode.kind === 'flag') {
    const done = await session.steps.run('flagging the deleted messages', () => session.flags.flag(uids));
    if (!done) throw session.steps.failed('flagging the deleted messages \\Deleted');
    return;
  }
  return move(mode.folder, uids, session);
}

/**
 * UID EXPUNGE of exactly these UIDs (imapflow stores \Deleted on them first). A server
 * without UIDPLUS only has plain EXPUNGE, which removes every \Deleted message in the
 * mailbox: it is used only when the flagged messages are all ours; otherwise nothing is
 * expunged and commit fails.
 */
async function expunge(uids: number[], session: Committing): Promise<void> {
  if (!session.client.capabilities.has('UIDPLUS')) await checkPlainExpungeIsSafe(uids, session);
  await session.flags.note(uids);
  const done = await session.steps.run('expunging', () => session.client.messageDelete(uidSet(uids), { uid: true }));
  if (!done) throw session.steps.failed('expunging the deleted messages');
}

async function checkPlainExpungeIsSafe(uids: number[], session: Committing): Promise<void> {
  const flagged = await session.steps.run('searching \\Deleted messages', () =>
    session.client.search({ deleted: true }, { uid: true }),
  );
  const ours = new Set(uids);
  const foreign = (flagged || []).filter((uid) => !ours.has(uid));
  if (foreign.length > 0) {
    throw new MaildropError(
      'permanent',
      `the mail server lacks UIDPLUS and ${foreign.length} other message(s) are flagged \\Deleted by another client; ` +
        'expunging would remove them too',
    );
  }
}

/**
 * Keep on server: the deleted messages get \Seen and stay (with --listing unseen, the next
 * session no longer lists them); a \Deleted flag the session stored at DELE is taken back.
 */
async function markSeen(uids: number[], session: Committing): Promise<void> {
  const done = await session.steps.run('marking the deleted messages seen', () =>
    session.client.messageFlagsAdd(uidSet(uids), ['\\Seen'], { uid: true }),
  );
  if (!done) throw session.steps.failed('marking the deleted messages \\Seen');
  await session.flags.remove(session.client, session.ledger.oursAmong(uids));
}

/** UID MOVE to the folder; the copy there carries no \Deleted flag of the session's. */
async function move(target: string, uids: number[], session: Committing): Promise<void> {
  // imapflow names folders with the personal namespace's prefix: ask it now if login did not.
  await session.steps.run('reading the namespace', () => ensureNamespace(session.client));
  // Resolved before anything is touched: if there is no such folder, nothing is removed.
  const folder = await moveTarget(target, session);
  // The copy in the folder must not carry a \Deleted flag the session set at DELE.
  await session.flags.remove(session.client, session.ledger.oursAmong(uids));
  const moved = await session.steps.run(`moving to ${folder}`, () =>
    session.client.messageMove(uidSet(uids), folder, { uid: true }),
  );
  if (!moved) throw session.steps.failed(`moving the deleted messages to ${folder}`);
}

/**
 * The folder to move to: the name as given, or for a special-use name (`\Trash`, RFC 6154)
 * the folder the server flags with it, looked up now (once, at QUIT, only when something is
 * to be moved). Only the server's own flag counts, never a guess from a folder's name.
 */
async function moveTarget(folder: string, session: Committing): Promise<string> {
  if (!SPECIAL_USE_NAME.test(folder)) return folder;
  const wanted = folder.toLowerCase();
  const folders = await session.steps.run(`looking up the ${folder} folder`, () => session.client.list());
  const flagged = (entry: ListResponse) => [...(entry.flags ?? [])].some((flag) => flag.toLowerCase() === wanted);
  const usable = (entry: ListResponse) => !entry.flags.has('\\NonExistent') && !entry.flags.has('\\Noselect');
  const found = folders.find((entry) => flagged(entry) && usable(entry));
  if (found === undefined) {
    throw new MaildropError(
      'permanent',
      `no folder on the mail server carries the special-use flag ${folder} (--delete-mode move:${folder}); ` +
        'nothing was removed',
    );
  }
  session.logger.debug(`--delete-mode move:${folder}: the folder flagged ${folder} is ${found.path}`);
  return found.path;
}
