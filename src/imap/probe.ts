/**
 * Whether the IMAP server answers a connection: it greets within the timeout, over the same
 * transport and TLS settings the sessions use. Nobody logs in.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { ImapSettings } from './imap-client.js';

export function probeImap(settings: ImapSettings, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket =
      settings.tls === 'implicit'
        ? tls.connect({
            host: settings.host,
            port: settings.port,
            servername: settings.servername ?? (net.isIP(settings.host) ? undefined : settings.host),
            rejectUnauthorized: settings.verifyTls,
            minVersion: 'TLSv1.2',
            ...(settings.ca ? { ca: settings.ca } : {}),
          })
        : net.connect({ host: settings.host, port: settings.port });
    let greeting = '';
    const done = (err?: Error) => {
      socket.destroy();
      if (err) reject(err);
      else resolve();
    };
    socket.setTimeout(timeoutMs, () => done(new Error(`no greeting within ${timeoutMs} ms`)));
    socket.on('error', (err: Error) => done(err));
    socket.on('data', (chunk: Buffer) => {
      greeting += chunk.toString('latin1');
      if (greeting.length > 4096) return done(new Error('greeting too long'));
      const line = greeting.split('\r\n', 1)[0];
      if (line.length === greeting.length) return;
      if (/^\* (OK|PREAUTH)\b/i.test(line)) done();
      else done(new Error(`unexpected greeting: ${line.slice(0, 100)}`));
    });
    socket.on('end', () => done(new Error('closed before greeting')));
  });
}
