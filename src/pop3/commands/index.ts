import type { CommandTable } from '../command-context.js';
import { AUTH } from './auth.js';
import { APOP, PASS, USER } from './authorization.js';
import { CAPA } from './capa.js';
import { DELE, RSET } from './deletion.js';
import { LAST } from './last.js';
import { LIST, NOOP, STAT, UIDL } from './listing.js';
import { QUIT } from './quit.js';
import { RETR, TOP } from './retrieval.js';
import { STLS } from './stls.js';

/** Every command the POP3 server knows, by upper-case keyword: handed to each session. */
export const POP3_COMMANDS: CommandTable = {
  CAPA,
  STLS,
  AUTH,
  USER,
  PASS,
  APOP,
  STAT,
  LIST,
  UIDL,
  NOOP,
  RETR,
  TOP,
  DELE,
  RSET,
  LAST,
  QUIT,
};
