/**
 * A private Postfix for one test file: the real submission relay the proxy submits to. It
 * listens on free loopback ports only, authenticates clients through the test Dovecot's auth
 * (passwords from its passwd-file, XOAUTH2/OAUTHBEARER through its oauth2 passdb) and delivers
 * to that Dovecot by LMTP, so a message submitted lands in the recipient's INBOX. Nothing of
 * the system's /etc/postfix, /var/spool/postfix or port 25 is used.
 *
 * Its config directory (conf/), queue (queue/, outside conf/ as Postfix wants), data and log
 * live in a temp directory of its own under private-server.ts's tempBase() (mode 0755, outside
 * the checkout: Postfix's unprivileged daemons must reach them even when the checkout is in a
 * folder only its owner may enter). Postfix runs in a PID namespace of its own (see run.sh in
 * prepare()), so nothing it starts outlives stop(), nor a test process that is killed. Root only.
 *
 * The Dovecot must be started with `extraConfig: dovecotConfigForPostfix()` (plus
 * oauth2PassdbConfig for tokens): LMTP and the two sockets Postfix's user may open.
 */
import { chmod, chown, copyFile, mkdir, rm, writeFile } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { testCerts, type ServerCert } from './certs.js';
import type { Dovecot, TestUser } from './dovecot.js';
import { failedStart, freePort, HOST, idOf, readLogs, ServerProcess, shq, startInTempDir, waitForGreeting } from './private-server.js';
import { ensureSystemDeps } from './system.js';

/** The domain of Dovecot users whose names carry none ("alice" receives as alice@example.test). */
export const DEFAULT_MAIL_DOMAIN = 'example.test';
/** Socket names under Dovecot's base_dir (dovecot.ts puts that at <dir>/run). */
const AUTH_SOCKET = 'auth-postfix';
const LMTP_SOCKET = 'lmtp-postfix';

const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 15_000;
const START_ATTEMPTS = 5;
const LOGS = ['maillog', 'stderr.log'];

export interface PostfixOptions {
  /** Domain for Dovecot users named without one; must match dovecotConfigForPostfix's. */
  domain?: string;
  /** Postfix message_size_limit in bytes (SIZE in EHLO; larger mail gets 552 5.3.4). Default 10 MB. */
  messageSizeLimit?: number;
  /**
   * smtpd_sender_login_maps + reject_sender_login_mismatch: a sender address the login does not
   * own is refused with 553 5.7.1 (answered to RCPT TO: Postfix delays rejections until then).
   * true: every user owns exactly their own address; a map: address -> the logins owning it.
   */
  senderLoginMaps?: boolean | Record<string, string[]>;
  /** STARTTLS on the submission port: not offered, offered (default), or required before AUTH and MAIL. */
  starttls?: 'off' | 'offered' | 'required';
  /** Also listen with implicit TLS (what port 465 is). Default false. */
  implicitTls?: boolean;
  /** The server certificate; default testCerts().server (signed by the test CA). */
  certificate?: ServerCert;
  /**
   * Recipients refused at RCPT TO, each with its reply, e.g. '550 5.1.1 No such user' (Postfix
   * answers `550 5.1.1 <address>: Recipient address rejected: No such user`).
   */
  refuseRecipients?: Record<string, string>;
  /** More main.cf settings; later ones override the generated ones. */
  mainCf?: Record<string, string>;
}

export interface Postfix {
  host: string;
  /** Submission: plain SMTP, with STARTTLS as options.starttls says. */
  port: number;
  /** Implicit TLS, when options.implicitTls. */
  implicitTlsPort?: number;
  /** Its private temp directory. */
  dir: string;
  domain: string;
  /** The mail address of a Dovecot user (their name when it has a domain). */
  address(user: TestUser | string): string;
  /** Postfix's log so far (maillog_file). */
  log(): string;
  /** `postfix stop`, then kills whatever is left of this instance and removes its directory. */
  stop(): Promise<void>;
}

const addressOf = (name: string, domain: string) => (name.includes('@') ? name : `${name}@${domain}`);

