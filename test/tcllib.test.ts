/**
 * tcllib's pop3 package (Tcl, `package require pop3`) as a real client through the proxy: a
 * Tcl script run by tclsh retrieves a mailbox of 30 messages in each of the package's three
 * -retr-mode values, reads TOP, UIDL and LIST, and deletes messages; what it got is compared
 * with what Dovecot's own POP3 serves from the same store, and with the stored bytes.
 *
 * tcllib sends LAST (RFC 1725) before every RETR and DELE and ignores the answer. The proxy runs
 * with the production default maxErrors of 10: a proxy that answered LAST with -ERR and counted
 * it towards that limit would drop tcllib at its 10th message.
 *
 * tcllib does not hand over the bytes of the wire as they are. It reads a message one of two
 * ways, and each changes line ends (see RetrFast and RetrSlow in tcllib's pop3.tcl):
 * - fast (after a size from "+OK n octets" or from LIST n): reads n characters and then lines up
 *   to the terminator, then maps CRLF to LF, every other CR to LF, and "\n.." to "\n.";
 * - slow (no size known): reads line by line, strips every trailing CR of a line, removes a
 *   leading dot and ends every line with LF.
 * The expected text of a message is that transformation applied to the bytes Dovecot's own
 * POP3 sends for it; messages without a CR in the store are also compared with the stored bytes
 * directly (LF line ends, a final LF added where the store has none).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { corpus, mimeMessage } from './support/corpus.js';
import { imapClient, startDovecot, type Dovecot, type TestUser } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { settled, startProxy, type TestProxy } from './support/proxy.js';

const run = promisify(execFile);
const TCL_TIMEOUT_MS = 120_000;
const reader: TestUser = { name: 'tclread', password: 'tclread-pw' };
const deleter: TestUser = { name: 'tcldele', password: 'tcldele-pw' };

/** The Tcl client: `tclsh client.tcl host port user password action outdir ?args?`. */
const TCL_CLIENT = String.raw`
package require pop3
lassign $argv host port user pass action out
set rest [lrange $argv 6 end]

proc save {file data} {
    set f [open $file w]
    fconfigure $f -translation binary
    puts -nonewline $f $data
    close $f
}
proc mode {chan} { dict get [pop3::config $chan] retr_mode }
proc fail {what msg} {
    puts stderr "tcllib failed at $what: [string trim $msg]"
    exit 1
}

if {[catch {
    if {$action eq "retrieve"} {
        pop3::open -retr-mode [lindex $rest 0] $host $user $pass $port
    } else {
        pop3::open $host $user $pass $port
    }
} chan]} { fail "login" $chan }
if {[catch {pop3::status $chan} status]} { fail "STAT" $status }
set count [lindex $status 0]
puts "count $count"

switch -exact -- $action {
    retrieve {
        for {set n 1} {$n <= $count} {incr n} {
            set before [mode $chan]
            if {[catch {pop3::retrieve $chan $n} msgs]} { fail "message $n (retrieve)" $msgs }
            save [file join $out $n] [lindex $msgs 0]
            puts "path $n $before [mode $chan]"
        }
        if {[catch {pop3::last $chan} last]} { set last "error [string trim $last]" }
        puts "last $last"
    }
    top {
        for {set n 1} {$n <= $count} {incr n} {
            foreach k {0 3} {
                if {[catch {pop3::top $chan $n $k} text]} { fail "message $n (top $k)" $text }
                save [file join $out top$k-$n] $text
            }
        }
    }
    listings {
        foreach cmd {uidl list} {
            if {[catch {pop3::$cmd $chan} text]} { fail $cmd $text }
            save [file join $out $cmd] $text
            for {set n 1} {$n <= $count} {incr n} {
                if {[catch {pop3::$cmd $chan $n} text]} { fail "message $n ($cmd)" $text }
                save [file join $out $cmd-$n] $text
            }
        }
    }
    delete {
        foreach n $rest {
            if {[catch {pop3::delete $chan $n} err]} { fail "message $n (delete)" $err }
            puts "deleted $n"
        }
        if {[catch {pop3::last $chan} last]} { set last "error [string trim $last]" }
        puts "last $last"
    }
}
pop3::close $chan
puts "closed"
`;

