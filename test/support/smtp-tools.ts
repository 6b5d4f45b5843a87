/**
 * Real SMTP client programs for the submission tests (msmtp, curl's smtp://, swaks), each run
 * to its end within a bound, and the byte-for-byte check of what reached the store. Python's
 * smtplib is in smtplib-client.ts.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';

const TOOL_TIMEOUT_MS = 60_000;

export interface Ran {
  code: number | null;
  out: string;
}

/** Runs a program to its end (SIGKILL after the timeout); stdout and stderr together. */
export function runTool(argv: string[], input: string | Buffer = '', env: NodeJS.ProcessEnv = {}, timeoutMs = TOOL_TIMEOUT_MS): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { env: { ...process.env, ...env }, timeout: timeoutMs, killSignal: 'SIGKILL' });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString('latin1')));
    child.stderr.on('data', (c: Buffer) => (out += c.toString('latin1')));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out }));
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}

export interface Submission {
  port: number;
  host?: string;
  user: string;
  /** A password, or with `bearer` the access token itself. */
  secret: string;
  /** AUTH XOAUTH2 with `secret` as the token. */
  bearer?: boolean;
  from: string;
  to: string;
  message: Buffer;
  /** msmtp: STARTTLS, or implicit TLS; the CA file verifies the proxy's certificate. */
  tls?: 'starttls' | 'implicit';
  caFile?: string;
}

/**
 * msmtp (no configuration file: everything on the command line), the message on stdin. It
 * sends the message as given (CRLF kept), and adds no header the message already has.
 */
export function msmtp(s: Submission): Promise<Ran> {
  const tls =
    s.tls === undefined
      ? ['--tls=off']
      : ['--tls=on', `--tls-starttls=${s.tls === 'starttls' ? 'on' : 'off'}`, `--tls-trust-file=${s.caFile}`];
  return runTool(
    ['msmtp', '--file=/dev/null', '--debug', `--host=${s.host ?? '127.0.0.1'}`, `--port=${s.port}`, ...tls, `--auth=${s.bearer ? 'xoauth2' : 'plain'}`,
      `--user=${s.user}`, '--passwordeval=printf %s "$SECRET"', `--from=${s.from}`, '--', s.to],
    s.message,
    { SECRET: s.secret },
  );
}

/** curl's smtp:// client: the message uploaded from a file, as is (curl dot-stuffs it). */
export async function curlSmtp(s: Submission, dir: string, extra: string[] = []): Promise<Ran> {
  const file = path.join(dir, `curl-${process.hrtime.bigint()}.eml`);
  await writeFile(file, s.message);
  const auth = s.bearer ? ['--user', `${s.user}:`, '--oauth2-bearer', s.secret] : ['--user', `${s.user}:${s.secret}`];
  return runTool(
    ['curl', '--silent', '--show-error', '--verbose', '--max-time', '50', `smtp://${s.host ?? '127.0.0.1'}:${s.port}/client.example`,
      ...auth, '--mail-from', s.from, '--mail-rcpt', s.to, '--upload-file', file, ...extra],
    '',
    // Straight to the proxy under test, whatever proxy the machine's environment names.
    { ALL_PROXY: '', all_proxy: '', NO_PROXY: '*' },
  );
}

/**
 * swaks with AUTH PLAIN and the message from a file. swaks ends the data with a CRLF of its
 * own: `sent` in its answer is what went over the wire.
 */
export async function swaks(s: Submission, dir: string, extra: string[] = []): Promise<Ran & { sent: Buffer }> {
  const file = path.join(dir, `swaks-${process.hrtime.bigint()}.eml`);
  await writeFile(file, s.message);
  const ran = await runTool(
    ['swaks', '--server', s.host ?? '127.0.0.1', '--port', String(s.port), '--timeout', '40', '--auth', 'PLAIN', '--auth-user', s.user, '--auth-password', s.secret,
      '--from', s.from, '--to', s.to, '--data', `@${file}`, ...extra],
  );
  return { ...ran, sent: Buffer.concat([s.message, Buffer.from('\r\n')]) };
}

/**
 * The stored message is the relay's trace headers (Return-Path, Delivered-To, Received and
 * their folded lines), then exactly what the client sent; returns the trace headers.
 */
export function assertDelivered(store: Buffer, sent: Buffer): string {
  assert.ok(store.length > sent.length, `stored ${store.length} octets for ${sent.length} sent`);
  const tail = store.subarray(store.length - sent.length);
  if (!tail.equals(sent)) {
    let at = 0;
    while (at < sent.length && tail[at] === sent[at]) at++;
    assert.fail(`the stored message differs from the one sent at octet ${at} of ${sent.length}: ${JSON.stringify(tail.subarray(at, at + 60).toString('latin1'))} for ${JSON.stringify(sent.subarray(at, at + 60).toString('latin1'))}`);
  }
  const trace = store.subarray(0, store.length - sent.length).toString('latin1');
  for (const line of trace.split('\r\n').slice(0, -1)) assert.match(line, /^(Return-Path: |Delivered-To: |Received: |\s)/, `only trace headers come first: ${line}`);
  return trace;
}

/** LF line ends made CRLF (a CRLF stays one): what an SMTP client sends for a stored LF message. */
export function crlf(message: Buffer): Buffer {
  return Buffer.from(message.toString('latin1').replace(/\r?\n/g, '\r\n'), 'latin1');
}

/** A message with dot lines, 8-bit text and a line of 1500 octets; CRLF; From, Date and Message-ID given. */
export function testMessage(subject: string, from: string, extra = ''): Buffer {
  const lines = [
    `From: ${from}`,
    'To: bob@example.test',
    'Date: Mon, 01 Jan 2024 12:00:00 +0000',
    `Subject: ${subject}`,
    `Message-ID: <${subject.replace(/\W/g, '')}.${process.hrtime.bigint()}@smtp.test>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
    '',
    '.a line that starts with a dot',
    '..two dots',
    '.',
    'Grüße aus Köln, 8-bit as sent',
    'x'.repeat(1500),
    extra,
  ];
  return Buffer.from(`${lines.join('\r\n')}\r\n`, 'utf8');
}

/** A port nothing listens on (just closed). */
export async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