/** A value safe in main.cf, master.cf and table files (one line, no whitespace or commas). */
function word(value: string, what: string): string {
  if (!/^[^\s,]+$/.test(value)) throw new Error(`unsupported ${what} for Postfix: ${JSON.stringify(value)}`);
  return value;
}

/**
 * The Dovecot settings (for startDovecot's extraConfig) that let the private Postfix in: LMTP,
 * an auth socket and an LMTP socket its user may open, and LMTP deliveries stored with CRLF
 * (the bytes as submitted; Dovecot's other writes keep their LF). Postfix hands LMTP full
 * addresses: for users named without a domain, LMTP looks up the name without `domain`.
 */
export function dovecotConfigForPostfix(options: { domain?: string } = {}): string {
  const domain = word(options.domain ?? DEFAULT_MAIL_DOMAIN, 'domain');
  const listener = (name: string) => [`  unix_listener ${name} {`, '    mode = 0660', '    user = postfix', '  }'];
  return [
    'protocols = $protocols lmtp',
    'service auth {',
    ...listener(AUTH_SOCKET),
    '}',
    'service lmtp {',
    ...listener(LMTP_SOCKET),
    '}',
    'protocol lmtp {',
    '  mail_save_crlf = yes',
    `  auth_username_format = %{if;%{domain};eq;${domain};%{username};%{user}}`,
    '}',
  ].join('\n');
}

interface Layout {
  conf: string;
  authSocket: string;
  lmtpSocket: string;
}

function mainCf(dir: string, dovecot: Dovecot, layout: Layout, options: PostfixOptions, domain: string, tls: ServerCert | undefined): string {
  const users = dovecot.users.map((u) => addressOf(u.name, domain));
  const domains = [...new Set(users.map((a) => a.slice(a.lastIndexOf('@') + 1)))];
  const table = (name: string) => `texthash:${join(layout.conf, name)}`;
  const starttls = options.starttls ?? 'offered';
  const recipientChecks = [
    ...(options.refuseRecipients ? [`check_recipient_access ${table('refused-recipients')}`] : []),
    // Only the test domains: nothing is ever relayed off this machine.
    'permit_auth_destination',
    'reject',
  ];
  const settings: Record<string, string> = {
    compatibility_level: '3.6',
    queue_directory: join(dir, 'queue'),
    data_directory: join(dir, 'data'),
    mail_owner: 'postfix',
    setgid_group: 'postdrop',
    maillog_file: join(dir, 'maillog'),
    // postlogd writes only below these prefixes.
    maillog_file_prefixes: dir,
    myhostname: 'relay.postfix.test',
    mydomain: 'postfix.test',
    myorigin: '$myhostname',
    mydestination: '',
    inet_interfaces: HOST,
    inet_protocols: 'ipv4',
    mynetworks: '127.0.0.1/32',
    smtpd_banner: '$myhostname ESMTP Postfix (pop3-imap-proxy test relay)',
    biff: 'no',
    alias_maps: '',
    alias_database: '',
    local_recipient_maps: '',
    local_transport: 'error:5.1.1 no local delivery in the test relay',
    virtual_mailbox_domains: domains.join(' '),
    virtual_mailbox_maps: table('mailboxes'),
    virtual_transport: `lmtp:unix:${layout.lmtpSocket}`,
    // One LMTP transaction per recipient: each copy then carries its own Delivered-To, which
    // Dovecot leaves out of a copy delivered to several recipients at once.
    lmtp_destination_recipient_limit: '1',
    default_transport: 'error:5.7.1 the test relay delivers only to its Dovecot',
    relay_transport: 'error:5.7.1 the test relay delivers only to its Dovecot',
    // Lines reach Dovecot as submitted: no folding of long lines, no header rewriting for
    // loopback clients (no added Message-ID or Date, no qualified addresses).
    lmtp_line_length_limit: '0',
    local_header_rewrite_clients: '',
    message_size_limit: String(options.messageSizeLimit ?? 10_240_000),
    mailbox_size_limit: '0',
    smtpd_sasl_auth_enable: 'yes',
    smtpd_sasl_type: 'dovecot',
    smtpd_sasl_path: layout.authSocket,
    smtpd_sasl_security_options: 'noanonymous',
    smtpd_sasl_tls_security_options: 'noanonymous',
    smtpd_relay_restrictions: 'permit_sasl_authenticated, reject',
    smtpd_recipient_restrictions: recipientChecks.join(', '),
    // Tests are full of refusals: no 1 s pause after each, and no penalty for repeating.
    smtpd_error_sleep_time: '0',
    smtpd_soft_error_limit: '1000',
    smtpd_hard_error_limit: '1000',
    smtpd_client_connection_count_limit: '0',
    smtpd_client_connection_rate_limit: '0',
    // If Dovecot's LMTP was busy, the next attempt comes within seconds.
    queue_run_delay: '1s',
    minimal_backoff_time: '1s',
    maximal_backoff_time: '5s',
    smtp_tls_security_level: 'none',
    lmtp_tls_security_level: 'none',
  };
  if (options.senderLoginMaps) {
    settings.smtpd_sender_login_maps = table('sender-logins');
    settings.smtpd_sender_restrictions = 'reject_sender_login_mismatch';
  }
  if (tls !== undefined) {
    settings.smtpd_tls_chain_files = `${join(layout.conf, 'tls.key')}, ${join(layout.conf, 'tls-chain.pem')}`;
    settings.smtpd_tls_security_level = starttls === 'required' ? 'encrypt' : starttls === 'offered' ? 'may' : 'none';
    settings.smtpd_tls_auth_only = starttls === 'required' ? 'yes' : 'no';
    // The Received header says which TLS the client used: tests read it from the stored mail.
    settings.smtpd_tls_received_header = 'yes';
    settings.smtpd_tls_loglevel = '1';
  }
  Object.assign(settings, options.mainCf ?? {});
  return `# Generated for one test run.\n${Object.entries(settings).map(([k, v]) => `${k} = ${v}`).join('\n')}\n`;
}

