/**
 * The HAProxy PROXY protocol, versions 1 (text) and 2 (binary): a load balancer in front of
 * the proxy announces the real client's address at the start of each connection, so that logs,
 * limits and metrics see the client rather than the balancer.
 * Spec: https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt
 */
import type { Socket } from 'node:net';
import type { ClientInfo } from '../maildrop/maildrop.js';

const V1_PREFIX = Buffer.from('PROXY ');
/** "PROXY UNKNOWN" plus the longest address pair fits in 107 octets with CRLF. */
const V1_MAX = 107;
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V2_HEADER = 16;
/** Addresses and the TLVs a balancer may add; anything longer is not a header we accept. */
const V2_MAX_BODY = 4096;

export type ProxyHeader =
  /** The header is complete: the client (undefined when the balancer speaks for itself: LOCAL, UNKNOWN). */
  | { readonly kind: 'done'; readonly client: ClientInfo | undefined; readonly length: number }
  | { readonly kind: 'more' }
  | { readonly kind: 'invalid'; readonly reason: string };

/** Parses a header at the start of `data`. */
export function parseProxyHeader(data: Buffer): ProxyHeader {
  if (startsWith(data, V2_SIGNATURE)) return parseV2(data);
  if (startsWith(data, V1_PREFIX)) return parseV1(data);
  if (V2_SIGNATURE.subarray(0, data.length).equals(data) || V1_PREFIX.subarray(0, data.length).equals(data))
    return { kind: 'more' };
  return { kind: 'invalid', reason: 'no PROXY protocol header' };
}

function startsWith(data: Buffer, prefix: Buffer): boolean {
  return data.length >= prefix.length && data.subarray(0, prefix.length).equals(prefix);
}

function parseV1(data: Buffer): ProxyHeader {
  const end = data.indexOf('\r\n');
  if (end < 0) return data.length >= V1_MAX ? { kind: 'invalid', reason: 'PROXY v1 line too long' } : { kind: 'more' };
  const fields = data.subarray(0, end).toString('latin1').split(' ');
  const length = end + 2;
  if (fields[1] === 'UNKNOWN') return { kind: 'done', client: undefined, length };
  const [, family, source, , sourcePort] = fields;
  if (fields.length !== 6 || (family !== 'TCP4' && family !== 'TCP6'))
    return { kind: 'invalid', reason: 'malformed PROXY v1 line' };
  const port = Number(sourcePort);
  if (!source || !Number.isInteger(port) || port < 0 || port > 65535)
    return { kind: 'invalid', reason: 'malformed PROXY v1 address' };
  return { kind: 'done', client: { address: source, port }, length };
}

function parseV2(data: Buffer): ProxyHeader {
  if (data.length < V2_HEADER) return { kind: 'more' };
  const versionCommand = data[12];
  const family = data[13];
  const bodyLength = data.readUInt16BE(14);
  if (versionCommand >> 4 !== 2) return { kind: 'invalid', reason: 'unsupported PROXY protocol version' };
  if (bodyLength > V2_MAX_BODY) return { kind: 'invalid', reason: 'PROXY v2 header too long' };
  const length = V2_HEADER + bodyLength;
  if (data.length < length) return { kind: 'more' };
  const command = versionCommand & 0x0f;
  if (command === 0x0) return { kind: 'done', client: undefined, length };
  if (command !== 0x1) return { kind: 'invalid', reason: 'unknown PROXY v2 command' };
  const body = data.subarray(V2_HEADER, length);
  // TCP or UDP over IPv4 (0x11, 0x12) or IPv6 (0x21, 0x22); other families carry no address we use.
  if ((family === 0x11 || family === 0x12) && body.length >= 12) {
    return {
      kind: 'done',
      client: { address: [...body.subarray(0, 4)].join('.'), port: body.readUInt16BE(8) },
      length,
    };
  }
  if ((family === 0x21 || family === 0x22) && body.length >= 36) {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(body.readUInt16BE(i).toString(16));
    return { kind: 'done', client: { address: groups.join(':'), port: body.readUInt16BE(32) }, length };
  }
  return { kind: 'done', client: undefined, length };
}

/**
 * Reads the header off the socket. Whatever follows it (a TLS ClientHello, say) is put back,
 * unread, for whoever takes the socket next. Rejects when no valid header arrives in time.
 */
export function readProxyHeader(socket: Socket, timeoutMs: number): Promise<ClientInfo | undefined> {
  return new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0);
    const stop = () => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.pause();
    };
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      const header = parseProxyHeader(buffered);
      if (header.kind === 'more') return;
      stop();
      if (header.kind === 'invalid') return reject(new Error(header.reason));
      if (buffered.length > header.length) socket.unshift(buffered.subarray(header.length));
      resolve(header.client);
    };
    const onEnd = () => {
      stop();
      reject(new Error('connection closed before the PROXY header'));
    };
    const timer = setTimeout(() => {
      stop();
      reject(new Error('no PROXY header in time'));
    }, timeoutMs);
    socket.on('data', onData);
    socket.on('end', onEnd);
  });
}
