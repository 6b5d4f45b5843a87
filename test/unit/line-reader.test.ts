import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LineReader, type LineEvent } from '../../src/pop3/line-reader.js';

const lines = (events: LineEvent[]) => events.map((e) => (e.kind === 'line' ? e.line.toString('latin1') : '<overlong>'));

test('splits on LF, drops the CR before it, keeps bare CR', { timeout: 30_000 }, () => {
  const r = new LineReader(512);
  assert.deepEqual(lines(r.push(Buffer.from('STAT\r\nLIST\nA\rB\r\n'))), ['STAT', 'LIST', 'A\rB']);
});

test('joins a line split across chunks', { timeout: 30_000 }, () => {
  const r = new LineReader(512);
  assert.deepEqual(lines(r.push(Buffer.from('RE'))), []);
  assert.deepEqual(lines(r.push(Buffer.from('TR 1\r'))), []);
  assert.deepEqual(lines(r.push(Buffer.from('\nNOOP\r\n'))), ['RETR 1', 'NOOP']);
});

test('an overlong line is reported once and discarded up to its end', { timeout: 30_000 }, () => {
  const r = new LineReader(10);
  const events = [...r.push(Buffer.from('x'.repeat(9))), ...r.push(Buffer.from('y'.repeat(5000))), ...r.push(Buffer.from('z\r\nNOOP\r\n'))];
  assert.deepEqual(lines(events), ['<overlong>', 'NOOP']);
});

test('the limit counts the CRLF', { timeout: 30_000 }, () => {
  const r = new LineReader(10);
  assert.deepEqual(lines(r.push(Buffer.from('12345678\r\n123456789\r\n'))), ['12345678', '<overlong>']);
});
