/**
 * The workloads done straight over IMAP with imapflow (the library the proxy uses): the
 * ceiling of the IMAP side, to tell the proxy's own cost from the backend's and the library's.
 */
import { ImapFlow } from 'imapflow';
import type { TestUser } from '../test/support/dovecot.js';
import { cpuMs, type DownloadResult } from './sessions.js';

export interface ImapTarget {
  readonly host: string;
  readonly port: number;
}

async function connect(target: ImapTarget, user: TestUser): Promise<ImapFlow> {
  const client = new ImapFlow({
    host: target.host,
    port: target.port,
    secure: false,
    doSTARTTLS: false,
    auth: { user: user.name, pass: user.password },
    logger: false,
    disableAutoIdle: true,
  });
  // Failures surface on the command that is running; without a listener they would crash.
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

/** What a POP3 login gives: the mailbox selected and every message's UID and size known. */
async function openSnapshot(client: ImapFlow): Promise<number> {
  const mailbox = await client.mailboxOpen('INBOX');
  if (mailbox.exists === 0) return 0;
  const list = await client.fetchAll('1:*', { uid: true, size: true });
  return list.length;
}

async function logout(client: ImapFlow): Promise<void> {
  try {
    await client.logout();
  } finally {
    client.close();
  }
}

/** Milliseconds from connect until UIDs and sizes of all messages are known (logout not timed). */
export async function imapSnapshotMs(target: ImapTarget, user: TestUser): Promise<number> {
  const started = performance.now();
  const client = await connect(target, user);
  try {
    await openSnapshot(client);
    return performance.now() - started;
  } finally {
    await logout(client);
  }
}

/** Connect, snapshot, every message's full source (BODY.PEEK[], so \Seen stays unset), logout. */
export async function imapDownloadAll(target: ImapTarget, user: TestUser): Promise<DownloadResult> {
  const started = performance.now();
  const cpu = process.cpuUsage();
  const client = await connect(target, user);
  let messages = 0;
  let retrieved = 0;
  let bytes = 0;
  try {
    messages = await openSnapshot(client);
    if (messages > 0) {
      for await (const m of client.fetch('1:*', { source: true })) {
        if (m.source !== undefined) retrieved += 1;
        bytes += m.source?.length ?? 0;
      }
    }
  } finally {
    await logout(client);
  }
  const ms = performance.now() - started;
  return { ms, bytes, messages, retrieved, firstError: undefined, clientCpuMs: cpuMs(process.cpuUsage(cpu)) };
}
