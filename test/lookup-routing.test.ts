/**
 * Routing by lookup (--lookup-url): for each login the proxy asks a lookup service in the shape
 * of nginx mail's auth_http (test/support/lookup-service.ts, a real HTTP server) which profile
 * the login goes to and under which name, in front of two real Dovecots. Refusals wait the
 * service's Auth-Wait and get the failed-login reply; a service that cannot answer is a
 * temporary failure ([SYS/TEMP], 454), never a credentials error; OK answers are kept briefly.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import type { LookupConfig } from '../src/config/lookup-flags.js';
import { startDovecot, type Dovecot } from './support/dovecot.js';
import { startLookupService, type LookupService } from './support/lookup-service.js';
import { RawPop3 } from './support/pop3-client.js';
import { freePort } from './support/private-server.js';
import { startProxy, type TestProxy } from './support/proxy.js';

let main: Dovecot;
let second: Dovecot;
let lookup: LookupService;
let profiles: Record<string, unknown>;

before(async () => {
  main = await startDovecot();
  second = await startDovecot({ users: [{ name: 'carol', password: 'carol-secret' }] });
  await main.deliver('alice', 'Subject: alice on the main backend\r\n\r\nhello\r\n');
  await main.deliver('alice', 'Subject: another\r\n\r\nhello\r\n');
  await second.deliver('carol', 'Subject: carol on the second backend\r\n\r\nhello\r\n');
  lookup = await startLookupService();
  lookup.answer('carol', { 'Auth-Status': 'OK', 'Auth-Profile': 'second' });
  lookup.answer('carol-cached', { 'Auth-Status': 'OK', 'Auth-Profile': 'second', 'Auth-User': 'carol' });
  lookup.answer('alias-of-alice', { 'Auth-Status': 'OK', 'Auth-User': 'alice' });
  lookup.answer('blocked', { 'Auth-Status': 'Account disabled', 'Auth-Wait': '1' });
  lookup.answer('misrouted', { 'Auth-Status': 'OK', 'Auth-Profile': 'no-such-profile' });
  profiles = { second: { 'imap-host': '127.0.0.1', 'imap-port': second.imapPort, 'imap-tls': 'none' } };
}, { timeout: 120_000 });

after(async () => {
  await main?.stop();
  await second?.stop();
  await lookup?.close();
}, { timeout: 60_000 });

function lookupAt(url: string, extra: Partial<LookupConfig> = {}): LookupConfig {
  return { url, sendPassword: false, timeoutMs: 3000, cacheMs: 0, ...extra };
}

async function withProxy<T>(config: LookupConfig, use: (proxy: TestProxy) => Promise<T>, smtp = false): Promise<T> {
  const proxy = await startProxy({ imapPort: main.imapPort, profiles, lookup: config, ...(smtp ? { smtp: {} } : {}) });
  try {
    return await use(proxy);
  } finally {
    await proxy.close();
  }
}

async function pass(port: number, user: string, password: string): Promise<string> {
  const client = await RawPop3.connect(port);
  try {
    await client.command(`USER ${user}`);
    const reply = await client.command(`PASS ${password}`, 30_000);
    if (reply.startsWith('+OK')) await client.command('QUIT');
    return reply;
  } finally {
    client.destroy();
  }
}

/** EHLO and AUTH PLAIN on the SMTP port; the AUTH reply line. */
function smtpAuth(port: number, user: string, password: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let buffer = '';
    let step = 0;
    socket.setTimeout(30_000, () => socket.destroy(new Error(`no SMTP answer; so far: ${buffer}`)));
    socket.on('error', reject);
    socket.on('data', (chunk) => {
      buffer += chunk.toString('latin1');
      for (let end = buffer.indexOf('\r\n'); end >= 0; end = buffer.indexOf('\r\n')) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (line[3] === '-') continue;
        step++;
        if (step === 1) socket.write('EHLO client.test\r\n');
        else if (step === 2) socket.write(`AUTH PLAIN ${Buffer.from(`\0${user}\0${password}`).toString('base64')}\r\n`);
        else {
          socket.end('QUIT\r\n');
          resolve(line);
        }
      }
    });
  });
}

const since = (count: number) => lookup.requests.slice(count);

test('a login routed by the lookup to a second profile; the request is nginx auth_http\'s', { timeout: 120_000 }, async () => {
  await withProxy(lookupAt(lookup.url), async (proxy) => {
    const before = lookup.requests.length;
    assert.match(await pass(proxy.port, 'carol', 'carol-secret'), /^\+OK Logged in, 1 message\./);
    const [request, ...more] = since(before);
    assert.equal(more.length, 0);
    assert.equal(request!.method, 'GET');
    assert.equal(request!.headers['auth-method'], 'plain');
    assert.equal(request!.headers['auth-user'], 'carol');
    assert.equal(request!.headers['auth-protocol'], 'pop3');
    assert.equal(request!.headers['auth-login-attempt'], '1');
    assert.equal(request!.headers['client-ip'], '127.0.0.1');
    assert.equal(request!.headers['auth-pass'], undefined, 'no Auth-Pass unless --lookup-send-password');
    assert.match(proxy.log(), /Login routed to profile second/);
  });
});

