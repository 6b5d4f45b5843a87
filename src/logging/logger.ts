/**
 * The process logger (winston): human-readable text or one JSON object per line. Session code
 * passes structured fields (client, user, event...) as metadata; secrets are never passed.
 * Every line written while a session's work runs carries its id (`cid`), and every string on
 * a line has its control characters escaped: client text (a user name, a command) can never
 * start a line of its own or hide what follows.
 */
import winston from 'winston';
import { currentSession } from './session-context.js';

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
export type LogFormat = 'text' | 'json';

export interface LoggerOptions {
  readonly level: LogLevel;
  readonly format: LogFormat;
  /** Where lines go; standard error by default so that standard output stays free. */
  readonly stream?: NodeJS.WritableStream;
}

export function createLogger(options: LoggerOptions): winston.Logger {
  const safe = winston.format(escapeInfo)();
  const format =
    options.format === 'json'
      ? winston.format.combine(safe, winston.format.timestamp(), winston.format.json())
      : winston.format.combine(safe, winston.format.timestamp(), winston.format.printf(textLine));
  const transport = options.stream
    ? new winston.transports.Stream({ stream: options.stream })
    : new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'debug'] });
  const logger = winston.createLogger({ level: options.level, format, transports: [transport] });
  tagWithSession(logger);
  return logger;
}

/**
 * Adds the running session's id to every entry, at the moment it is logged: the formats may
 * run later, outside the session, when the transport is busy. Every way of logging (levels,
 * log(), child loggers) ends in write().
 */
function tagWithSession(logger: winston.Logger): void {
  const write = logger.write.bind(logger) as (info: unknown, ...rest: unknown[]) => boolean;
  (logger as unknown as { write: typeof write }).write = (info, ...rest) => {
    const cid = currentSession()?.cid;
    if (
      cid !== undefined &&
      info !== null &&
      typeof info === 'object' &&
      (info as { cid?: unknown }).cid === undefined
    ) {
      (info as { cid?: string }).cid = cid;
    }
    return write(info, ...rest);
  };
}

/** C0 and C1 controls, DEL, and the Unicode line and paragraph separators. */
// eslint-disable-next-line no-control-regex -- control characters are what it finds
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/** `text` with every control character written as an escape (\n, \r, \t, \xNN, \uNNNN). */
export function escapeControls(text: string): string {
  return text.replace(CONTROL, (c) => {
    const named = NAMED[c];
    if (named !== undefined) return named;
    const code = c.charCodeAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

function escapeInfo(info: winston.Logform.TransformableInfo): winston.Logform.TransformableInfo {
  const fields = info as Record<string, unknown>;
  for (const key of Object.keys(fields)) fields[key] = escapeValue(fields[key], 0);
  return info;
}

/** Strings escaped, objects and arrays walked (a few levels: metadata is shallow). */
function escapeValue(value: unknown, depth: number): unknown {
  if (typeof value === 'string') return escapeControls(value);
  if (depth >= 3 || value === null || typeof value !== 'object' || value instanceof Error) return value;
  if (Array.isArray(value)) return value.map((v) => escapeValue(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) out[key] = escapeValue(v, depth + 1);
  return out;
}

function textLine(info: winston.Logform.TransformableInfo): string {
  const { timestamp, level, message, client, user, cid } = info as Record<string, unknown>;
  const who = [
    cid !== undefined ? `cid=${text(cid)}` : '',
    user !== undefined ? `user=${text(user)}` : '',
    client !== undefined ? `client=${text(client)}` : '',
  ]
    .filter(Boolean)
    .join(' ');
  return `${text(timestamp)} ${text(level)}: ${who ? `${who} ` : ''}${text(message)}`;
}

/** A field as text: strings as they are, anything else as JSON. */
function text(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}
