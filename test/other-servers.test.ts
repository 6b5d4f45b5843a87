/**
 * The essential mail-safety and byte-exactness checks with the proxy in front of IMAP servers
 * other than Dovecot: Cyrus IMAP 3.6 and Courier-IMAP 5.0, each unpacked from Debian's packages
 * and run privately (test/support/cyrus.ts, test/support/courier.ts). Dovecot runs the same
 * checks as the reference. The proxy's snapshot and UIDLs come from IMAP alone, so they must
 * hold on any server: Cyrus has CONDSTORE and UIDNEXT, Courier has neither.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, beforeEach, describe, test } from 'node:test';
import { startCourier } from './support/courier.js';
import { startCyrus } from './support/cyrus.js';
import { startDovecot } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { cannotRunServers, emptyMailbox, servedMessages, withImapMailbox, type ImapTestServer, type ServedMessage } from './support/private-server.js';
import { settled, startProxy, type TestProxy } from './support/proxy.js';

const alice = { name: 'alice', password: 'alice-secret' };
const CRLF = Buffer.from('\r\n', 'latin1');

const unavailable = cannotRunServers();
const SERVERS: Array<{ name: string; start: () => Promise<ImapTestServer>; skip?: string }> = [
  { name: 'Cyrus IMAP', start: () => startCyrus(), skip: unavailable },
  { name: 'Courier-IMAP', start: () => startCourier(), skip: unavailable },
  { name: 'Dovecot (reference)', start: () => startDovecot() },
];

/** The proxy's UIDL for a message: the default format %08Xu%08Xv. */
const uidl = (uid: number, uidValidity: number) => `${uid.toString(16).padStart(8, '0')}${uidValidity.toString(16).padStart(8, '0')}`;

/** What POP3 must deliver for a message IMAP serves as `source`: a final CRLF is added when missing. */
const retrExpected = (source: Buffer) => (source.subarray(-2).equals(CRLF) ? source : Buffer.concat([source, CRLF]));

/** TOP n 0: the header and the empty line after it; a message without a body is sent whole. */
function topZeroExpected(source: Buffer): Buffer {
  const end = source.indexOf('\r\n\r\n');
  return end < 0 ? retrExpected(source) : source.subarray(0, end + 4);
}

const show = (b: Buffer) => JSON.stringify(b.toString('latin1').slice(0, 400));

