/**
 * The process logger (winston): human-readable text or one JSON object per line. Session code
 * passes structured fields (client, user, event...) as metadata; secrets are never passed.
 */
import winston from 'winston';

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
export type LogFormat = 'text' | 'json';

export interface LoggerOptions {
  readonly level: LogLevel;
  readonly format: LogFormat;
  /** Where lines go; standard error by default so that standard output stays free. */
  readonly stream?: NodeJS.WritableStream;
}

export function createLogger(options: LoggerOptions): winston.Logger {
  const format =
    options.format === 'json'
      ? winston.format.combine(winston.format.timestamp(), winston.format.json())
      : winston.format.combine(winston.format.timestamp(), winston.format.printf(textLine));
  const transport = options.stream
    ? new winston.transports.Stream({ stream: options.stream })
    : new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'debug'] });
  return winston.createLogger({ level: options.level, format, transports: [transport] });
}

function textLine(info: winston.Logform.TransformableInfo): string {
  const { timestamp, level, message, client, user } = info as Record<string, unknown>;
  const who = [user !== undefined ? `user=${String(user)}` : '', client !== undefined ? `client=${String(client)}` : '']
    .filter(Boolean)
    .join(' ');
  return `${String(timestamp)} ${level}: ${who ? `${who} ` : ''}${String(message)}`;
}
