import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compileUidlFormat, DEFAULT_UIDL_FORMAT } from '../../src/imap/uidl-format.js';

test('the default matches Dovecot: UID then UIDVALIDITY, 8 hex digits each, lower case as Dovecot prints them', { timeout: 30_000 }, () => {
  assert.equal(compileUidlFormat(DEFAULT_UIDL_FORMAT)(26, 1700000000), '0000001a6553f100');
});

test('templates with decimal fields and literal text', { timeout: 30_000 }, () => {
  assert.equal(compileUidlFormat('%v.%u')(7, 42), '42.7');
  assert.equal(compileUidlFormat('x%%%ux%v')(7, 42), 'x%7x42');
});

test('templates without both fields, unknown sequences or spaces are refused', { timeout: 30_000 }, () => {
  assert.throws(() => compileUidlFormat('%u'), /%v/);
  assert.throws(() => compileUidlFormat('%u%v%m'), /unknown/);
  assert.throws(() => compileUidlFormat('%8u%v'), /printable/);
  assert.throws(() => compileUidlFormat('%u %v'), /printable/);
});
