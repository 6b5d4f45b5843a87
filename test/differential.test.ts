/**
 * Differential tests: the proxy in front of Dovecot's IMAP must answer STAT, LIST, UIDL, RETR
 * and TOP exactly as Dovecot's own POP3 does on the same store, byte for byte, over a corpus
 * that stresses byte-exactness.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { corpus } from './support/corpus.js';
import { startDovecot, type Dovecot } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { startProxy, type TestProxy } from './support/proxy.js';

let dovecot: Dovecot;
let proxy: TestProxy;
let native: RawPop3;
let proxied: RawPop3;
const messages = corpus();

before(async () => {
  dovecot = await startDovecot();
  for (const m of messages) await dovecot.deliver('alice', m.data);
  proxy = await startProxy({ imapPort: dovecot.imapPort, logLevel: 'info' });
  native = await open(dovecot.pop3Port);
  proxied = await open(proxy.port);
}, { timeout: 120_000 });

after(async () => {
  for (const c of [native, proxied]) {
    await c?.command('QUIT').catch(() => undefined);
    c?.destroy();
  }
  await proxy?.close();
  await dovecot?.stop();
}, { timeout: 60_000 });

async function open(port: number): Promise<RawPop3> {
  const c = await RawPop3.connect(port);
  assert.match(await c.command('USER alice'), /^\+OK/);
  assert.match(await c.command('PASS alice-secret', 30_000), /^\+OK/);
  return c;
}

/** Sends a multi-line command to both servers and returns both raw bodies, still stuffed. */
async function both(command: string): Promise<{ native: Buffer; proxied: Buffer }> {
  const answers: Buffer[] = [];
  for (const c of [native, proxied]) {
    const status = await c.command(command);
    assert.match(status, /^\+OK/, `${command} on port ${c === native ? 'native' : 'proxy'}`);
    answers.push(await c.readMultiline());
  }
  return { native: answers[0]!, proxied: answers[1]! };
}

test('STAT is equal', { timeout: 120_000 }, async () => {
  assert.equal(await proxied.command('STAT'), await native.command('STAT'));
});

test('LIST and UIDL are equal, whole and per message', { timeout: 120_000 }, async () => {
  for (const command of ['LIST', 'UIDL']) {
    const r = await both(command);
    assert.deepEqual(r.proxied.toString(), r.native.toString(), command);
  }
  for (let n = 1; n <= messages.length; n++) {
    assert.equal(await proxied.command(`LIST ${n}`), await native.command(`LIST ${n}`));
    assert.equal(await proxied.command(`UIDL ${n}`), await native.command(`UIDL ${n}`));
  }
});

test('RETR returns the same bytes for every message of the corpus', { timeout: 120_000 }, async () => {
  let bytes = 0;
  for (let n = 1; n <= messages.length; n++) {
    const r = await both(`RETR ${n}`);
    assert.ok(r.proxied.equals(r.native), `RETR ${n} (${messages[n - 1]!.name}) differs`);
    bytes += r.proxied.length;
  }
  assert.ok(bytes > 3_000_000);
});

test('TOP returns the same bytes for every message and line count', { timeout: 120_000 }, async () => {
  for (let n = 1; n <= messages.length; n++) {
    for (const lines of [0, 1, 2, 10, 99999999]) {
      const r = await both(`TOP ${n} ${lines}`);
      assert.ok(r.proxied.equals(r.native), `TOP ${n} ${lines} (${messages[n - 1]!.name}) differs:\n${r.proxied.toString('latin1').slice(0, 300)}\n---\n${r.native.toString('latin1').slice(0, 300)}`);
    }
  }
});

test('the sizes LIST reports equal the bytes RETR delivers (before stuffing)', { timeout: 120_000 }, async () => {
  for (let n = 1; n <= messages.length; n++) {
    const size = Number((await proxied.command(`LIST ${n}`)).split(' ')[2]);
    const body = (await proxied.multiline(`RETR ${n}`)).body;
    // A message without a final line end gets CRLF before the terminator, outside its size.
    const unterminated = !messages[n - 1]!.data.toString('latin1').endsWith('\n');
    assert.equal(body.length, size + (unterminated ? 2 : 0), `message ${n} (${messages[n - 1]!.name})`);
  }
});
