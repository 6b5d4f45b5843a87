/**
 * Checks of single setting values, shared by the flags and the config file's profiles. A leaf
 * module: it imports nothing of the modules that use it.
 */
import { readFileSync } from 'node:fs';
import type { DeleteMode } from '../imap/imap-maildrop.js';
import { compileUidlFormat } from '../imap/uidl-format.js';

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export function parseDeleteMode(where: string, value: string): DeleteMode {
  if (value === 'expunge' || value === 'flag' || value === 'seen') return { kind: value };
  const folder = /^move:(.+)$/.exec(value)?.[1];
  if (folder !== undefined && folder.trim() !== '') return { kind: 'move', folder };
  throw new ConfigError(`${where}: ${value} is not expunge, flag, seen or move:FOLDER`);
}

export function checkUidlFormat(where: string, template: string): string {
  try {
    compileUidlFormat(template);
  } catch (err) {
    throw new ConfigError(`${where}: ${(err as Error).message}`);
  }
  return template;
}

export function readCa(where: string, file: string): Buffer {
  try {
    const pem = readFileSync(file);
    if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new Error('no PEM certificate in it');
    return pem;
  } catch (err) {
    throw new ConfigError(`${where}: cannot use ${file}: ${(err as Error).message}`);
  }
}

export function count(flag: string, value: number): number {
  if (!Number.isInteger(value) || value < 1 || value > 1_000_000) {
    throw new ConfigError(`${flag}: ${String(value)} is not a whole number between 1 and 1000000`);
  }
  return value;
}

/** Seconds given, in milliseconds. */
export function seconds(flag: string, value: number, allowZero = false): number {
  if (!Number.isFinite(value) || value < 0 || (value === 0 && !allowZero) || value > 86400) {
    throw new ConfigError(`${flag}: ${String(value)} is not a number of seconds between 0 and 86400`);
  }
  return Math.round(value * 1000);
}
