/**
 * The ends of a session that are not about the mailbox: a shutdown does not wait for
 * connections that were never greeted, and a session whose lock cannot be released still ends,
 * is logged and stops being counted.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { testCerts, type TestCerts } from './support/certs.js';
import { startDovecot, type Dovecot } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { startProxy } from './support/proxy.js';
import type { LockLease, LockRegistry } from '../src/lock/lock-registry.js';
import { MemoryLockRegistry } from '../src/lock/memory-lock-registry.js';

let dovecot: Dovecot;
let certs: TestCerts;

before(async () => {
  dovecot = await startDovecot();
  await dovecot.deliver('alice', 'Subject: one\n\nbody\n');
  certs = await testCerts();
}, { timeout: 120_000 });

after(async () => {
  await dovecot?.stop();
}, { timeout: 60_000 });

/** Opens a TCP connection and says nothing: a TLS handshake or a PROXY header never comes. */
function silentSocket(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Resolves once the peer closed the socket, or rejects after `ms`. */
function closedWithin(socket: net.Socket, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    if (socket.destroyed) return resolve();
    const timer = setTimeout(() => reject(new Error(`socket still open after ${ms} ms`)), ms);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.resume();
  });
}

test('shutdown drops connections still in the TLS handshake or waiting for their PROXY header at once', { timeout: 120_000 }, async () => {
  const tls = { certFile: certs.server.chainFile, keyFile: certs.server.keyFile, implicit: true };
  // The authentication deadline (60 s here) is what used to hold close() up.
  const plain = await startProxy({ imapPort: dovecot.imapPort, logLevel: 'info', tls });
  const proxied = await startProxy({ imapPort: dovecot.imapPort, logLevel: 'info', proxyProtocol: true });
  const handshaking = await silentSocket(plain.tlsPort!);
  const headerless = await silentSocket(proxied.port);
  // Let the proxies see both connections before they stop.
  await new Promise((r) => setTimeout(r, 200));
  const started = Date.now();
  await Promise.all([plain.close(), proxied.close()]);
  const took = Date.now() - started;
  assert.ok(took < 1000, `close() returned after ${took} ms`);
  await closedWithin(handshaking, 1000);
  await closedWithin(headerless, 1000);
});

/** In-process locks whose release fails, as a lock service that went away would. */
class FailingReleaseLocks implements LockRegistry {
  private readonly inner = new MemoryLockRegistry();

  async acquire(key: string): Promise<LockLease | undefined> {
    const lease = await this.inner.acquire(key);
    if (!lease) return undefined;
    return {
      lost: lease.lost,
      release: async () => {
        await lease.release();
        throw new Error('lock service unreachable');
      },
    };
  }
}

test('a lock release that fails still ends the session: logged, no longer counted, QUIT answered', { timeout: 120_000 }, async () => {
  const proxy = await startProxy({ imapPort: dovecot.imapPort, logLevel: 'info', metrics: true, locks: new FailingReleaseLocks() });
  const active = async () => {
    const text = await (await fetch(`http://127.0.0.1:${proxy.server.metricsAddress!.port}/metrics`)).text();
    return Number(/^pop3proxy_sessions_active (\S+)$/m.exec(text)?.[1]);
  };
  try {
    const dropped = await RawPop3.login(proxy.port, 'alice', 'alice-secret');
    dropped.destroy();
    for (let i = 0; i < 100 && (await active()) !== 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await active(), 0, 'a dropped session is no longer counted');

    const quitting = await RawPop3.login(proxy.port, 'alice', 'alice-secret');
    assert.equal(await active(), 1);
    assert.match(await quitting.command('QUIT'), /^\+OK/);
    await quitting.waitClose();
    assert.equal(await active(), 0, 'a session that QUIT is no longer counted');
    const log = proxy.log();
    assert.equal(log.match(/Could not release the mailbox lock: lock service unreachable/g)?.length, 2, log);
    assert.match(log, /Session ended: client-closed/);
    assert.match(log, /Session ended: quit/);
  } finally {
    await proxy.close();
  }
});