// ---- the mailbox ----

function headers(name: string, extra: string[] = []): string {
  return [
    'From: Tcl Sender <sender@tcllib.test>',
    'To: Reader <reader@tcllib.test>',
    'Date: Tue, 02 Jan 2024 08:00:00 +0000',
    `Subject: tcllib ${name}`,
    `Message-ID: <${name}@tcllib.test>`,
    ...extra,
  ].join('\n') + '\n';
}

/**
 * Lines starting with dots throughout, and `trailingDots` lines of a single dot at the end:
 * the byte-stuffing moves where tcllib's fast read of n characters stops, into each of the
 * cases its RetrFast handles (cut before, inside and after a "..\r\n" line or the terminator).
 */
function dotMessage(name: string, lines: number, lineLength: number, trailingDots: number): Buffer {
  const body: string[] = [];
  for (let j = 0; j < lines; j++) {
    switch (j % 6) {
      case 0: body.push(`.${'d'.repeat(j % lineLength)} line ${j}`); break;
      case 1: body.push('..'); break;
      case 2: body.push('.'); break;
      case 3: body.push(`text ${j} ${'t'.repeat(lineLength)}`); break;
      case 4: body.push('...'); break;
      default: body.push(`. ${j}`);
    }
  }
  for (let j = 0; j < trailingDots; j++) body.push('.');
  return Buffer.from(`${headers(name)}\n${body.join('\n')}\n`, 'latin1');
}

/** The corpus and generated messages: 30, six of them over 300 KB, many with dot lines. */
function mailbox(): { name: string; data: Buffer }[] {
  const all = corpus();
  for (let i = 0; all.length < 30; i++) {
    const name = `extra-${i}`;
    if (i % 6 === 0) all.push({ name, data: mimeMessage(100 + i, 310_000 + 20_000 * i) });
    else if (i % 6 === 3) all.push({ name, data: dotMessage(name, 5_000 + 500 * i, 200, i % 4) });
    else all.push({ name, data: dotMessage(name, 20 + 7 * i, 10 + i, i % 5) });
  }
  return all;
}

const messages = mailbox();
const BIG = 300 * 1024;

// ---- what tcllib makes of the wire ----

/** RetrFast's result from a stuffed wire body (up to the terminator, without it). */
function tclFast(wire: Buffer): Buffer {
  const text = wire.toString('latin1').replace(/\r\n/g, '\n').replace(/\r/g, '\n').replace(/\n\.\./g, '\n.');
  return Buffer.from(text, 'latin1');
}

/** RetrSlow's result from a stuffed wire body. */
function tclSlow(wire: Buffer): Buffer {
  const lines = wire.toString('latin1').split('\n');
  lines.pop(); // the wire body ends with CRLF (or is empty)
  const text = lines.map((l) => `${l.replace(/\r+$/, '').replace(/^\./, '')}\n`).join('');
  return Buffer.from(text, 'latin1');
}

/** The stored message with LF line ends and a final LF, for messages without a CR. */
function storedAsLf(data: Buffer): Buffer | undefined {
  if (data.includes(0x0d)) return undefined;
  return data.length === 0 || data[data.length - 1] === 0x0a ? data : Buffer.concat([data, Buffer.from('\n')]);
}

// ---- Dovecot's own POP3: the reference ----

interface Reference {
  count: number;
  /** Stuffed wire bodies, index n - 1. */
  retr: Buffer[];
  retrStatus: string[];
  top0: Buffer[];
  top3: Buffer[];
  uidl: Buffer;
  list: Buffer;
  uidlOne: string[];
  listOne: string[];
}