test('a user name the lookup rewrites: the backend is logged in to as the new name', { timeout: 120_000 }, async () => {
  await withProxy(lookupAt(lookup.url), async (proxy) => {
    assert.match(await pass(proxy.port, 'alias-of-alice', 'alice-secret'), /^\+OK Logged in, 2 messages\./);
    assert.match(proxy.log(), /Login routed to profile default as alice/);
  });
});

test('a refusal with Auth-Wait: -ERR [AUTH] after the wait; the second attempt says so', { timeout: 120_000 }, async () => {
  await withProxy(lookupAt(lookup.url), async (proxy) => {
    const before = lookup.requests.length;
    const client = await RawPop3.connect(proxy.port);
    try {
      await client.command('USER blocked');
      let started = Date.now();
      assert.match(await client.command('PASS whatever', 30_000), /^-ERR \[AUTH\] /);
      const waited = Date.now() - started;
      assert.ok(waited >= 950 && waited < 5000, `answered after ${waited} ms`);
      await client.command('USER blocked');
      started = Date.now();
      assert.match(await client.command('PASS again', 30_000), /^-ERR \[AUTH\] /);
      assert.ok(Date.now() - started >= 950);
    } finally {
      client.destroy();
    }
    assert.deepEqual(since(before).map((r) => r.headers['auth-login-attempt']), ['1', '2'], 'refusals are never cached');
  });
});

test('the lookup service down or too slow: -ERR [SYS/TEMP], never a credentials error; an unknown profile likewise', { timeout: 120_000 }, async () => {
  const nobody = `http://127.0.0.1:${await freePort()}/auth`;
  await withProxy(lookupAt(nobody), async (proxy) => {
    assert.match(await pass(proxy.port, 'alice', 'alice-secret'), /^-ERR \[SYS\/TEMP\] /);
    assert.match(proxy.log(), /routing lookup failed/);
  });
  await withProxy(lookupAt(lookup.url, { timeoutMs: 300 }), async (proxy) => {
    lookup.setDelay(2000);
    try {
      const started = Date.now();
      assert.match(await pass(proxy.port, 'carol', 'carol-secret'), /^-ERR \[SYS\/TEMP\] /);
      assert.ok(Date.now() - started < 1500, `answered after ${Date.now() - started} ms`);
    } finally {
      lookup.setDelay(0);
    }
    assert.match(await pass(proxy.port, 'misrouted', 'x'), /^-ERR \[SYS\/TEMP\] /);
    assert.match(proxy.log(), /named profile "no-such-profile", which the config file does not have/);
  });
});

test('the cache: a second login within --lookup-cache makes no request; another protocol asks anew', { timeout: 120_000 }, async () => {
  await withProxy(lookupAt(lookup.url, { cacheMs: 30_000 }), async (proxy) => {
    const before = lookup.requests.length;
    assert.match(await pass(proxy.port, 'carol-cached', 'carol-secret'), /^\+OK/);
    assert.match(await pass(proxy.port, 'carol-cached', 'carol-secret'), /^\+OK/);
    assert.equal(since(before).length, 1, 'one lookup for two logins');
    // A wrong password still fails: the cache holds the route, never a password's verdict.
    assert.match(await pass(proxy.port, 'carol-cached', 'wrong'), /^-ERR \[AUTH\] /);
    assert.equal(since(before).length, 1);
  });
});

test('Auth-Pass is sent only with --lookup-send-password, escaped as nginx does', { timeout: 120_000 }, async () => {
  await withProxy(lookupAt(lookup.url, { sendPassword: true }), async (proxy) => {
    const before = lookup.requests.length;
    assert.match(await pass(proxy.port, 'carol', 'carol-secret'), /^\+OK/);
    await pass(proxy.port, 'nobody-known', 'with space%and\xe9');
    const [first, second] = since(before);
    assert.equal(first!.headers['auth-pass'], 'carol-secret');
    assert.equal(second!.headers['auth-pass'], 'with%20space%25and%C3%A9');
    assert.equal(proxy.log().includes('carol-secret'), false, 'no password in the log');
  });
});

test('SMTP takes the same lookup: Auth-Protocol smtp; a refusal is 535 5.7.8 after the wait, an outage 454 4.7.0', { timeout: 120_000 }, async () => {
  await withProxy(lookupAt(lookup.url), async (proxy) => {
    const before = lookup.requests.length;
    // The second profile has no relay: the login itself is taken, sending would be refused.
    assert.match(await smtpAuth(proxy.smtpPort!, 'carol', 'carol-secret'), /^235 /);
    assert.match(proxy.log(), /profile second \(which has no relay\)/);
    const started = Date.now();
    assert.match(await smtpAuth(proxy.smtpPort!, 'blocked', 'x'), /^535 5\.7\.8 /);
    assert.ok(Date.now() - started >= 950, `answered after ${Date.now() - started} ms`);
    assert.deepEqual(since(before).map((r) => r.headers['auth-protocol']), ['smtp', 'smtp']);
  }, true);
  const nobody = `http://127.0.0.1:${await freePort()}/auth`;
  await withProxy(lookupAt(nobody), async (proxy) => {
    assert.match(await smtpAuth(proxy.smtpPort!, 'carol', 'carol-secret'), /^454 4\.7\.0 /);
  }, true);
});
