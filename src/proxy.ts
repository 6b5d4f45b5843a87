/**
 * Wires the parts together: the POP3 server in front, the IMAP backend behind, the lock
 * registry between them.
 */
import type { Logger } from 'winston';
import type { ProxyConfig } from './config/options.js';
import { ImapMaildropProvider } from './imap/imap-maildrop.js';
import { compileUidlFormat } from './imap/uidl-format.js';
import type { LockRegistry } from './lock/lock-registry.js';
import { MemoryLockRegistry } from './lock/memory-lock-registry.js';
import { AuthThrottle } from './limits/auth-throttle.js';
import { ConnectionLimiter } from './limits/connection-limiter.js';
import { Pop3Server } from './pop3/server.js';
import { TlsCredentials } from './tls/tls-credentials.js';

export const IMPLEMENTATION = 'pop3-imap-proxy';

/** FETCH window when streaming a message: large enough for few round trips, small enough to stream. */
const DOWNLOAD_CHUNK = 1024 * 1024;

/** UIDs and sizes kept between sessions, over all mailboxes: 12 octets each, about 24 MB in all. */
const SNAPSHOT_CACHE_MESSAGES = 2_000_000;

export function createProxy(config: ProxyConfig, logger: Logger, locks: LockRegistry = new MemoryLockRegistry()): Pop3Server {
  const provider = new ImapMaildropProvider(
    {
      ...config.imap,
      timeoutMs: config.backendTimeoutMs,
      uidl: compileUidlFormat(config.uidlFormat),
      chunkSize: DOWNLOAD_CHUNK,
      cacheMessages: SNAPSHOT_CACHE_MESSAGES,
    },
    logger,
  );
  const tls = config.tls && new TlsCredentials(config.tls.certFile, config.tls.keyFile);
  const throttle = new AuthThrottle(config.limits.authFailDelayMs);
  return new Pop3Server(
    {
      host: config.listen.host,
      port: config.listen.port,
      limits: {
        maxLineLength: 512,
        maxOverlongLines: 3,
        idleTimeoutMs: config.idleTimeoutMs,
        authTimeoutMs: config.limits.authTimeoutMs,
      },
      limiter: new ConnectionLimiter(config.limits),
      tls,
      tlsPort: config.tls?.port,
    },
    {
      provider,
      locks,
      logger,
      implementation: IMPLEMENTATION,
      policy: {
        tlsAvailable: tls !== undefined,
        allowPlaintextAuth: config.allowPlaintextAuth,
        maxAuthFailures: config.limits.maxAuthFailures,
        maxErrors: config.limits.maxErrors,
        authFailed: (address) => throttle.failed(address),
      },
    },
  );
}
