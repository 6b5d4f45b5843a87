import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TopFilter } from '../../src/pop3/top-filter.js';

function top(message: string, lines: number, chunkSize = message.length || 1): { out: string; done: boolean } {
  const f = new TopFilter(lines);
  let out = '';
  for (let i = 0; i < message.length && !f.done; i += chunkSize) {
    out += f.push(Buffer.from(message.slice(i, i + chunkSize), 'latin1')).toString('latin1');
  }
  return { out, done: f.done };
}

const MSG = 'A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n';

test('TOP n 0 gives the header and the empty line', { timeout: 30_000 }, () => {
  assert.deepEqual(top(MSG, 0), { out: 'A: 1\r\nB: 2\r\n\r\n', done: true });
});

test('TOP n k gives k body lines, in any chunking', { timeout: 30_000 }, () => {
  for (const size of [1, 2, 3, 5, 100]) {
    assert.equal(top(MSG, 2, size).out, 'A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n', `chunk size ${size}`);
  }
});

test('more lines than the body has gives the whole message', { timeout: 30_000 }, () => {
  assert.deepEqual(top(MSG, 99), { out: MSG, done: false });
});

test('a message without an empty line is all header', { timeout: 30_000 }, () => {
  assert.equal(top('A: 1\r\nB: 2\r\n', 0).out, 'A: 1\r\nB: 2\r\n');
});

test('a line holding a lone CR plus text is not the end of the header', { timeout: 30_000 }, () => {
  assert.equal(top('A: 1\r\n\rx\r\n\r\nbody\r\n', 0).out, 'A: 1\r\n\rx\r\n\r\n');
});

test('the empty line split across chunks is found', { timeout: 30_000 }, () => {
  assert.equal(top('A: 1\r\n\r\nbody\r\n', 0, 1).out, 'A: 1\r\n\r\n');
  assert.equal(top('A: 1\n\nbody\n', 0, 1).out, 'A: 1\n\n');
});
