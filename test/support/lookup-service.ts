/**
 * A routing lookup service in the shape of nginx mail's auth_http, for tests: a real HTTP
 * server on loopback that records every request's headers and answers with the headers a test
 * sets per user (Auth-Status, Auth-Profile, Auth-User, Auth-Wait), after an optional delay.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface LookupRequest {
  readonly method: string;
  /** Request headers, names in lower case. */
  readonly headers: Readonly<Record<string, string>>;
  readonly at: number;
}

export type LookupAnswer = Record<string, string>;

export interface LookupService {
  readonly url: string;
  readonly requests: readonly LookupRequest[];
  /** The answer for a user (the Auth-User header as sent, percent-decoded); default: `fallback`. */
  answer(user: string, headers: LookupAnswer): void;
  /** Milliseconds before each answer. */
  setDelay(ms: number): void;
  close(): Promise<void>;
}

export async function startLookupService(fallback: LookupAnswer = { 'Auth-Status': 'Invalid login or password' }): Promise<LookupService> {
  const answers = new Map<string, LookupAnswer>();
  const requests: LookupRequest[] = [];
  let delayMs = 0;
  const server = http.createServer((req, res) => {
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(req.headers)) headers[name] = Array.isArray(value) ? value.join(', ') : (value ?? '');
    requests.push({ method: req.method ?? '', headers, at: Date.now() });
    const user = decodeURIComponent(headers['auth-user'] ?? '');
    const answer = answers.get(user) ?? fallback;
    setTimeout(() => {
      if (res.destroyed) return;
      res.writeHead(200, { 'Content-Type': 'text/plain', ...answer });
      res.end();
    }, delayMs);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/auth`;
  return {
    url,
    requests,
    answer: (user, headers) => void answers.set(user, headers),
    setDelay: (ms) => void (delayMs = ms),
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
