/**
 * The proxy as the real program (the built src/cli.js) in a process of its own, for tests that
 * kill it: started with the given flags only (no POP3PROXY_* variables of the environment),
 * resolved once it says that it listens, its stdout and stderr kept.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** build*\/test/support/ -> build*\/src/cli.js: the CLI compiled with these tests. */
const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli.js');
const LISTEN_TIMEOUT_MS = 20_000;
const EXIT_TIMEOUT_MS = 10_000;

export interface CliProcess {
  readonly child: ChildProcess;
  /** The POP3 port and, when asked for, the SMTP submission port, as the process logged them. */
  readonly pop3Port: number;
  readonly smtpPort: number | undefined;
  output(): string;
  exited(): boolean;
  /** SIGKILL, then waits (bounded) until the process is gone. */
  kill(): Promise<void>;
}

export async function startCli(args: string[]): Promise<CliProcess> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('POP3PROXY')));
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let output = '';
  let gone = false;
  const exit = new Promise<void>((resolve) => child.once('exit', () => ((gone = true), resolve())));
  const wantsSmtp = args.includes('--smtp-port') || args.includes('--smtp-tls-port');
  const ports = await new Promise<{ pop3: number; smtp: number | undefined }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the proxy did not listen within ${LISTEN_TIMEOUT_MS} ms; output:\n${output}`)), LISTEN_TIMEOUT_MS);
    const onData = (d: Buffer) => {
      output += d.toString();
      const pop3 = /POP3 listening on \S+:(\d+)/.exec(output);
      const smtp = /SMTP (?:over TLS )?listening on \S+:(\d+)/.exec(output);
      if (pop3 && (smtp || !wantsSmtp)) {
        clearTimeout(timer);
        resolve({ pop3: Number(pop3[1]), smtp: smtp ? Number(smtp[1]) : undefined });
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('error', (err) => (clearTimeout(timer), reject(err)));
    void exit.then(() => (clearTimeout(timer), reject(new Error(`the proxy exited before listening; output:\n${output}`))));
  }).catch((err: unknown) => {
    child.kill('SIGKILL');
    throw err;
  });
  return {
    child,
    pop3Port: ports.pop3,
    smtpPort: ports.smtp,
    output: () => output,
    exited: () => gone,
    kill: async () => {
      if (!gone) child.kill('SIGKILL');
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exit, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('the killed proxy did not exit')), EXIT_TIMEOUT_MS)))]).finally(() => clearTimeout(timer));
    },
  };
}
