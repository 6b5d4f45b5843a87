/**
 * Makes sure the Debian packages the tests need are installed, by running
 * scripts/system-deps.sh once per process.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const SCRIPT = join('scripts', 'system-deps.sh');

let checked = false;

/** The repository root: the nearest directory above `start` holding package.json and the script. */
function findRoot(start: string): string | undefined {
  let dir = resolve(start);
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, SCRIPT))) return dir;
    const parent = dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

export function repoRoot(): string {
  const root = findRoot(dirname(fileURLToPath(import.meta.url))) ?? findRoot(process.cwd());
  if (root === undefined) throw new Error(`cannot find the repository root (no ${SCRIPT} above ${fileURLToPath(import.meta.url)} or ${process.cwd()})`);
  return root;
}

/**
 * Runs scripts/system-deps.sh (installing missing packages when root) the first time it is
 * called in a process; throws with the script's error output when packages are still missing.
 */
export function ensureSystemDeps(): void {
  if (checked) return;
  const script = join(repoRoot(), SCRIPT);
  const result = spawnSync('bash', [script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * 1024 * 1024 });
  if (result.error) throw new Error(`${script} could not run: ${result.error.message}`);
  if (result.status !== 0) {
    let stderr = result.stderr.trim();
    if (stderr.length > 8000) stderr = `...${stderr.slice(-8000)}`;
    throw new Error(`${script} failed (${result.signal ?? `exit ${result.status}`})${stderr ? `: ${stderr}` : ''}`);
  }
  checked = true;
}
