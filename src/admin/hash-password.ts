/**
 * `pop3-imap-proxy hash-password`: prints the hash of a password read from standard input
 * (never from the command line, where other users and the shell history could see it), for
 * the users file. On a terminal the password is asked for twice, without echo.
 */
import { hashPassword } from '../auth/password-hash.js';

export async function hashPasswordCommand(
  input: NodeJS.ReadStream,
  output: NodeJS.WritableStream,
  errors: NodeJS.WritableStream,
): Promise<number> {
  const password = input.isTTY ? await askTwice(input, errors) : firstLine(await readAll(input));
  if (password === undefined) {
    errors.write('pop3-imap-proxy hash-password: the two passwords differ\n');
    return 1;
  }
  if (password.length === 0) {
    errors.write('pop3-imap-proxy hash-password: empty password (give it on standard input)\n');
    return 1;
  }
  output.write(`${await hashPassword(password)}\n`);
  return 0;
}

async function readAll(input: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of input) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
  return Buffer.concat(chunks).toString('utf8');
}

/** The password is the first line, without its line end: `echo secret | ...` works. */
function firstLine(text: string): string {
  return text.split(/\r?\n/, 1)[0];
}

async function askTwice(input: NodeJS.ReadStream, errors: NodeJS.WritableStream): Promise<string | undefined> {
  const first = await ask(input, errors, 'Password: ');
  const second = await ask(input, errors, 'Again: ');
  return first === second ? first : undefined;
}

/** Reads one line from a terminal in raw mode, echoing nothing. */
function ask(input: NodeJS.ReadStream, errors: NodeJS.WritableStream, prompt: string): Promise<string> {
  errors.write(prompt);
  input.setRawMode(true);
  input.resume();
  return new Promise((resolve) => {
    let line = '';
    const onData = (chunk: Buffer) => {
      for (const char of chunk.toString('utf8')) {
        if (char === '\r' || char === '\n') {
          input.off('data', onData);
          input.setRawMode(false);
          input.pause();
          errors.write('\n');
          return resolve(line);
        }
        // Ctrl-C ends the program, as it would anywhere else.
        if (char === '\u0003') process.exit(130);
        line = char === '\u007f' ? line.slice(0, -1) : line + char;
      }
    };
    input.on('data', onData);
  });
}
