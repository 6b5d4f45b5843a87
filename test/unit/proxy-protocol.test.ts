import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseProxyHeader } from '../../src/net/proxy-protocol.js';

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

function v2(command: number, family: number, body: Buffer): Buffer {
  const header = Buffer.alloc(4);
  header[0] = 0x20 | command;
  header[1] = family;
  header.writeUInt16BE(body.length, 2);
  return Buffer.concat([V2_SIGNATURE, header, body]);
}

test('v1: TCP4, TCP6 and UNKNOWN; the header length excludes what follows', { timeout: 30_000 }, () => {
  const line = 'PROXY TCP4 192.0.2.7 198.51.100.1 40001 110\r\n';
  assert.deepEqual(parseProxyHeader(Buffer.from(`${line}USER x\r\n`)), { kind: 'done', client: { address: '192.0.2.7', port: 40001 }, length: line.length });
  assert.deepEqual(parseProxyHeader(Buffer.from('PROXY TCP6 2001:db8::7 2001:db8::1 40002 110\r\n')).kind, 'done');
  assert.deepEqual(parseProxyHeader(Buffer.from('PROXY UNKNOWN\r\n')), { kind: 'done', client: undefined, length: 15 });
});

test('v2: PROXY over IPv4 and IPv6, LOCAL, and TLVs after the addresses', { timeout: 30_000 }, () => {
  const ipv4 = Buffer.from([192, 0, 2, 9, 198, 51, 100, 1, 0x9c, 0x42, 0, 110, 0x01, 0x00, 0x01, 0x41]);
  assert.deepEqual(parseProxyHeader(v2(1, 0x11, ipv4)), { kind: 'done', client: { address: '192.0.2.9', port: 0x9c42 }, length: 16 + ipv4.length });
  const ipv6 = Buffer.alloc(36);
  ipv6.writeUInt16BE(0x2001, 0);
  ipv6.writeUInt16BE(0x0db8, 2);
  ipv6.writeUInt16BE(7, 14);
  ipv6.writeUInt16BE(40003, 32);
  const parsed = parseProxyHeader(v2(1, 0x21, ipv6));
  assert.deepEqual(parsed.kind === 'done' && parsed.client, { address: '2001:db8:0:0:0:0:0:7', port: 40003 });
  assert.deepEqual(parseProxyHeader(v2(0, 0x00, Buffer.alloc(0))), { kind: 'done', client: undefined, length: 16 });
});

test('partial headers ask for more; anything else is invalid', { timeout: 30_000 }, () => {
  assert.equal(parseProxyHeader(Buffer.from('PRO')).kind, 'more');
  assert.equal(parseProxyHeader(Buffer.from('PROXY TCP4 192.0.2.7')).kind, 'more');
  assert.equal(parseProxyHeader(V2_SIGNATURE.subarray(0, 5)).kind, 'more');
  assert.equal(parseProxyHeader(v2(1, 0x11, Buffer.alloc(12)).subarray(0, 20)).kind, 'more');
  for (const bad of ['USER alice\r\n', 'PROXY TCP4 x\r\n', `PROXY ${'A'.repeat(120)}`, 'PROXY TCP4 1.2.3.4 5.6.7.8 99999 110\r\n']) {
    assert.equal(parseProxyHeader(Buffer.from(bad)).kind, 'invalid', bad);
  }
  const wrongVersion = v2(1, 0x11, Buffer.alloc(12));
  wrongVersion[12] = 0x11;
  assert.equal(parseProxyHeader(wrongVersion).kind, 'invalid');
});
