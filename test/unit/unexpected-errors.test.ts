/**
 * The last resort: an exception or a rejection that escaped all handling, thrown while working
 * for a session, is logged once with its stack and the session's id, counted, and ends that
 * session alone; the process goes on. Run in a child process, with Node's own uncaught-error
 * machinery, not a simulation of it.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';

const src = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src');
const url = (module: string) => pathToFileURL(path.join(src, module)).href;

const SCRIPT = `
import { createLogger } from '${url('logging/logger.js')}';
import { runInSession } from '${url('logging/session-context.js')}';
import { installLastResort } from '${url('logging/unexpected-errors.js')}';
const logger = createLogger({ level: 'info', format: 'json' });
const counted = [];
installLastResort(logger, { count: (kind) => counted.push(kind) });
const ended = [];
const session = (cid) => ({ cid, abort: () => ended.push(cid) });
runInSession(session('sessionA'), () => setTimeout(() => { throw new Error('boom in a timer'); }, 10));
runInSession(session('sessionB'), () => setTimeout(() => void Promise.reject(new Error('rejected late')), 20));
setTimeout(() => { throw new Error('outside any session'); }, 30);
setTimeout(() => {
  logger.info('still serving', { counted, ended });
  setTimeout(() => process.exit(0), 50);
}, 200);
`;

test('escaped errors end only their own sessions, are logged with stack and id, counted, and the process goes on', { timeout: 30_000 }, async () => {
  const { stderr, code } = await new Promise<{ stderr: string; code: number | null }>((resolve) => {
    const child = execFile(process.execPath, ['--input-type=module', '-e', SCRIPT], { timeout: 20_000 }, (err, _stdout, stderr) =>
      resolve({ stderr, code: err === null ? 0 : ((err as { code?: number }).code ?? null) }),
    );
    child.stdin?.end();
  });
  assert.equal(code, 0, stderr);
  const entries = stderr.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const errors = entries.filter((e) => e.event === 'unexpected-error');
  assert.equal(errors.length, 3, 'each logged once');
  assert.equal(errors[0]!.cid, 'sessionA');
  assert.equal(errors[0]!.kind, 'exception');
  assert.match(String(errors[0]!.message), /An uncaught exception escaped all handling \(its session is ended; the process goes on\): Error: boom in a timer\\n {4}at /);
  assert.equal(errors[1]!.cid, 'sessionB');
  assert.equal(errors[1]!.kind, 'rejection');
  assert.equal(errors[2]!.cid, undefined);
  assert.match(String(errors[2]!.message), /no session could be told; the process goes on/);
  const last = entries.at(-1)!;
  assert.equal(last.message, 'still serving');
  assert.deepEqual(last.counted, ['exception', 'rejection', 'exception']);
  assert.deepEqual(last.ended, ['sessionA', 'sessionB']);
});