async function reference(u: TestUser): Promise<Reference> {
  const c = await RawPop3.login(dovecot.pop3Port, u.name, u.password);
  try {
    const multi = async (command: string): Promise<Buffer> => {
      const status = await c.command(command, 30_000);
      assert.match(status, /^\+OK/, `Dovecot: ${command}`);
      return c.readMultiline(30_000);
    };
    const single = async (command: string): Promise<string> => {
      const status = await c.command(command);
      assert.match(status, /^\+OK /, `Dovecot: ${command}`);
      return status.slice(4);
    };
    const count = Number((await single('STAT')).split(' ')[0]);
    const ref: Reference = { count, retr: [], retrStatus: [], top0: [], top3: [], uidl: Buffer.alloc(0), list: Buffer.alloc(0), uidlOne: [], listOne: [] };
    for (let n = 1; n <= count; n++) {
      const status = await c.command(`RETR ${n}`, 30_000);
      assert.match(status, /^\+OK/);
      ref.retrStatus.push(status);
      ref.retr.push(await c.readMultiline(30_000));
      ref.top0.push(await multi(`TOP ${n} 0`));
      ref.top3.push(await multi(`TOP ${n} 3`));
      ref.uidlOne.push(await single(`UIDL ${n}`));
      ref.listOne.push(await single(`LIST ${n}`));
    }
    ref.uidl = await multi('UIDL');
    ref.list = await multi('LIST');
    await c.command('QUIT');
    return ref;
  } finally {
    c.destroy();
  }
}

// ---- setup ----

let dovecot: Dovecot;
let proxy: TestProxy;
let work: string;
let ref: Reference;
let runs = 0;

before(async () => {
  assert.ok(messages.length >= 25);
  assert.ok(messages.filter((m) => m.data.length > BIG).length >= 5, 'messages over 300 KB');
  assert.ok(messages.filter((m) => /\n\./.test(m.data.toString('latin1'))).length >= 15, 'messages with lines starting with a dot');
  dovecot = await startDovecot({ users: [reader, deleter] });
  for (const u of [reader, deleter]) for (const m of messages) await dovecot.deliver(u.name, m.data);
  // The production default of maxErrors, not the tests' generous one.
  proxy = await startProxy({ imapPort: dovecot.imapPort, logLevel: 'debug', limits: { maxErrors: 10 } });
  work = await mkdtemp(path.join(os.tmpdir(), 'pop3-tcllib-'));
  await writeFile(path.join(work, 'client.tcl'), TCL_CLIENT);
  ref = await reference(reader);
  assert.equal(ref.count, messages.length);
}, { timeout: 120_000 });

after(async () => {
  await proxy?.close();
  await dovecot?.stop();
  if (work) await rm(work, { recursive: true, force: true });
}, { timeout: 60_000 });

interface TclRun {
  out: string;
  stdout: string;
  file(name: string): Promise<Buffer>;
}

/** Runs the Tcl client against `port`; fails with its error output (and the proxy's log tail). */
async function tcl(port: number, u: TestUser, action: string, ...rest: string[]): Promise<TclRun> {
  const out = path.join(work, `run-${++runs}`);
  await mkdir(out);
  const argv = [path.join(work, 'client.tcl'), '127.0.0.1', String(port), u.name, u.password, action, out, ...rest];
  let stdout: string;
  try {
    ({ stdout } = await run('tclsh', argv, { timeout: TCL_TIMEOUT_MS, killSignal: 'SIGKILL', maxBuffer: 16 << 20 }));
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; killed?: boolean; signal?: string; code?: number; message: string };
    const tail = proxy.log().trimEnd().split('\n').slice(-15).join('\n');
    assert.fail(
      `tclsh ${action} ${rest.join(' ')} on port ${port} failed (${e.killed ? `killed after ${TCL_TIMEOUT_MS} ms` : `exit ${e.code ?? e.signal}`}):\n` +
        `stderr: ${e.stderr?.trim() ?? ''}\nstdout (tail): ${(e.stdout ?? '').trim().split('\n').slice(-5).join(' | ')}\nproxy log (tail):\n${tail}`,
    );
  }
  assert.match(stdout, /^closed$/m, 'the client closed the session');
  if (port === proxy.port) await settled(proxy, u.name, u.password);
  return { out, stdout, file: (name) => readFile(path.join(out, name)) };
}

