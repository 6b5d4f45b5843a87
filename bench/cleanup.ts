/**
 * Everything the benchmark starts (Dovecot, the proxy processes) registers how to
 * stop it here, so that a failure or Ctrl-C leaves no process or temp directory behind.
 */

type Task = () => Promise<void> | void;

const tasks = new Set<Task>();
let installed = false;

/** Registers a cleanup task; the returned function unregisters it (call it once stopped normally). */
export function onCleanup(task: Task): () => void {
  tasks.add(task);
  return () => {
    tasks.delete(task);
  };
}

/** Runs every registered task, newest first; failures are reported, not thrown. */
export async function runCleanups(): Promise<void> {
  const pending = [...tasks].reverse();
  tasks.clear();
  for (const task of pending) {
    try {
      await task();
    } catch (err) {
      process.stderr.write(`cleanup failed: ${(err as Error).message}\n`);
    }
  }
}

/** On SIGINT/SIGTERM: clean up, then exit with the conventional 128+signal status. */
export function installSignalHandlers(): void {
  if (installed) return;
  installed = true;
  let stopping = false;
  const handler = (signal: NodeJS.Signals, status: number) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`\n${signal}: stopping the benchmark and cleaning up\n`);
    // A cleanup that hangs must not keep the benchmark alive forever.
    setTimeout(() => process.exit(status), 30_000).unref();
    void runCleanups().finally(() => process.exit(status));
  };
  process.on('SIGINT', () => handler('SIGINT', 130));
  process.on('SIGTERM', () => handler('SIGTERM', 143));
}
