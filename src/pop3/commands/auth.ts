import { multiLine } from '../responses.js';
import { decodeBase64, SASL_MECHANISMS, startMechanism, type SaslMechanism } from '../sasl.js';
import type { Pop3Session } from '../session.js';
import { login, refusePlaintext } from './authorization.js';
import type { CommandHandler } from './command.js';

/**
 * AUTH (RFC 5034): a SASL exchange whose result is logged in to the store like USER/PASS.
 * Without arguments it lists the mechanisms, as clients of RFC 1734 servers expect.
 */
export const AUTH: CommandHandler = {
  states: ['authorization'],
  acceptsArgs: (n) => n <= 2,
  async run(session, command) {
    if (session.plaintextAuthRefused) return refusePlaintext(session);
    const [name, initial] = command.args;
    if (name === undefined) return session.io.send(multiLine('Mechanisms follow', SASL_MECHANISMS));
    const mechanism = startMechanism(name);
    if (!mechanism) return session.protocolError(`Unsupported mechanism: ${name.slice(0, 20)}`);
    if (initial === undefined) return step(session, mechanism, undefined);
    const response = decodeBase64(initial);
    if (!response) return session.protocolError('Invalid base64 in the initial response.');
    await step(session, mechanism, response);
  },
};

async function step(session: Pop3Session, mechanism: SaslMechanism, response: Buffer | undefined): Promise<void> {
  const next = mechanism(response);
  switch (next.kind) {
    case 'fail':
      return session.error(next.reason, 'AUTH');
    case 'done':
      return login(session, next.credentials);
    case 'challenge':
      session.sasl = { respond: (s, line) => respond(s, mechanism, line) };
      await session.io.send(Buffer.from(`+ ${next.challenge.toString('base64')}\r\n`));
  }
}

async function respond(session: Pop3Session, mechanism: SaslMechanism, line: Buffer): Promise<void> {
  const text = line.toString('latin1');
  if (text === '*') return session.error('Authentication cancelled.');
  const response = decodeBase64(text);
  if (!response) return session.protocolError('Invalid base64 in the response.');
  await step(session, mechanism, response);
}