function masterCf(port: number, implicitTlsPort: number | undefined, starttls: string): string {
  // No chroot (column 5 "n"): nothing needs copying into the queue, and the absolute paths of
  // Dovecot's sockets work as they are.
  const services = [
    `${HOST}:${port} inet n - n - - smtpd`,
    '  -o syslog_name=postfix/submission',
    ...(implicitTlsPort !== undefined
      ? [`${HOST}:${implicitTlsPort} inet n - n - - smtpd`, '  -o syslog_name=postfix/submissions', '  -o smtpd_tls_wrappermode=yes', '  -o smtpd_tls_security_level=encrypt']
      : []),
    'cleanup unix n - n - 0 cleanup',
    'qmgr unix n - n 300 1 qmgr',
    ...(starttls !== 'off' || implicitTlsPort !== undefined ? ['tlsmgr unix - - n 1000? 1 tlsmgr'] : []),
    'rewrite unix - - n - - trivial-rewrite',
    'bounce unix - - n - 0 bounce',
    'defer unix - - n - 0 bounce',
    'trace unix - - n - 0 bounce',
    'verify unix - - n - 1 verify',
    'flush unix n - n 1000? 0 flush',
    'proxymap unix - - n - - proxymap',
    'proxywrite unix - - n - 1 proxymap',
    'showq unix n - n - - showq',
    'error unix - - n - - error',
    'retry unix - - n - - error',
    'discard unix - - n - - discard',
    'lmtp unix - - n - - lmtp',
    'anvil unix - - n - 1 anvil',
    'scache unix - - n - 1 scache',
    'postlog unix-dgram n - n - 1 postlogd',
  ];
  return `${services.join('\n')}\n`;
}

/** Texthash tables: one `key value` a line. */
function tableText(entries: Array<[string, string]>): string {
  return entries.map(([k, v]) => `${word(k, 'table key')} ${v.replace(/[\r\n]/g, ' ')}\n`).join('');
}

function senderLogins(dovecot: Dovecot, domain: string, option: true | Record<string, string[]>): Array<[string, string]> {
  if (option === true) return dovecot.users.map((u) => [addressOf(u.name, domain), word(u.name, 'login')]);
  return Object.entries(option).map(([address, logins]) => [address, logins.map((l) => word(l, 'login')).join(',')]);
}

