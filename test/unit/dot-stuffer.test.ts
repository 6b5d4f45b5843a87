import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DotStuffer } from '../../src/net/dot-stuffer.js';

function stuffAll(chunks: string[]): string {
  const s = new DotStuffer();
  const out: Buffer[] = [];
  for (const c of chunks) {
    out.push(...s.push(Buffer.from(c, 'latin1')));
  }
  out.push(...s.finish());
  return Buffer.concat(out).toString('latin1');
}

test('doubles a dot at the start of every line, including the first', { timeout: 30_000 }, () => {
  assert.equal(stuffAll(['.a\r\nb\r\n.\r\n..\r\n']), '..a\r\nb\r\n..\r\n...\r\n.\r\n');
});

test('a dot after a chunk boundary at a line start is still doubled', { timeout: 30_000 }, () => {
  assert.equal(stuffAll(['a\r\n', '.b\r\n']), 'a\r\n..b\r\n.\r\n');
  assert.equal(stuffAll(['a\r', '\n.', 'b\r\n']), 'a\r\n..b\r\n.\r\n');
});

test('a dot after a bare CR is not at a line start', { timeout: 30_000 }, () => {
  assert.equal(stuffAll(['a\r.b\r\n']), 'a\r.b\r\n.\r\n');
});

test('a message without a final line end gets CRLF before the terminator', { timeout: 30_000 }, () => {
  assert.equal(stuffAll(['a\r\nb']), 'a\r\nb\r\n.\r\n');
  assert.equal(stuffAll([]), '.\r\n');
});

test('data is passed on at once; only the final line end waits for the terminator', { timeout: 30_000 }, () => {
  const s = new DotStuffer();
  const text = (pieces: Buffer[]) => Buffer.concat(pieces).toString();
  assert.equal(text(s.push(Buffer.from('one\r\n'))), 'one');
  assert.equal(text(s.push(Buffer.from('two\r\n'))), '\r\ntwo');
  assert.equal(text(s.push(Buffer.from('x'))), '\r');
  assert.equal(text(s.finish()), '\nx\r\n.\r\n');
});

test('the final CRLF and the terminator leave together, however the data was chunked', { timeout: 30_000 }, () => {
  for (const chunks of [['a\r\n'], ['a\r', '\n'], ['a', '\r', '\n'], ['a\r\n', '.'], ['a\r\n', '..', '\r\n']]) {
    const s = new DotStuffer();
    for (const c of chunks) s.push(Buffer.from(c));
    assert.match(Buffer.concat(s.finish()).toString(), /\r\n\.\r\n$/);
  }
});

test('8-bit bytes pass untouched', { timeout: 30_000 }, () => {
  const bytes = Buffer.from([0xe9, 0x0d, 0x0a, 0x2e, 0xff, 0x0d, 0x0a]);
  const s = new DotStuffer();
  const out = Buffer.concat([...s.push(bytes), ...s.finish()]);
  assert.deepEqual(out, Buffer.from([0xe9, 0x0d, 0x0a, 0x2e, 0x2e, 0xff, 0x0d, 0x0a, 0x2e, 0x0d, 0x0a]));
});
