/**
 * What this session did with the \Deleted flag, so that it takes back exactly its own flags:
 * a flag another IMAP client set must never be cleared by RSET or an abandoned session. Two
 * sets of UIDs: those this session flagged that did not carry the flag before (ours to take
 * back), and those that carried it before this session flagged anything. Which ones carried it
 * comes from the listing when it told (a listing proved by HIGHESTMODSEQ, or a full FETCH);
 * otherwise the server is asked just before a UID is flagged for the first time, and only
 * once for each UID.
 *
 * Bookkeeping only: it sends nothing. deleted-flags.ts asks the server and stores the flags.
 */
export class DeletionLedger {
  /** UIDs this session flagged \Deleted that did not carry the flag before: ours to take back. */
  private readonly ours = new Set<number>();
  /** UIDs that already carried \Deleted before this session flagged them. */
  private readonly before = new Set<number>();
  /** Whether `before` is complete for the session's messages (the listing told their flags). */
  private beforeKnown = false;
  /** UIDs whose earlier \Deleted flag the server was asked for (the listing did not tell). */
  private readonly asked = new Set<number>();

  /**
   * What the listing told about the session's messages: the UIDs among them that carry
   * \Deleted, or undefined when it does not know the flags (then they are asked as needed).
   */
  listed(uids: Iterable<number>, deleted: ReadonlySet<number> | undefined): void {
    for (const uid of uids) if (deleted?.has(uid)) this.before.add(uid);
    this.beforeKnown = deleted !== undefined;
  }

  /** Of these UIDs about to be flagged, those whose earlier flag must first be asked of the server. */
  unknown(uids: readonly number[]): number[] {
    if (this.beforeKnown) return [];
    return uids.filter((uid) => !this.before.has(uid) && !this.ours.has(uid) && !this.asked.has(uid));
  }

  /** The server's answer about `asked` (from unknown()): those in `flagged` carried \Deleted already. */
  answered(asked: readonly number[], flagged: Iterable<number>): void {
    for (const uid of flagged) this.before.add(uid);
    for (const uid of asked) this.asked.add(uid);
  }

  /**
   * These UIDs are about to be flagged: those that did not carry \Deleted before become ours.
   * Called before the STORE is sent, so that an abandon racing with it still takes it back.
   */
  flagging(uids: readonly number[]): void {
    for (const uid of uids) if (!this.before.has(uid)) this.ours.add(uid);
  }

  /** Of these UIDs, those whose flag is ours to take back. */
  oursAmong(uids: readonly number[]): number[] {
    return uids.filter((uid) => this.ours.has(uid));
  }

  /** How many flags of ours are on the server now. */
  get size(): number {
    return this.ours.size;
  }

  /** These flags were taken back (RSET): no longer ours. */
  forget(uids: readonly number[]): void {
    for (const uid of uids) this.ours.delete(uid);
  }

  /** Every flag of ours, now no longer counted as ours: the caller takes them back. */
  takeAll(): number[] {
    const uids = [...this.ours];
    this.ours.clear();
    return uids;
  }

  /** The flags did their work (the commit is confirmed): nothing is ours to take back. */
  clear(): void {
    this.ours.clear();
  }
}
