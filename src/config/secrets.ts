/**
 * Reading the secrets a profile names: from a file (trimmed of its final line end) or an
 * environment variable. Read at start, so that a missing secret stops the program at once
 * rather than failing the first login.
 */
import { readFileSync } from 'node:fs';
import type { SecretRef } from './profiles.js';
import { ConfigError } from './values.js';

export function readSecret(ref: SecretRef, what: string): string {
  if ('env' in ref) {
    const value = process.env[ref.env];
    if (value === undefined || value === '')
      throw new ConfigError(`${what}: environment variable ${ref.env} is not set`);
    return value;
  }
  let value: string;
  try {
    value = readFileSync(ref.file, 'utf8').replace(/\r?\n$/, '');
  } catch (err) {
    throw new ConfigError(`${what}: cannot read ${ref.file}: ${(err as Error).message}`);
  }
  if (value === '') throw new ConfigError(`${what}: ${ref.file} is empty`);
  return value;
}
