/**
 * UID SEARCH as one backend step: for the listing (every UID, when messages were added or
 * removed since the kept listing) and for the \Deleted flags of the messages a session is
 * about to flag. Where the server offers ESEARCH (RFC 4731), the answer comes as a sequence set
 * ("1:20000"), far shorter than the list of every UID.
 */
import type { ImapFlow, SearchObject } from 'imapflow';
import type { BackendSteps } from './backend-step.js';
import { parseUidSet } from './uid-set.js';

/** UIDs matching a search, ascending. */
export async function searchUids(
  client: ImapFlow,
  steps: BackendSteps,
  query: SearchObject,
  what: string,
): Promise<Uint32Array> {
  if (client.capabilities.has('ESEARCH')) {
    const result = await steps.run(what, () => client.search(query, { uid: true, returnOptions: ['ALL'] }));
    if (result === false || result === undefined) throw steps.failed(what);
    return Array.isArray(result) ? Uint32Array.from(result).sort() : parseUidSet(result.all ?? '');
  }
  const result = await steps.run(what, () => client.search(query, { uid: true }));
  if (result === false || result === undefined) throw steps.failed(what);
  return Uint32Array.from(result).sort();
}
