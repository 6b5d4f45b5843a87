/**
 * Where the kept mailbox listings are shared beyond this process. The IMAP backend only asks
 * for and offers listings through this interface; the replicas' store in Redis implements it
 * (src/shared/listing-store.ts), so the backend knows nothing of Redis and the arrows run one
 * way: shared/ depends on imap/, never the other way round.
 */
import type { CachedMailbox } from './snapshot-cache.js';

export interface SharedListings {
  /** The listing kept for this mailbox; undefined when there is none, Redis is away or late. Never rejects. */
  get(mailboxKey: string): Promise<CachedMailbox | undefined>;
  /** Keeps this listing for the next session, wherever it lands. Fire and forget: never rejects. */
  set(mailboxKey: string, listing: CachedMailbox): void;
}
