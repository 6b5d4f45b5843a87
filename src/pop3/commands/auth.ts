import type { CommandContext, CommandHandler } from '../command-context.js';
import { login, refusePlaintext } from '../login.js';
import { multiLine } from '../responses.js';
import { decodeBase64, SASL_MECHANISMS, startMechanism, type SaslMechanism } from '../sasl.js';

/**
 * AUTH (RFC 5034): a SASL exchange whose result is logged in to the store like USER/PASS.
 * Without arguments it lists the mechanisms, as clients of RFC 1734 servers expect.
 */
export const AUTH: CommandHandler = {
  states: ['authorization'],
  acceptsArgs: (n) => n <= 2,
  async run(context, command) {
    if (context.plaintextAuthRefused) return refusePlaintext(context);
    const [name, initial] = command.args;
    if (name === undefined) return context.send(multiLine('Mechanisms follow', SASL_MECHANISMS));
    const mechanism = startMechanism(name);
    if (!mechanism) return context.protocolError(`Unsupported mechanism: ${name.slice(0, 20)}`);
    if (initial === undefined) return step(context, mechanism, undefined);
    const response = decodeBase64(initial);
    if (!response) return context.protocolError('Invalid base64 in the initial response.');
    await step(context, mechanism, response);
  },
};

async function step(context: CommandContext, mechanism: SaslMechanism, response: Buffer | undefined): Promise<void> {
  const next = mechanism(response);
  switch (next.kind) {
    case 'fail':
      return context.error(next.reason, 'AUTH');
    case 'done':
      return login(context, next.credentials);
    case 'challenge':
      context.awaitSaslResponse({ respond: (c, line) => respond(c, mechanism, line) });
      await context.send(Buffer.from(`+ ${next.challenge.toString('base64')}\r\n`));
  }
}

async function respond(context: CommandContext, mechanism: SaslMechanism, line: Buffer): Promise<void> {
  const text = line.toString('latin1');
  if (text === '*') return context.error('Authentication cancelled.');
  const response = decodeBase64(text);
  if (!response) return context.protocolError('Invalid base64 in the response.');
  await step(context, mechanism, response);
}
