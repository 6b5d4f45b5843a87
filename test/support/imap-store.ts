/**
 * Mail stores and IMAP helpers that work on any private test server (test/support/dovecot.ts,
 * cyrus.ts, courier.ts): Maildirs written as the mail owner, and bounded IMAP clients.
 */
import { chmod, chown, mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ImapFlow } from 'imapflow';
import type { ImapTestServer, MailOwner, TestUser } from './private-server.js';

// Maildir file names: "<seconds>.M<microseconds>P<pid>Q<n>.<host>", the microseconds padded to
// six digits, so that names sort as the deliveries were made, by number and by string alike
// (Dovecot and Courier give new mail its UIDs in file-name order).
let lastSeconds = 0;
let lastMicros = -1;
let deliveries = 0;

function maildirName(): string {
  const nowMicros = Date.now() * 1000;
  let seconds = Math.floor(nowMicros / 1_000_000);
  let micros = nowMicros % 1_000_000;
  if (seconds < lastSeconds || (seconds === lastSeconds && micros <= lastMicros)) {
    seconds = lastSeconds;
    micros = lastMicros + 1;
    if (micros >= 1_000_000) {
      seconds += 1;
      micros = 0;
    }
  }
  lastSeconds = seconds;
  lastMicros = micros;
  deliveries += 1;
  return `${seconds}.M${String(micros).padStart(6, '0')}P${process.pid}Q${deliveries}.pop3test`;
}

/** Makes `<dir>/home/<user>/Maildir` with cur, new and tmp for every user, owned by the mail owner. */
export async function makeMaildirs(dir: string, owner: MailOwner, users: readonly TestUser[]): Promise<void> {
  await mkdir(join(dir, 'home'));
  await chmod(join(dir, 'home'), 0o755);
  for (const u of users) {
    const home = join(dir, 'home', u.name);
    const paths = [home, join(home, 'Maildir'), ...['cur', 'new', 'tmp'].map((s) => join(home, 'Maildir', s))];
    for (const p of paths) {
      await mkdir(p, { mode: 0o700 });
      if (owner.chownFiles) await chown(p, owner.mailUid, owner.mailGid);
    }
  }
}

/**
 * The store makeMaildirs() made: each user's Maildir (an error for anyone else), and deliver(),
 * which drops one message into it exactly as given.
 */
export function maildirStore(dir: string, users: readonly TestUser[], owner: MailOwner, server: string): Pick<ImapTestServer, 'deliver'> & { maildir(user: string): string } {
  const maildir = (user: string): string => {
    if (!users.some((u) => u.name === user)) throw new Error(`no test user ${JSON.stringify(user)} in this ${server}`);
    return join(dir, 'home', user, 'Maildir');
  };
  return { maildir, deliver: (user, message) => deliverToMaildir(maildir(user), owner, message) };
}

/** Drops one message into the Maildir's new/ exactly as given (written in tmp/, then moved). */
export async function deliverToMaildir(maildir: string, owner: MailOwner, message: Buffer | string): Promise<void> {
  const data = typeof message === 'string' ? Buffer.from(message, 'utf8') : message;
  const name = maildirName();
  const tmp = join(maildir, 'tmp', name);
  await writeFile(tmp, data, { mode: 0o600 });
  if (owner.chownFiles) await chown(tmp, owner.mailUid, owner.mailGid);
  await rename(tmp, join(maildir, 'new', name));
}

/** A connected, logged-in IMAP client of any test server, every wait bounded. */
export async function imapClientOf(server: Pick<ImapTestServer, 'host' | 'imapPort'>, user: TestUser): Promise<ImapFlow> {
  const client = new ImapFlow({
    host: server.host,
    port: server.imapPort,
    secure: false,
    doSTARTTLS: false,
    auth: { user: user.name, pass: user.password },
    logger: false,
    connectionTimeout: 10_000,
    greetingTimeout: 10_000,
    socketTimeout: 60_000,
  });
  client.on('error', () => {
    // A test that still uses the client sees the failure on its next command.
  });
  await client.connect();
  return client;
}

/** Runs `run` with the user's mailbox open, and logs out after. */
export async function withImapMailbox<T>(server: Pick<ImapTestServer, 'host' | 'imapPort'>, user: TestUser, run: (imap: ImapFlow) => Promise<T>, mailbox = 'INBOX'): Promise<T> {
  const imap = await imapClientOf(server, user);
  try {
    await imap.mailboxOpen(mailbox);
    return await run(imap);
  } finally {
    await imap.logout().catch(() => imap.close());
  }
}

/**
 * Logs every user in (opening INBOX, which Cyrus makes at the first login): proves that logins
 * work before any test relies on them.
 */
export async function proveLogins(server: Pick<ImapTestServer, 'host' | 'imapPort'>, users: readonly TestUser[], name: string, logs: () => string): Promise<void> {
  for (const u of users) {
    const imap = await imapClientOf(server, u).catch((err: Error) => {
      throw new Error(`${name} refuses the login of ${u.name}: ${err.message}\n${logs()}`);
    });
    try {
      await imap.mailboxOpen('INBOX');
    } finally {
      await imap.logout().catch(() => imap.close());
    }
  }
}

/** One message as the server's IMAP serves it. */
export interface ServedMessage {
  uid: number;
  subject: string;
  deleted: boolean;
  /** RFC822.SIZE. */
  size: number;
  /** BODY[]. */
  source: Buffer;
}

/** Every message of the user's mailbox with UIDVALIDITY, by UID order. */
export async function servedMessages(server: Pick<ImapTestServer, 'host' | 'imapPort'>, user: TestUser, mailbox = 'INBOX'): Promise<{ uidValidity: number; messages: ServedMessage[] }> {
  return withImapMailbox(
    server,
    user,
    async (imap) => {
      const box = imap.mailbox as { exists: number; uidValidity: bigint };
      const uidValidity = Number(box.uidValidity);
      if (box.exists === 0) return { uidValidity, messages: [] };
      const all = await imap.fetchAll('1:*', { uid: true, flags: true, envelope: true, size: true, source: true });
      const messages = all
        .map((m) => ({
          uid: m.uid,
          subject: m.envelope?.subject ?? '',
          deleted: m.flags?.has('\\Deleted') ?? false,
          size: m.size ?? -1,
          source: m.source ?? Buffer.alloc(0),
        }))
        .sort((a, b) => a.uid - b.uid);
      return { uidValidity, messages };
    },
    mailbox,
  );
}

/** Removes every message of the user's mailbox (flags \Deleted and expunges). */
export async function emptyMailbox(server: Pick<ImapTestServer, 'host' | 'imapPort'>, user: TestUser, mailbox = 'INBOX'): Promise<void> {
  await withImapMailbox(
    server,
    user,
    async (imap) => {
      if ((imap.mailbox as { exists: number }).exists > 0) await imap.messageDelete('1:*');
    },
    mailbox,
  );
}