async function prepare(dir: string, dovecot: Dovecot, layout: Layout, options: PostfixOptions, domain: string, tls: ServerCert | undefined): Promise<void> {
  await chmod(dir, 0o755);
  for (const d of ['conf', 'queue', 'data']) await mkdir(join(dir, d), { mode: 0o755 });
  // The master's lock and the TLS caches are written there as mail_owner; the queue's
  // subdirectories Postfix makes itself (post-install create-missing).
  await chown(join(dir, 'data'), Number(idOf(['-u', 'postfix'])), Number(idOf(['-g', 'postfix'])));
  await chmod(join(dir, 'data'), 0o700);
  const write = async (name: string, text: string, mode = 0o644) => {
    await writeFile(join(layout.conf, name), text);
    await chmod(join(layout.conf, name), mode);
  };
  await write('mailboxes', tableText(dovecot.users.map((u) => [addressOf(u.name, domain), 'OK'])));
  if (options.refuseRecipients) await write('refused-recipients', tableText(Object.entries(options.refuseRecipients)));
  if (options.senderLoginMaps) await write('sender-logins', tableText(senderLogins(dovecot, domain, options.senderLoginMaps)));
  if (tls !== undefined) {
    // Copies inside this directory: smtpd reads them as root before dropping privileges, and
    // the test certificates' own folder may go away first.
    await copyFile(tls.chainFile, join(layout.conf, 'tls-chain.pem'));
    await copyFile(tls.keyFile, join(layout.conf, 'tls.key'));
    await chmod(join(layout.conf, 'tls.key'), 0o600);
  }
  // This shell stays the first process of the PID namespace while the master runs (the kernel
  // ends the namespace with it, and it dies with unshare). Not `exec postfix start-fg`: the
  // master as PID 1 outlived a SIGKILLed test process (it lost its parent-death signal).
  // `postfix start` returns once the master is up; SIGTERM (stop()) becomes `postfix stop`.
  const conf = shq(layout.conf);
  const script = [
    `/usr/sbin/postfix -c ${conf} start || exit 1`,
    `pid=$(sed 1q ${shq(join(dir, 'queue', 'pid', 'master.pid'))} | tr -dc 0-9)`,
    `trap '/usr/sbin/postfix -c ${conf} stop' TERM INT`,
    // Waiting on a background sleep lets the trap run at once, and reaps the exited master.
    'while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.1 & wait $!; done',
  ];
  await writeFile(join(dir, 'run.sh'), `${script.join('\n')}\n`);
}

type Started = { proc: ServerProcess; port: number; implicitTlsPort?: number };

async function startOnce(dir: string, dovecot: Dovecot, layout: Layout, options: PostfixOptions, domain: string, tls: ServerCert | undefined): Promise<Started> {
  const port = await freePort();
  let implicitTlsPort: number | undefined;
  if (options.implicitTls) do implicitTlsPort = await freePort(); while (implicitTlsPort === port);
  await writeFile(join(layout.conf, 'main.cf'), mainCf(dir, dovecot, layout, options, domain, tls));
  await writeFile(join(layout.conf, 'master.cf'), masterCf(port, implicitTlsPort, options.starttls ?? 'offered'));
  const proc = ServerProcess.start('Postfix', dir, join(dir, 'run.sh'), join(dir, 'stderr.log'), { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C' });
  // Greeting on the plain port; the implicit-TLS one is checked by the TLS tests themselves.
  if (await waitForGreeting(proc, [[port, /^220 /]], START_TIMEOUT_MS)) return { proc, port, implicitTlsPort };
  return failedStart(proc, `port ${port}`, START_TIMEOUT_MS, () => readLogs(dir, LOGS), /address already in use/i);
}

/** The EHLO keywords of the submission port (plain, before any STARTTLS); bounded. */
export function ehloKeywords(port: number, timeoutMs = 10_000): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: HOST, port });
    let data = '';
    let sent = false;
    const timer = setTimeout(() => finish(new Error(`no EHLO answer on port ${port} within ${timeoutMs} ms: ${JSON.stringify(data)}`)), timeoutMs);
    const finish = (err: Error | undefined, lines: string[] = []) => {
      clearTimeout(timer);
      socket.destroy();
      return err ? reject(err) : resolve(lines);
    };
    socket.on('data', (chunk) => {
      data += chunk.toString('latin1');
      if (!sent && /^220 .*\r\n/.test(data)) {
        sent = true;
        data = '';
        socket.write('EHLO check.postfix.test\r\n');
      } else if (sent && /(^|\r\n)250 [^\r\n]*\r\n$/.test(data)) {
        socket.write('QUIT\r\n');
        finish(undefined, data.trim().split('\r\n').slice(1).map((l) => l.slice(4)));
      }
    });
    socket.on('error', (err) => finish(err));
    socket.on('close', () => finish(new Error(`port ${port} closed during EHLO: ${JSON.stringify(data)}`)));
  });
}

