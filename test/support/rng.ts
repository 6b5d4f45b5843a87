/**
 * A seeded random generator (mulberry32) for the fuzz tests: a failing run is replayed with
 * SEED=<n>. Without SEED every run tries a new seed, and prints it.
 */
export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }

  /** Random octets, each satisfying `allowed` when given. */
  bytes(n: number, allowed?: (b: number) => boolean): Buffer {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) {
      let b = this.int(0, 255);
      while (allowed && !allowed(b)) b = this.int(0, 255);
      out[i] = b;
    }
    return out;
  }

  mixCase(s: string): string {
    return [...s].map((c) => (this.chance(0.5) ? c.toLowerCase() : c.toUpperCase())).join('');
  }

  /** A new seed drawn from this generator, for a sub-run that can be replayed alone. */
  seed(): number {
    return Math.floor(this.next() * 2 ** 32) >>> 0;
  }
}

/** SEED from the environment, or a fresh one. */
export function runSeed(): number {
  const given = process.env.SEED;
  return given !== undefined && given !== '' ? Number(given) >>> 0 : Math.floor(Math.random() * 2 ** 32) >>> 0;
}
