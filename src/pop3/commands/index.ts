import { AUTH } from './auth.js';
import { APOP, PASS, USER } from './authorization.js';
import { CAPA } from './capa.js';
import type { CommandHandler } from './command.js';
import { DELE, RSET } from './deletion.js';
import { LAST } from './last.js';
import { LIST, NOOP, STAT, UIDL } from './listing.js';
import { QUIT } from './quit.js';
import { RETR, TOP } from './retrieval.js';
import { STLS } from './stls.js';

/** Every command the server knows, by upper-case keyword. */
export const COMMANDS: Readonly<Record<string, CommandHandler>> = {
  CAPA, STLS, AUTH, USER, PASS, APOP, STAT, LIST, UIDL, NOOP, RETR, TOP, DELE, RSET, LAST, QUIT,
};
