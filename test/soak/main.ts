/**
 * `npm run soak -- [--duration S] [--clients N] [--seed N] ...`: runs the soak once, prints
 * its summary and exits 0 when every invariant held, 1 on any violation, 2 on a bad flag or a
 * soak that could not run. Ctrl-C ends the run early (the checks still run on what was seen).
 */
import { parseSoakOptions, USAGE } from './options.js';
import { runSoak } from './run.js';
import { errorText } from './util.js';

async function main(): Promise<number> {
  if (process.argv.includes('--help')) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  let options;
  try {
    options = parseSoakOptions(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${errorText(err)}\n`);
    return 2;
  }
  const abort = new AbortController();
  process.once('SIGINT', () => {
    process.stderr.write('SIGINT: ending the run early\n');
    abort.abort();
  });
  process.stdout.write(`soak: seed ${options.seed}, ${options.durationS} s, ${options.clients} clients, ${options.users} mailboxes\n`);
  try {
    const report = await runSoak(options, (line) => process.stdout.write(`${line}\n`), abort.signal);
    process.stdout.write(`${report.text}\n`);
    return report.violations.length === 0 ? 0 : 1;
  } catch (err) {
    process.stderr.write(`the soak could not run: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return 2;
  }
}

// Exit explicitly: a stray handle of a stopped server must not keep the process alive.
main().then((code) => process.exit(code), (err: unknown) => {
  process.stderr.write(`${errorText(err)}\n`);
  process.exit(2);
});
