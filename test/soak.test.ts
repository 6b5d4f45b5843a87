/**
 * A short soak (test/soak/): about 60 s of POP3 clients against the real Dovecot through the
 * lone proxy and the two replicas sharing Redis, all real CLI processes, while every fault kind
 * is injected (proxy SIGKILL and SIGTERM, an imap process killed, the backend stalled,
 * Exchange's throttle answer in a FETCH, Redis restarted, mail delivered mid-session).
 * Every invariant must hold, and every fault kind must have been injected at least once.
 * `npm run soak -- --duration 300` runs the same for longer.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FAULT_KINDS } from './soak/injector.js';
import { parseSoakOptions } from './soak/options.js';
import { runSoak } from './soak/run.js';

/** 60 s of clients, their sessions' ends, settling, the lock TTL and the final reads: about 2 minutes. */
const TIMEOUT_MS = 8 * 60_000;

test('soak: 60 s of clients and faults through one proxy and two replicas, every invariant holds', { timeout: TIMEOUT_MS }, async (t) => {
  // Fewer clients than `npm run soak`: other test files run beside this one.
  // Faults a little closer together than by default, so every kind has its turn (some twice).
  const options = parseSoakOptions([], {}, { durationS: 60, clients: 4, users: 8, seed: 1, faultGapS: [1, 2.5] });
  const report = await runSoak(options, () => undefined);
  for (const line of report.text.split('\n')) t.diagnostic(line);
  assert.deepEqual(report.violations, [], report.text);
  for (const kind of FAULT_KINDS) assert.ok(report.faults[kind] >= 1, `fault ${kind} was never injected:\n${report.text}`);
});
