/**
 * Token health an operator can alert on, per profile: every token request by result (ok, refused
 * by the endpoint, endpoint unreachable or failing) and when one last worked. Alert on
 * `time() - pop3proxy_token_last_success_timestamp_seconds > 3600` or on a rate of refusals.
 * Its own file beside metrics.ts, registered in the same registry.
 */
import { Counter, Gauge, type Registry } from 'prom-client';

export type TokenFetchResult = 'ok' | 'refused' | 'unreachable';

/** What the token grants report: one call per token request. */
export interface TokenEvents {
  fetched(profile: string, result: TokenFetchResult): void;
}

export class TokenMetrics implements TokenEvents {
  private readonly fetches: Counter;
  private readonly lastSuccess: Gauge;

  constructor(registry: Registry) {
    this.fetches = new Counter({
      name: 'pop3proxy_token_fetches_total',
      help:
        "Token requests to the profile's token endpoint, by result: ok, refused (the endpoint said no), " +
        'unreachable (no answer, or 5xx)',
      labelNames: ['profile', 'result'],
      registers: [registry],
    });
    this.lastSuccess = new Gauge({
      name: 'pop3proxy_token_last_success_timestamp_seconds',
      help: 'When a token request of the profile last worked (Unix time)',
      labelNames: ['profile'],
      registers: [registry],
    });
  }

  fetched(profile: string, result: TokenFetchResult): void {
    this.fetches.inc({ profile, result });
    if (result === 'ok') this.lastSuccess.set({ profile }, Date.now() / 1000);
  }
}