function assertSameBytes(got: Buffer, expected: Buffer, what: string): void {
  if (got.equals(expected)) return;
  let at = 0;
  while (at < got.length && at < expected.length && got[at] === expected[at]) at++;
  const around = (b: Buffer) => JSON.stringify(b.subarray(Math.max(0, at - 30), at + 30).toString('latin1'));
  assert.fail(`${what}: differs at byte ${at} (lengths ${got.length}, ${expected.length}): got ${around(got)}, expected ${around(expected)}`);
}

/** How tcllib read each message: "fast" or "slow", from the retr_mode before and after it. */
function paths(stdout: string): Map<number, 'fast' | 'slow'> {
  const result = new Map<number, 'fast' | 'slow'>();
  for (const m of stdout.matchAll(/^path (\d+) (\w+) (\w+)$/gm)) {
    const [before, after] = [m[2]!, m[3]!];
    // retr -> list: RETR gave no size, read slowly; list -> slow: LIST gave no size.
    const slow = before === 'slow' || before !== after;
    result.set(Number(m[1]), slow ? 'slow' : 'fast');
  }
  return result;
}

/** Retrieves every message in one mode and compares each with the reference and the store. */
async function retrieveAll(port: number, mode: 'retr' | 'list' | 'slow'): Promise<Map<number, 'fast' | 'slow'>> {
  const r = await tcl(port, reader, 'retrieve', mode);
  assert.match(r.stdout, new RegExp(`^count ${messages.length}$`, 'm'));
  const how = paths(r.stdout);
  assert.equal(how.size, messages.length, `${mode}: every message retrieved`);
  for (let n = 1; n <= messages.length; n++) {
    const got = await r.file(String(n));
    const way = how.get(n)!;
    const expected = way === 'fast' ? tclFast(ref.retr[n - 1]!) : tclSlow(ref.retr[n - 1]!);
    const what = `-retr-mode ${mode}, message ${n} (${messages[n - 1]!.name}, read ${way})`;
    assertSameBytes(got, expected, what);
    const stored = storedAsLf(messages[n - 1]!.data);
    if (stored) assertSameBytes(got, stored, `${what} against the store`);
  }
  // LAST after retrieving everything: the highest message number retrieved. (Dovecot's own
  // POP3 does not know LAST; tcllib ignores the error before RETR.)
  if (port === proxy.port) assert.match(r.stdout, new RegExp(`^last ${messages.length}$`, 'm'), `${mode}: LAST after the last RETR`);
  return how;
}

/** "slow 1, fast 2-30" */
function summary(how: Map<number, 'fast' | 'slow'>): string {
  const runs: string[] = [];
  let start = 1;
  for (let n = 1; n <= how.size; n++) {
    if (n < how.size && how.get(n + 1) === how.get(n)) continue;
    runs.push(`${how.get(n)} ${start === n ? n : `${start}-${n}`}`);
    start = n + 1;
  }
  return runs.join(', ');
}

function lastCommands(): number {
  return (proxy.log().match(/C: LAST\b/g) ?? []).length;
}

// ---- tests ----

test('the model of tcllib holds against Dovecot itself (all three -retr-modes)', { timeout: 120_000 }, async () => {
  for (const mode of ['retr', 'list', 'slow'] as const) {
    const how = await retrieveAll(dovecot.pop3Port, mode);
    // Dovecot gives the size in RETR's status line, so -retr-mode retr reads everything fast.
    const expectedWay = mode === 'slow' ? 'slow' : 'fast';
    assert.ok([...how.values()].every((w) => w === expectedWay), `Dovecot, ${mode}: ${JSON.stringify([...how])}`);
  }
});

for (const mode of ['retr', 'list', 'slow'] as const) {
  test(`-retr-mode ${mode}: every message through the proxy, byte for byte`, { timeout: 120_000 }, async (t) => {
    const lastBefore = lastCommands();
    const how = await retrieveAll(proxy.port, mode);
    t.diagnostic(`read: ${summary(how)}`);
    if (mode === 'list') assert.ok([...how.values()].every((w) => w === 'fast'), `list mode reads with LIST sizes: ${JSON.stringify([...how])}`);
    if (mode === 'slow') assert.ok([...how.values()].every((w) => w === 'slow'));
    // One LAST per retrieve call, plus the one after: all answered, none closing the session.
    assert.equal(lastCommands() - lastBefore, messages.length + 1, 'LAST commands seen by the proxy');
  });
}

