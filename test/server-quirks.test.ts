/**
 * IMAP servers that are not Dovecot, played by test/support/exchange-relay.ts in front of the
 * test Dovecot: a server without UIDNEXT in its SELECT answer (Courier-IMAP) and without
 * CONDSTORE/ESEARCH (Exchange Online, Courier); Exchange Online's estimated RFC822.SIZE; and
 * Exchange's answers to a login during an outage, to a wrong password and to a throttled
 * client, at login and in the middle of a RETR. The store is always checked straight at
 * Dovecot, and sizes and UIDLs against Dovecot's own POP3.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, beforeEach, test } from 'node:test';
import { emptyMailbox, mailboxState, startDovecot, type Dovecot } from './support/dovecot.js';
import { EXCHANGE_BYE, estimateSize, startExchangeRelay, type ExchangeRelay } from './support/exchange-relay.js';
import { RawPop3 } from './support/pop3-client.js';
import { settled, startProxy, type TestProxy, type TestProxyOptions } from './support/proxy.js';

const TEST = { timeout: 120_000 };
const alice = { name: 'alice', password: 'alice-secret' };
let dovecot: Dovecot;

before(async () => {
  dovecot = await startDovecot();
}, { timeout: 60_000 });

after(async () => {
  await dovecot?.stop();
}, { timeout: 60_000 });


/** Empties alice's INBOX and delivers these messages. */
async function resetMailbox(messages: string[]): Promise<void> {
  await emptyMailbox(dovecot, alice);
  for (const m of messages) await dovecot.deliver('alice', m);
}

const small = (i: number) => `Subject: message ${i}\nMessage-ID: <m${i}@quirks>\n\nbody ${i}\n`;
const FIVE = [1, 2, 3, 4, 5].map(small);

/** A relay and a proxy of their own (so that no other test's cache or backoff is shared), closed after `run`. */
async function throughRelay(
  relayOptions: Parameters<typeof startExchangeRelay>[1],
  run: (proxy: TestProxy, relay: ExchangeRelay) => Promise<void>,
  proxyOptions: Partial<TestProxyOptions> = {},
): Promise<void> {
  const relay = await startExchangeRelay(dovecot.imapPort, relayOptions);
  const proxy = await startProxy({ imapPort: relay.port, ...proxyOptions });
  try {
    await run(proxy, relay);
  } finally {
    await proxy.close();
    await relay.close();
  }
}

/** A multi-line listing (LIST, UIDL) of one session, from Dovecot's own POP3 or the proxy. */
async function listing(port: number, command: 'LIST' | 'UIDL'): Promise<string> {
  const c = await RawPop3.login(port, alice.name, alice.password);
  try {
    return (await c.multiline(command)).body.toString('latin1');
  } finally {
    await c.command('QUIT');
    c.destroy();
  }
}

const native = (command: 'LIST' | 'UIDL') => listing(dovecot.pop3Port, command);

/** "n size" lines as [n, size] pairs. */
const sizes = (list: string) => list.trim().split('\r\n').map((l) => l.split(' ').map(Number) as [number, number]);

beforeEach(async () => {
  await resetMailbox(FIVE);
}, { timeout: 60_000 });