function stopper(proc: ServerProcess, dir: string): () => Promise<void> {
  let stopping: Promise<void> | undefined;
  return () => {
    // SIGTERM makes run.sh call `postfix stop` (which waits up to 5 s for the master, then
    // kills its process group); whatever is left after STOP_TIMEOUT_MS is SIGKILLed with the
    // namespace.
    stopping ??= (async () => {
      await proc.kill(STOP_TIMEOUT_MS);
      await rm(dir, { recursive: true, force: true });
    })();
    return stopping;
  };
}

/** Why startPostfix cannot run here, or undefined when it can (for tests' `skip`). */
export function cannotRunPostfix(): string | undefined {
  if ((process.getuid?.() ?? 0) !== 0) return 'the private Postfix runs as root only (postfix start, a PID namespace)';
  return undefined;
}

export async function startPostfix(dovecot: Dovecot, options: PostfixOptions = {}): Promise<Postfix> {
  const why = cannotRunPostfix();
  if (why !== undefined) throw new Error(why);
  ensureSystemDeps();
  const domain = word(options.domain ?? DEFAULT_MAIL_DOMAIN, 'domain');
  const run = join(dovecot.dir, 'run');
  const layout = (dir: string): Layout => ({ conf: join(dir, 'conf'), authSocket: join(run, AUTH_SOCKET), lmtpSocket: join(run, LMTP_SOCKET) });
  for (const socket of [AUTH_SOCKET, LMTP_SOCKET]) {
    if (!existsSync(join(run, socket))) throw new Error(`Dovecot has no ${join(run, socket)}: start it with extraConfig: dovecotConfigForPostfix()`);
  }
  const tls = options.starttls === 'off' && !options.implicitTls ? undefined : (options.certificate ?? (await testCerts()).server);
  const started = await startInTempDir('postfix', START_ATTEMPTS, {
    prepare: (dir) => prepare(dir, dovecot, layout(dir), options, domain, tls),
    startOnce: (dir) => startOnce(dir, dovecot, layout(dir), options, domain, tls),
    check: async (dir, s) => {
      // AUTH in EHLO shows that smtpd reached Dovecot's auth socket.
      const keywords = await ehloKeywords(s.port);
      const wantAuth = options.starttls !== 'required';
      if (wantAuth !== keywords.some((k) => /^AUTH /.test(k))) {
        throw new Error(`Postfix EHLO on port ${s.port} ${wantAuth ? 'lacks' : 'has'} AUTH: ${keywords.join(' | ')}\n${readLogs(dir, LOGS)}`);
      }
    },
  });
  const { dir, proc, port, implicitTlsPort } = started;
  return {
    host: HOST,
    port,
    ...(implicitTlsPort !== undefined ? { implicitTlsPort } : {}),
    dir,
    domain,
    address: (user) => addressOf(typeof user === 'string' ? user : user.name, domain),
    log: () => {
      try {
        return readFileSync(join(dir, 'maillog'), 'latin1');
      } catch {
        return '';
      }
    },
    stop: stopper(proc, dir),
  };
}
