import type { LockLease, LockRegistry } from './lock-registry.js';

/** A lock of this process alone is never lost. */
const NEVER_LOST = new AbortController().signal;

/** Locks held in this process only: right for a single proxy instance. */
export class MemoryLockRegistry implements LockRegistry {
  private readonly held = new Set<string>();

  acquire(key: string): Promise<LockLease | undefined> {
    if (this.held.has(key)) return Promise.resolve(undefined);
    this.held.add(key);
    let released = false;
    return Promise.resolve({
      lost: NEVER_LOST,
      release: () => {
        if (!released) this.held.delete(key);
        released = true;
        return Promise.resolve();
      },
    });
  }

  get size(): number {
    return this.held.size;
  }
}
