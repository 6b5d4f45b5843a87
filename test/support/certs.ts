/**
 * Certificates for TLS tests, made with the openssl command line in a temp directory once per
 * process: a test CA, a server certificate for "localhost" and 127.0.0.1 signed by it (with a
 * chain file: certificate then CA), and an unrelated self-signed certificate for the same names
 * (what a client trusting only the test CA must refuse). More server certificates signed by the
 * CA can be issued, e.g. to replace one while a server runs.
 */
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const OPENSSL = '/usr/bin/openssl';
const DAYS = '3650';

export interface CertFiles {
  /** The certificate alone (PEM). */
  certFile: string;
  keyFile: string;
  cert: Buffer;
  key: Buffer;
  /** SHA-256 fingerprint as node:tls reports it (colon-separated upper-case hex). */
  fingerprint256: string;
}

export interface ServerCert extends CertFiles {
  /** The certificate followed by the CA that signed it (for a self-signed one: the certificate). */
  chainFile: string;
  chain: Buffer;
}

export interface TestCerts {
  dir: string;
  ca: CertFiles;
  /** For "localhost" and 127.0.0.1, signed by `ca`. */
  server: ServerCert;
  /** Self-signed, for "localhost" and 127.0.0.1, unrelated to `ca`. */
  other: ServerCert;
  /** Issues a new key and certificate for "localhost" and 127.0.0.1 signed by `ca`. */
  issue(name: string): Promise<ServerCert>;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  try {
    await run(OPENSSL, args, { cwd, timeout: 30_000 });
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`openssl ${args.join(' ')} failed: ${e.stderr || e.message}`);
  }
}

const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

const SERVER_EXTENSIONS = [
  'basicConstraints = critical, CA:FALSE',
  'keyUsage = critical, digitalSignature, keyEncipherment',
  'extendedKeyUsage = serverAuth',
  'subjectAltName = DNS:localhost, IP:127.0.0.1',
  'subjectKeyIdentifier = hash',
  'authorityKeyIdentifier = keyid, issuer',
  '',
].join('\n');

async function files(dir: string, name: string): Promise<CertFiles> {
  const certFile = join(dir, `${name}.pem`);
  const keyFile = join(dir, `${name}.key`);
  const cert = await readFile(certFile);
  const key = await readFile(keyFile);
  return { certFile, keyFile, cert, key, fingerprint256: new X509Certificate(cert).fingerprint256 };
}

async function withChain(dir: string, name: string, own: CertFiles, issuer: Buffer | undefined): Promise<ServerCert> {
  const chain = issuer ? Buffer.concat([own.cert, issuer]) : own.cert;
  const chainFile = join(dir, `${name}-chain.pem`);
  await writeFile(chainFile, chain);
  return { ...own, chainFile, chain };
}

async function makeCa(dir: string): Promise<CertFiles> {
  await openssl(
    [
      'req', '-x509', ...EC_KEY, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', DAYS,
      '-subj', '/O=pop3-imap-proxy tests/CN=Test CA',
      '-addext', 'basicConstraints=critical,CA:TRUE',
      '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );
  return files(dir, 'ca');
}

async function issueSigned(dir: string, ca: CertFiles, name: string): Promise<ServerCert> {
  const ext = join(dir, `${name}.ext`);
  await writeFile(ext, SERVER_EXTENSIONS);
  await openssl(['req', '-new', ...EC_KEY, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/O=pop3-imap-proxy tests/CN=localhost`], dir);
  await openssl(
    [
      'x509', '-req', '-in', `${name}.csr`, '-CA', ca.certFile, '-CAkey', ca.keyFile, '-set_serial', serial(),
      '-out', `${name}.pem`, '-days', DAYS, '-sha256', '-extfile', ext,
    ],
    dir,
  );
  return withChain(dir, name, await files(dir, name), ca.cert);
}

async function makeSelfSigned(dir: string, name: string): Promise<ServerCert> {
  const ext = join(dir, `${name}.ext`);
  await writeFile(ext, SERVER_EXTENSIONS.replace('authorityKeyIdentifier = keyid, issuer\n', ''));
  await openssl(
    [
      'req', '-x509', ...EC_KEY, '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', DAYS,
      '-subj', '/O=somebody else/CN=localhost', '-extensions', 'server', '-config', await selfSignedConfig(dir, name, ext),
    ],
    dir,
  );
  return withChain(dir, name, await files(dir, name), undefined);
}

/** A minimal openssl config whose [server] section holds the server extensions. */
async function selfSignedConfig(dir: string, name: string, extFile: string): Promise<string> {
  const conf = join(dir, `${name}.cnf`);
  const ext = await readFile(extFile, 'utf8');
  await writeFile(conf, `[req]\ndistinguished_name = dn\n[dn]\n[server]\n${ext}`);
  return conf;
}

let serials = 0;
function serial(): string {
  serials++;
  return `0x${Date.now().toString(16)}${serials.toString(16).padStart(4, '0')}`;
}

let cached: Promise<TestCerts> | undefined;

/** The test certificates of this process (made on first use, removed when the process exits). */
export function testCerts(): Promise<TestCerts> {
  cached ??= (async () => {
    const dir = await mkdtemp(join(os.tmpdir(), 'pop3test-certs-'));
    process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
    const ca = await makeCa(dir);
    const server = await issueSigned(dir, ca, 'server');
    const other = await makeSelfSigned(dir, 'other');
    const issued = new Set(['ca', 'server', 'other']);
    return {
      dir,
      ca,
      server,
      other,
      issue(name: string): Promise<ServerCert> {
        if (!/^[a-z0-9-]+$/.test(name) || issued.has(name)) throw new Error(`bad or repeated certificate name ${JSON.stringify(name)}`);
        issued.add(name);
        return issueSigned(dir, ca, name);
      },
    };
  })();
  return cached;
}