for (const kind of SERVERS) {
  describe(kind.name, { skip: kind.skip ?? false }, () => {
    let server: ImapTestServer;
    let proxy: TestProxy;

    before(async () => {
      server = await kind.start();
      proxy = await startProxy({ imapPort: server.imapPort, logLevel: 'info' });
    }, { timeout: 300_000 }); // the first run downloads and unpacks the servers; Cyrus may need 5 starts

    after(async () => {
      await proxy?.close();
      await server?.stop();
    }, { timeout: 60_000 });

    /** Every session a test opened, dropped after it so that a failed test leaves no lock behind. */
    const sessions: RawPop3[] = [];
    const login = async () => {
      const c = await RawPop3.login(proxy.port, alice.name, alice.password);
      sessions.push(c);
      return c;
    };
    const served = () => servedMessages(server, alice);
    const subjects = (ms: ServedMessage[]) => ms.map((m) => m.subject);
    const ALL_FIVE = ['message 1', 'message 2', 'message 3', 'message 4', 'message 5'];

    /** Empties alice's INBOX and fills it with `count` small messages of different sizes. */
    async function resetMailbox(count: number): Promise<void> {
      await emptyMailbox(server, alice);
      for (let i = 1; i <= count; i++) {
        await server.deliver('alice', `Subject: message ${i}\nMessage-ID: <m${i}@other-servers>\n\nbody ${'x'.repeat(i * 10)}\n`);
      }
    }

    async function assertUntouched(): Promise<void> {
      const { messages } = await served();
      assert.deepEqual(subjects(messages), ALL_FIVE);
      assert.equal(messages.some((m) => m.deleted), false, 'no \\Deleted flag left behind');
    }

    /** STAT, LIST and UIDL of a new session, and the server's own view, compared. */
    async function assertListingMatchesServer(c: RawPop3): Promise<ServedMessage[]> {
      const { uidValidity, messages } = await served();
      const total = messages.reduce((sum, m) => sum + m.size, 0);
      assert.equal(await c.command('STAT'), `+OK ${messages.length} ${total}`);
      const list = (await c.multiline('LIST')).body.toString('latin1');
      assert.equal(list, messages.map((m, i) => `${i + 1} ${m.size}\r\n`).join(''), 'LIST');
      const uidls = (await c.multiline('UIDL')).body.toString('latin1');
      assert.equal(uidls, messages.map((m, i) => `${i + 1} ${uidl(m.uid, uidValidity)}\r\n`).join(''), 'UIDL');
      return messages;
    }

    beforeEach(async () => {
      await settled(proxy);
      await resetMailbox(5);
    }, { timeout: 60_000 });

    afterEach(() => {
      for (const c of sessions.splice(0)) c.destroy();
    }, { timeout: 60_000 });

    test('DELE then QUIT removes exactly the deleted messages', { timeout: 120_000 }, async () => {
      const c = await login();
      assert.match(await c.command('DELE 2'), /^\+OK/);
      assert.match(await c.command('DELE 4'), /^\+OK/);
      assert.match(await c.command('STAT'), /^\+OK 3 /);
      assert.match(await c.command('QUIT'), /^\+OK/);
      await c.waitClose();
      const { messages } = await served();
      assert.deepEqual(subjects(messages), ['message 1', 'message 3', 'message 5']);
      assert.equal(messages.some((m) => m.deleted), false);
    });

    test('RSET then QUIT removes nothing', { timeout: 120_000 }, async () => {
      const c = await login();
      await c.command('DELE 1');
      await c.command('DELE 3');
      assert.match(await c.command('RSET'), /^\+OK/);
      assert.match(await c.command('STAT'), /^\+OK 5 /);
      assert.match(await c.command('QUIT'), /^\+OK/);
      await c.waitClose();
      await assertUntouched();
    });

    test('a client that drops after DELE deletes nothing and leaves no \\Deleted flag', { timeout: 120_000 }, async () => {
      const c = await login();
      await c.command('DELE 1');
      await c.command('DELE 2');
      c.destroy();
      await settled(proxy);
      await assertUntouched();
    });

    test('the snapshot stays fixed while mail arrives; the new mail shows in the next session', { timeout: 120_000 }, async () => {
      const c = await login();
      const stat = await c.command('STAT');
      await server.deliver('alice', 'Subject: late arrival\nMessage-ID: <late@other-servers>\n\nlate\n');
      await withImapMailbox(server, alice, async (imap) => assert.equal((imap.mailbox as { exists: number }).exists, 6));
      assert.equal(await c.command('STAT'), stat);
      assert.match(await c.command('LIST 6'), /^-ERR/);
      assert.match(await c.command('RETR 6'), /^-ERR/);
      assert.match(await c.command('NOOP'), /^\+OK/);
      assert.equal(await c.command('STAT'), stat);
      await c.command('QUIT');
      await c.waitClose();
      const next = await login();
      const messages = await assertListingMatchesServer(next);
      assert.deepEqual(subjects(messages), [...ALL_FIVE, 'late arrival']);
      await next.command('QUIT');
      next.destroy();
    });

    test('UIDL is stable across two sessions and made of the IMAP UIDs and UIDVALIDITY', { timeout: 120_000 }, async () => {
      const read = async () => {
        const c = await login();
        const body = (await c.multiline('UIDL')).body.toString('latin1');
        await c.command('QUIT');
        await c.waitClose();
        return body;
      };
      const first = await read();
      const second = await read();
      assert.equal(second, first);
      const { uidValidity, messages } = await served();
      assert.equal(first, messages.map((m, i) => `${i + 1} ${uidl(m.uid, uidValidity)}\r\n`).join(''));
    });

    test('RETR and TOP n 0 are byte-exact against the server\'s BODY[]', { timeout: 120_000 }, async () => {
      await emptyMailbox(server, alice);
      const cases: Array<{ name: string; data: Buffer }> = [
        {
          name: 'dot-lines',
          data: Buffer.from('Subject: dot-lines\nMessage-ID: <dots@other-servers>\n\n.\n..\n.leading dot\n...three\n. \nend.\n.\n', 'latin1'),
        },
        {
          name: '8-bit',
          data: Buffer.from('Subject: 8-bit\nMessage-ID: <8bit@other-servers>\nX-Note: caf\xe9 \xff\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: 8bit\n\nGr\xfc\xdfe, caf\xe9, \x80\x81\xfe\xff\n\xe9t\xe9\n', 'latin1'),
        },
        {
          name: 'no final line end',
          data: Buffer.from('Subject: no final line end\nMessage-ID: <unterminated@other-servers>\n\nfirst line\nlast line without end', 'latin1'),
        },
        {
          name: 'header only, no final line end',
          data: Buffer.from('Subject: header only\nMessage-ID: <header-only@other-servers>', 'latin1'),
        },
      ];
      const stored: string[] = [];
      for (const m of cases) {
        try {
          await server.deliver('alice', m.data);
          stored.push(m.name);
        } catch (err) {
          // Cyrus refuses a header that does not end in a line end ("Message contains invalid
          // header"); every server must take the others.
          assert.equal(m.name, 'header only, no final line end', `${m.name}: ${(err as Error).message}`);
        }
      }
      const { messages } = await served();
      assert.equal(messages.length, stored.length);
      const c = await login();
      for (let n = 1; n <= stored.length; n++) {
        const source = messages[n - 1]!.source;
        const name = stored[n - 1]!;
        assert.equal(await c.command(`LIST ${n}`), `+OK ${n} ${source.length}`, `LIST ${n} (${name}) is the BODY[] length`);
        assert.equal(messages[n - 1]!.size, source.length, `RFC822.SIZE of ${name}`);
        // multiline() undoes the dot-stuffing.
        const retr = await c.multiline(`RETR ${n}`);
        assert.match(retr.status, /^\+OK/);
        const want = retrExpected(source);
        assert.ok(retr.body.equals(want), `RETR ${n} (${name}) differs:\n${show(retr.body)}\n---\n${show(want)}`);
        const top = await c.multiline(`TOP ${n} 0`);
        assert.match(top.status, /^\+OK/);
        const wantTop = topZeroExpected(source);
        assert.ok(top.body.equals(wantTop), `TOP ${n} 0 (${name}) differs:\n${show(top.body)}\n---\n${show(wantTop)}`);
      }
      assert.match(await c.command('QUIT'), /^\+OK/);
      await c.waitClose();
    });

    test('after DELE 1 + QUIT and one new message, the next session lists the new one and not the expunged one', { timeout: 120_000 }, async () => {
      const first = await login();
      assert.match(await first.command('STAT'), /^\+OK 5 /);
      assert.match(await first.command('DELE 1'), /^\+OK/);
      assert.match(await first.command('QUIT'), /^\+OK/);
      await first.waitClose();
      // Back to five messages: the count alone cannot tell that the mailbox changed.
      await server.deliver('alice', `Subject: replacement\nMessage-ID: <replacement@other-servers>\n\n${'r'.repeat(300)}\n`);
      const next = await login();
      const messages = await assertListingMatchesServer(next);
      assert.deepEqual(subjects(messages), ['message 2', 'message 3', 'message 4', 'message 5', 'replacement']);
      const retr = await next.multiline('RETR 5');
      assert.match(retr.body.toString('latin1'), /^Subject: replacement\r\n/);
      await next.command('QUIT');
      next.destroy();
    });
  });
}
