import type { LockLease, LockRegistry } from './lock-registry.js';

/** A lock of this process alone is never lost. */
const NEVER_LOST = new AbortController().signal;

/** Locks held in this process only: right for a single proxy instance. */
export class MemoryLockRegistry implements LockRegistry {
  private readonly held = new Set<string>();

  async acquire(key: string): Promise<LockLease | undefined> {
    if (this.held.has(key)) return undefined;
    this.held.add(key);
    let released = false;
    return {
      lost: NEVER_LOST,
      release: async () => {
        if (released) return;
        released = true;
        this.held.delete(key);
      },
    };
  }

  get size(): number {
    return this.held.size;
  }
}
