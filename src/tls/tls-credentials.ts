/**
 * The certificate and key both front doors present (POP3's STLS and TLS port, SMTP's STARTTLS
 * and TLS port), read from PEM files. They can be read again (SIGHUP) while the server runs:
 * new handshakes use the new pair, running sessions keep theirs. A pair that does not load
 * leaves the current one in place.
 */
import { readFileSync } from 'node:fs';
import tls from 'node:tls';

/** TLS 1.2 is the oldest version offered (RFC 8996 retired 1.0 and 1.1). */
export const MIN_TLS_VERSION = 'TLSv1.2';

export interface TlsPair {
  readonly cert: Buffer;
  readonly key: Buffer;
}

/** Reads and checks a certificate (chain) and its key; throws with a message saying what is wrong. */
export function loadTlsCredentials(certFile: string, keyFile: string): TlsPair {
  const cert = readPem(certFile, 'certificate');
  const key = readPem(keyFile, 'private key');
  try {
    // Fails when the key does not match the certificate or either does not parse.
    tls.createSecureContext({ cert, key, minVersion: MIN_TLS_VERSION });
  } catch (err) {
    throw new Error(`${certFile} and ${keyFile} are not a usable pair: ${(err as Error).message}`, { cause: err });
  }
  return { cert, key };
}

function readPem(file: string, what: string): Buffer {
  let pem: Buffer;
  try {
    pem = readFileSync(file);
  } catch (err) {
    throw new Error(`cannot read the ${what} ${file}: ${(err as Error).message}`, { cause: err });
  }
  if (!pem.includes('-----BEGIN ')) throw new Error(`${file} holds no PEM ${what}`);
  return pem;
}

export class TlsCredentials {
  private pair: TlsPair;
  private context: tls.SecureContext;

  constructor(
    private readonly certFile: string,
    private readonly keyFile: string,
  ) {
    this.pair = loadTlsCredentials(certFile, keyFile);
    this.context = tls.createSecureContext(this.serverOptions());
  }

  /** For tls.createServer() and setSecureContext(). */
  serverOptions(): tls.SecureContextOptions {
    return { cert: this.pair.cert, key: this.pair.key, minVersion: MIN_TLS_VERSION };
  }

  /** For connections upgraded by STLS. */
  get secureContext(): tls.SecureContext {
    return this.context;
  }

  /** Reads the files again; throws (keeping the current pair) if they do not load. */
  reload(): void {
    const pair = loadTlsCredentials(this.certFile, this.keyFile);
    this.pair = pair;
    this.context = tls.createSecureContext(this.serverOptions());
  }
}