test('without UIDNEXT, CONDSTORE or ESEARCH: after DELE 1 + QUIT and one new message (the same count), the next session lists exactly what the store holds', TEST, async () => {
  // Courier-IMAP: no UIDNEXT in SELECT; no CONDSTORE or ESEARCH (as Exchange Online, whose capabilities the relay advertises).
  await throughRelay({ stripUidNext: true, reportSize: (n) => n }, async (proxy, relay) => {
    const first = await RawPop3.login(proxy.port, alice.name, alice.password);
    assert.equal((await first.multiline('UIDL')).body.toString('latin1'), await native('UIDL'));
    assert.match(await first.command('DELE 1'), /^\+OK/);
    assert.match(await first.command('QUIT'), /^\+OK/);
    await first.waitClose();
    await dovecot.deliver('alice', small(6));
    // Five messages again: EXISTS is what the first session saw, and there is no UIDNEXT to tell.
    assert.equal((await mailboxState(dovecot, alice)).length, 5);

    const second = await RawPop3.login(proxy.port, alice.name, alice.password);
    const uidl = (await second.multiline('UIDL')).body.toString('latin1');
    const list = (await second.multiline('LIST')).body.toString('latin1');
    const retr5 = await second.multiline('RETR 5');
    assert.match(await second.command('QUIT'), /^\+OK/);
    second.destroy();
    assert.equal(uidl, await native('UIDL'), 'the expunged message is gone and the new one is there');
    assert.equal(list, await native('LIST'));
    assert.match(retr5.body.toString('latin1'), /Subject: message 6/);
    assert.ok(!relay.commands.some((c) => /\b(?:ENABLE|CONDSTORE|CHANGEDSINCE|RETURN \()/i.test(c)), 'no extension the server did not offer was used');
  });
});

test("Exchange's estimated RFC822.SIZE: the first session lists the estimate, a RETR learns the true size, the next session lists it", TEST, async () => {
  const big = (kb: number, name: string) => `Subject: ${name}\nMessage-ID: <${name}@quirks>\n\n${'y'.repeat(99).concat('\n').repeat(kb * 10)}`;
  // Small ones are read ahead in one FETCH; the large ones are streamed in windows (one over the 1 MiB window).
  await resetMailbox([small(1), big(300, 'medium'), small(3), big(1300, 'large'), small(5)]);
  const exact = await native('LIST');
  const estimated = sizes(exact)
    .map(([n, size]) => `${n} ${estimateSize(size)}\r\n`)
    .join('');
  const total = (pairs: Array<[number, number]>) => pairs.reduce((sum, [, size]) => sum + size, 0);

  await throughRelay({}, async (proxy) => {
    const first = await RawPop3.login(proxy.port, alice.name, alice.password);
    assert.equal((await first.multiline('LIST')).body.toString('latin1'), estimated, 'the server says so, and nothing better is known yet');
    const nativeClient = await RawPop3.login(dovecot.pop3Port, alice.name, alice.password);
    for (let n = 1; n <= 5; n++) {
      const ours = await first.multiline(`RETR ${n}`, 30_000);
      const theirs = await nativeClient.multiline(`RETR ${n}`, 30_000);
      assert.ok(ours.body.equals(theirs.body), `RETR ${n} is byte-exact`);
    }
    await nativeClient.command('QUIT');
    nativeClient.destroy();
    assert.equal((await first.multiline('LIST')).body.toString('latin1'), estimated, 'sizes never change within a session (RFC 1939)');
    assert.equal(await first.command('STAT'), `+OK 5 ${total(sizes(estimated))}`);
    assert.match(await first.command('QUIT'), /^\+OK/);
    await first.waitClose();

    const second = await RawPop3.login(proxy.port, alice.name, alice.password);
    assert.equal((await second.multiline('LIST')).body.toString('latin1'), exact, 'the sizes RETR counted, equal to Dovecot\'s own POP3');
    assert.equal(await second.command('STAT'), `+OK 5 ${total(sizes(exact))}`);
    assert.match(await second.command('QUIT'), /^\+OK/);
    second.destroy();
  });
});

/** PASS through the proxy; returns the reply line. */
async function pass(port: number, password = alice.password): Promise<string> {
  const c = await RawPop3.connect(port);
  try {
    await c.command(`USER ${alice.name}`);
    const reply = await c.command(`PASS ${password}`, 30_000);
    if (reply.startsWith('+OK')) await c.command('QUIT');
    return reply;
  } finally {
    c.destroy();
  }
}

test('an Exchange outage at login (NO Server Unavailable. 15) is [SYS/TEMP], not [AUTH]; a wrong password (NO LOGIN failed.) is [AUTH]', TEST, async () => {
  await throughRelay({}, async (proxy, relay) => {
    relay.failNextLogin({ answer: 'NO Server Unavailable. 15' });
    assert.match(await pass(proxy.port), /^-ERR \[SYS\/TEMP\] /);
    relay.failNextLogin({ answer: 'NO LOGIN failed.' });
    assert.match(await pass(proxy.port), /^-ERR \[AUTH\] /);
    // No backoff was suggested: the next login goes through.
    assert.match(await pass(proxy.port), /^\+OK/);
  });
});

test('a throttled login (BAD Request is throttled + BYE) is [SYS/TEMP], and the mailbox backs off for the suggested time without connecting', TEST, async () => {
  const backoffMs = 2000;
  await throughRelay({}, async (proxy, relay) => {
    relay.failNextLogin({ answer: `BAD Request is throttled. Suggested Backoff Time: ${backoffMs} milliseconds`, bye: EXCHANGE_BYE });
    const started = Date.now();
    assert.match(await pass(proxy.port), /^-ERR \[SYS\/TEMP\] /);
    assert.ok(Date.now() - started < backoffMs, 'answered at once, not after the backoff');
    const connections = relay.connections;
    assert.match(await pass(proxy.port), /^-ERR \[SYS\/TEMP\] /);
    assert.equal(relay.connections, connections, 'no connection to the server while backing off');
    assert.match(proxy.log(), /throttled this mailbox; not trying again before \d{4}-\d\d-\d\dT[\d:.]+Z \(in \d+ s\)/);
    await sleep(Math.max(0, started + backoffMs + 200 - Date.now()));
    assert.match(await pass(proxy.port), /^\+OK/, 'after the backoff the login goes through');
    assert.equal(relay.connections, connections + 1);
  });
});

for (const flagOnDele of [false, true]) {
  const mode = flagOnDele ? '--flag-on-dele' : 'flags at QUIT';

  test(`${mode}: throttled in the middle of a streamed RETR: no final ".", nothing deleted, no flag left, the mailbox backs off`, TEST, async () => {
    await dovecot.deliver('alice', `Subject: large\nMessage-ID: <large@quirks>\n\n${'x'.repeat(76).concat('\n').repeat(40_000)}`);
    await throughRelay(
      { reportSize: (n) => n },
      async (proxy, relay) => {
        const c = await RawPop3.login(proxy.port, alice.name, alice.password);
        assert.match(await c.command('DELE 1'), /^\+OK/);
        // The second 1 MiB window of the 3 MB message: the client already has the +OK and the first MiB.
        relay.throttleNext(/BODY\.PEEK\[\]<[1-9]\d*\./i, 1500);
        c.send('RETR 6');
        await c.waitClose(30_000);
        const received = c.received().toString('latin1');
        assert.match(received, /\+OK Message follows\.\r\n/);
        assert.ok(received.length > 500_000, `part of the message arrived (${received.length} bytes)`);
        assert.equal(received.endsWith('\r\n.\r\n'), false, 'no terminator after a cut');
        assert.ok(relay.commands.some((cmd) => /BODY\.PEEK\[\]<[1-9]/i.test(cmd)), 'the throttled FETCH was sent');
        assert.match(await pass(proxy.port), /^-ERR \[SYS\/TEMP\] /, 'the mailbox backs off');
        await sleep(1700);
        await settled(proxy);
      },
      { policy: { flagOnDele } },
    );
    const state = await mailboxState(dovecot, alice);
    assert.deepEqual(state.map((m) => m.subject), ['message 1', 'message 2', 'message 3', 'message 4', 'message 5', 'large']);
    assert.equal(state.some((m) => m.deleted), false, 'no \\Deleted flag left behind');
  });
}

test('throttled while reading small messages ahead: -ERR [SYS/TEMP] before any data, never a final "."; nothing deleted', TEST, async () => {
  await throughRelay({ reportSize: (n) => n }, async (proxy, relay) => {
    const c = await RawPop3.login(proxy.port, alice.name, alice.password);
    assert.match(await c.command('DELE 2'), /^\+OK/);
    relay.throttleNext(/FETCH .*BODY\.PEEK\[\]/i, 1000);
    assert.match(await c.command('RETR 1', 30_000), /^-ERR \[SYS\/TEMP\] /);
    await c.waitClose(30_000);
    assert.equal(c.received().toString('latin1').includes('\r\n.\r\n'), false);
    await sleep(1200);
    await settled(proxy);
  });
  const state = await mailboxState(dovecot, alice);
  assert.equal(state.length, 5);
  assert.equal(state.some((m) => m.deleted), false);
});
