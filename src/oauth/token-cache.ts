/**
 * Access tokens kept until shortly before they expire, fetched once per key however many
 * logins ask at the same time (one request for fifty concurrent logins), and dropped when the
 * backend refuses them. Pure: the fetching and the clock are given.
 */

export interface AccessToken {
  readonly value: string;
  /** When it stops working, in the clock's milliseconds. */
  readonly expiresAt: number;
}

interface Kept {
  readonly token: AccessToken;
  /** When to fetch a new one rather than hand this one out. */
  readonly renewAt: number;
}

/** A token is renewed this long before it expires, or halfway through a shorter life. */
const RENEW_BEFORE_MS = 5 * 60 * 1000;

export class TokenCache {
  private readonly kept = new Map<string, Kept>();
  private readonly inFlight = new Map<string, Promise<AccessToken>>();

  constructor(
    private readonly fetchToken: (key: string) => Promise<AccessToken>,
    private readonly now: () => number = Date.now,
  ) {}

  /** A token for `key`: the kept one while it is fresh, else one fetch shared by every caller. */
  async get(key: string): Promise<string> {
    const kept = this.kept.get(key);
    if (kept && this.now() < kept.renewAt) return kept.token.value;
    return (await this.fetchOnce(key)).value;
  }

  /** Forgets `value` for `key` (the backend refused it), unless a newer token replaced it already. */
  invalidate(key: string, value: string): void {
    if (this.kept.get(key)?.token.value === value) this.kept.delete(key);
  }

  get size(): number {
    return this.kept.size;
  }

  private fetchOnce(key: string): Promise<AccessToken> {
    const running = this.inFlight.get(key);
    if (running) return running;
    const fetched = this.fetchToken(key)
      .then((token) => {
        this.keep(key, token);
        return token;
      })
      .finally(() => this.inFlight.delete(key));
    this.inFlight.set(key, fetched);
    return fetched;
  }

  private keep(key: string, token: AccessToken): void {
    const now = this.now();
    const life = token.expiresAt - now;
    this.kept.set(key, { token, renewAt: token.expiresAt - Math.min(RENEW_BEFORE_MS, life / 2) });
    // Expired entries of other keys go too, so that the map holds only live tokens.
    for (const [other, kept] of this.kept) if (kept.token.expiresAt <= now) this.kept.delete(other);
  }
}
