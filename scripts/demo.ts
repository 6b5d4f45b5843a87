/**
 * npm run demo: a local Dovecot with user demo / password demo and a few sample messages, and
 * the proxy in front of it on 127.0.0.1:1110. Ctrl-C stops both.
 */
import { corpus } from '../test/support/corpus.js';
import { startDovecot } from '../test/support/dovecot.js';
import { parseConfig } from '../src/config/options.js';
import { createLogger } from '../src/logging/logger.js';
import { createProxy } from '../src/proxy.js';

const PORT = Number(process.env.DEMO_PORT ?? 1110);

async function main(): Promise<void> {
  const dovecot = await startDovecot({ users: [{ name: 'demo', password: 'demo' }] });
  const samples = corpus().filter((m) => m.data.length < 100_000).slice(0, 5);
  for (const m of samples) await dovecot.deliver('demo', m.data);
  // The same path as the command line, so the demo runs with the product's defaults.
  const config = await parseConfig([
    '--imap-host', dovecot.host, '--imap-port', String(dovecot.imapPort), '--imap-tls', 'none',
    '--host', '127.0.0.1', '--port', String(PORT),
  ]);
  const logger = createLogger(config!.log);
  const server = createProxy(config!, logger);
  await server.listen();
  process.stdout.write(
    [
      '',
      `Demo Dovecot: IMAP on ${dovecot.host}:${dovecot.imapPort}, its own POP3 on ${dovecot.host}:${dovecot.pop3Port}`,
      `pop3-imap-proxy: POP3 on 127.0.0.1:${PORT}, user demo, password demo, ${samples.length} messages`,
      '',
      'Try:',
      `  curl -u demo:demo pop3://127.0.0.1:${PORT}/          # list`,
      `  curl -u demo:demo pop3://127.0.0.1:${PORT}/1         # message 1`,
      `  python3 -c "import poplib; p=poplib.POP3('127.0.0.1',${PORT}); p.user('demo'); p.pass_('demo'); print(p.stat()); p.quit()"`,
      '',
      'Ctrl-C stops the demo.',
      '',
    ].join('\n'),
  );
  const stop = async () => {
    await server.close();
    await dovecot.stop();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());
}

main().catch((err: unknown) => {
  process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