test('pop3::top with 0 and 3 lines, every message', { timeout: 120_000 }, async () => {
  const r = await tcl(proxy.port, reader, 'top');
  for (let n = 1; n <= messages.length; n++) {
    assertSameBytes(await r.file(`top0-${n}`), tclSlow(ref.top0[n - 1]!), `TOP ${n} 0 (${messages[n - 1]!.name})`);
    assertSameBytes(await r.file(`top3-${n}`), tclSlow(ref.top3[n - 1]!), `TOP ${n} 3 (${messages[n - 1]!.name})`);
  }
});

test('pop3::uidl and pop3::list equal Dovecot\'s own UIDL and LIST, whole and per message', { timeout: 120_000 }, async () => {
  const r = await tcl(proxy.port, reader, 'listings');
  assertSameBytes(await r.file('uidl'), tclSlow(ref.uidl), 'UIDL');
  assertSameBytes(await r.file('list'), tclSlow(ref.list), 'LIST');
  for (let n = 1; n <= messages.length; n++) {
    assert.equal((await r.file(`uidl-${n}`)).toString('latin1'), ref.uidlOne[n - 1], `UIDL ${n}`);
    assert.equal((await r.file(`list-${n}`)).toString('latin1'), ref.listOne[n - 1], `LIST ${n}`);
  }
  // The listing itself: one "n uid" line per message, unique UIDs.
  const uids = (await r.file('uidl')).toString('latin1').trimEnd().split('\n').map((l) => l.split(' ')[1]);
  assert.equal(new Set(uids).size, messages.length);
});

test('pop3::delete of 14 messages, then pop3::close: the store lost exactly those', { timeout: 120_000 }, async () => {
  const doomed = [1, 2, 4, 5, 7, 10, 11, 12, 13, 16, 19, 22, 25, 30];
  const uidsBefore = await storeUids(deleter);
  assert.equal(uidsBefore.length, messages.length);
  const lastBefore = lastCommands();
  const r = await tcl(proxy.port, deleter, 'delete', ...doomed.map(String));
  assert.equal((r.stdout.match(/^deleted \d+$/gm) ?? []).length, doomed.length);
  assert.match(r.stdout, /^last 0$/m, 'LAST is 0 when nothing was retrieved');
  assert.equal(lastCommands() - lastBefore, doomed.length + 1, 'LAST commands seen by the proxy');
  const expected = uidsBefore.filter((_, i) => !doomed.includes(i + 1));
  assert.deepEqual(await storeUids(deleter), expected);
  // And they are the right messages: the Message-IDs left are those of the survivors.
  const ids = await storeMessageIds(deleter);
  assert.deepEqual(ids, messages.filter((_, i) => !doomed.includes(i + 1)).map((m) => messageIdOf(m.data)));
});

async function storeUids(u: TestUser): Promise<number[]> {
  const imap = await imapClient(dovecot, u);
  try {
    await imap.mailboxOpen('INBOX');
    const uids: number[] = [];
    for await (const m of imap.fetch('1:*', { uid: true })) uids.push(m.uid);
    return uids.sort((a, b) => a - b);
  } finally {
    await imap.logout().catch(() => undefined);
  }
}

async function storeMessageIds(u: TestUser): Promise<string[]> {
  const imap = await imapClient(dovecot, u);
  try {
    await imap.mailboxOpen('INBOX');
    const found: { uid: number; id: string }[] = [];
    for await (const m of imap.fetch('1:*', { uid: true, source: true })) found.push({ uid: m.uid, id: messageIdOf(m.source!) });
    return found.sort((a, b) => a.uid - b.uid).map((f) => f.id);
  } finally {
    await imap.logout().catch(() => undefined);
  }
}

function messageIdOf(data: Buffer): string {
  const m = /^Message-ID: (\S+)/im.exec(data.toString('latin1'));
  assert.ok(m, 'a Message-ID header');
  return m[1]!;
}
