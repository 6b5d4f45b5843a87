/**
 * The container stack under a real Docker: the image built from the repository's Dockerfile,
 * run as the README says, and both compose files brought up with `up --build`. Every container
 * runs on the host's network, so all traffic stays on loopback; the compose stacks are the
 * repository's files moved onto the host's network with free ports (test/support/docker.ts).
 *
 * scripts/docker-setup.sh installs Docker and builds the base images when run as root; where
 * no Docker can be had (not root and no daemon), every test here is skipped with the reason.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import { corpus } from './support/corpus.js';
import {
  buildProxyImage,
  ComposeStack,
  docker,
  freePort,
  Hopeless,
  hostNetworkCompose,
  inspect,
  run,
  setUpDocker,
  stopDaemon,
  waitFor,
} from './support/docker.js';
import { startDovecot, type Dovecot } from './support/dovecot.js';
import { RawPop3 } from './support/pop3-client.js';
import { repoRoot } from './support/system.js';

const setup = await setUpDocker();
const skip = setup.skip;
const IMAGE = 'pop3-imap-proxy:test';
const PREFIX = `pop3proxy-test-${process.pid}`;
const messages = corpus();

let dovecot: Dovecot;
let work: string;
let buildSeconds = 0;
const containers: string[] = [];
const stacks: ComposeStack[] = [];

before(async () => {
  if (skip) return;
  work = await mkdtemp(path.join(os.tmpdir(), 'pop3-docker-'));
  // The containers' user (uid 1000) reads the files written here.
  await chmod(work, 0o755);
  dovecot = await startDovecot();
  for (const m of messages) await dovecot.deliver('alice', m.data);
  for (let i = 1; i <= 3; i++) await dovecot.deliver('bob', `Subject: keep ${i}\nMessage-ID: <keep${i}@docker.test>\n\nmessage ${i}\n`);
  buildSeconds = await buildProxyImage(IMAGE);
}, { timeout: 1_200_000 }); // building the image may take its full 15 min (buildProxyImage)

after(async () => {
  for (const stack of stacks) await stack.down();
  if (containers.length > 0) await docker(['rm', '-f', ...containers], 120_000).catch(() => undefined);
  await dovecot?.stop();
  if (work) await rm(work, { recursive: true, force: true });
  if (setup.startedDaemon !== undefined) await stopDaemon(setup.startedDaemon);
}, { timeout: 600_000 }); // each compose stack may take 210 s to go down

/** A diagnostic of several lines, one line each (the TAP output keeps them readable). */
function say(t: TestContext, text: string): void {
  for (const line of text.split('\n')) t.diagnostic(line.replace(/\r$/, ''));
}

/** The flags that point a proxy at the test's Dovecot and make it listen on loopback only. */
function backendArgs(port: number): string[] {
  return ['--imap-host', '127.0.0.1', '--imap-port', String(dovecot.imapPort), '--imap-tls', 'none', '--host', '127.0.0.1', '--port', String(port)];
}

/** The same, with the metrics endpoint on a free loopback port instead of the image's 9110. */
async function proxyArgs(port: number): Promise<string[]> {
  return [...backendArgs(port), '--metrics-host', '127.0.0.1', '--metrics-port', String(await freePort())];
}

interface RunOptions {
  readonly env?: Record<string, string>;
  readonly volumes?: readonly string[];
  /** Runs the image's HEALTHCHECK every second instead of every 30 s. */
  readonly fastHealth?: boolean;
}

/** `docker run -d --network host IMAGE ARGS`; resolves once the proxy listens. */
async function runProxy(name: string, args: readonly string[], options: RunOptions = {}): Promise<string> {
  const container = `${PREFIX}-${name}`;
  containers.push(container);
  const flags = ['run', '-d', '--name', container, '--network', 'host'];
  if (options.fastHealth) flags.push('--health-interval', '1s', '--health-start-period', '1s');
  for (const [k, v] of Object.entries(options.env ?? {})) flags.push('-e', `${k}=${v}`);
  for (const v of options.volumes ?? []) flags.push('-v', v);
  await docker([...flags, IMAGE, ...args]);
  await waitFor(`${container} to listen`, 30_000, async () => {
    const { stdout, stderr } = await docker(['logs', container]);
    if ((await inspect(container, '{{.State.Running}}')) !== 'true') throw new Hopeless(`${container} stopped: ${stdout}${stderr}`);
    return /POP3 listening on/.test(stdout + stderr) ? true : undefined;
  });
  return container;
}

async function logs(container: string): Promise<string> {
  const { stdout, stderr } = await docker(['logs', container]);
  return stdout + stderr;
}

async function login(port: number, user: string, password: string): Promise<RawPop3> {
  const c = await RawPop3.connect(port);
  assert.match(await c.command(`USER ${user}`), /^\+OK/);
  assert.match(await c.command(`PASS ${password}`, 30_000), /^\+OK/);
  return c;
}

/** Dovecot's own POP3 on the same store: the reference, and the witness of what the store holds. */
async function uidlsNow(user: string): Promise<string> {
  const c = await login(dovecot.pop3Port, user, `${user}-secret`);
  const { body } = await c.multiline('UIDL');
  await c.command('QUIT');
  c.destroy();
  return body.toString('latin1');
}

/** Flags in Maildir file names (after ":2,"): T is \Deleted. */
async function maildirFlags(user: string): Promise<string[]> {
  const dir = dovecot.maildir(user);
  const names = [...(await readdir(path.join(dir, 'cur'))), ...(await readdir(path.join(dir, 'new')))];
  return names.map((n) => /:2,([A-Za-z]*)$/.exec(n)?.[1] ?? '').sort();
}

async function healthLog(container: string): Promise<string> {
  const health = JSON.parse(await inspect(container, '{{json .State.Health}}')) as { Log: Array<{ ExitCode: number; Output: string }> } | null;
  const last = health?.Log.at(-1);
  return last ? `exit ${last.ExitCode}: ${last.Output.trim()}` : '(no probe yet)';
}

async function curlPop3(user: string, port: number, what: string): Promise<Buffer> {
  // A Buffer: the message is compared byte for byte.
  return new Promise((resolve, reject) => {
    execFile('curl', ['-sS', '--max-time', '20', '-u', user, `pop3://127.0.0.1:${port}/${what}`], { encoding: 'buffer', timeout: 30_000 }, (err, out, errOut) =>
      err ? reject(new Error(`curl: ${err.message} ${errOut.toString()}`)) : resolve(out),
    );
  });
}

/** The lines of a compose stack's output worth showing: everything but the image builds. */
function serviceLines(output: string): string {
  return output
    .split(/[\r\n]+/)
    .map((l) => l.trimEnd())
    .filter((l) => /^\S+_\d+\s+\|/.test(l) || /^(Attaching|Successfully tagged) /.test(l) || /^Building \w+$/.test(l) || /^(Creating|Stopping|Removing) .* done$/.test(l))
    .join('\n');
}

async function metric(port: number, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line === undefined ? 0 : Number(line.split(' ')[1]);
}

test('the image: built from the Dockerfile, runs as a non-root user, serves a mailbox byte for byte as Dovecot does', { skip, timeout: 300_000 }, async (t: TestContext) => {
  say(t, `docker setup ${setup.seconds.toFixed(1)} s; docker build ${buildSeconds.toFixed(1)} s`);
  assert.equal(await inspect(IMAGE, '{{.Config.User}}'), 'node');
  const port = await freePort();
  const started = Date.now();
  const container = await runProxy('serve', await proxyArgs(port));
  say(t, `container listening ${((Date.now() - started) / 1000).toFixed(1)} s after docker run`);
  assert.equal((await docker(['exec', container, 'id', '-u'])).stdout.trim(), '1000');
  // The proxy is the container's first process (exec-form ENTRYPOINT), every uid of it 1000.
  const status = (await docker(['exec', container, 'cat', '/proc/1/status'])).stdout;
  assert.match(status, /^Uid:\s+1000\s+1000\s+1000\s+1000$/m);
  assert.match((await docker(['exec', container, 'cat', '/proc/1/cmdline'])).stdout.replace(/\0/g, ' '), /^node dist\/cli\.js /);

  const native = await login(dovecot.pop3Port, 'alice', 'alice-secret');
  const proxied = await login(port, 'alice', 'alice-secret');
  try {
    assert.equal(await proxied.command('STAT'), await native.command('STAT'));
    for (const command of ['LIST', 'UIDL']) {
      assert.deepEqual((await proxied.multiline(command)).body, (await native.multiline(command)).body, command);
    }
    let bytes = 0;
    for (let n = 1; n <= messages.length; n++) {
      const want = await native.multiline(`RETR ${n}`, 60_000);
      const got = await proxied.multiline(`RETR ${n}`, 60_000);
      assert.deepEqual(got.body, want.body, `RETR ${n} (${messages[n - 1]!.name})`);
      bytes += got.body.length;
    }
    say(t, `${messages.length} messages, ${bytes} octets, the same bytes as Dovecot's own POP3`);
    assert.match(await proxied.command('QUIT'), /^\+OK/);
  } finally {
    await native.command('QUIT').catch(() => undefined);
    native.destroy();
    proxied.destroy();
    await docker(['rm', '-f', container]);
  }
});

test('HEALTHCHECK turns healthy wherever the metrics port came from, and unhealthy without one', { skip, timeout: 300_000 }, async (t: TestContext) => {
  const config = async (name: string, settings: Record<string, string | number>) => {
    const file = path.join(work, `${name}.yaml`);
    await writeFile(file, Object.entries(settings).map(([k, v]) => `${k}: ${v}\n`).join(''), { mode: 0o644 });
    return `${file}:/etc/pop3-imap-proxy/${name}.yaml:ro`;
  };
  const [flagMetrics, envMetrics, fileMetrics] = [await freePort(), await freePort(), await freePort()];
  const ports = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort()];
  const cases: Array<{ how: string; container: string; metrics: number | undefined }> = [];
  const add = async (how: string, metrics: number | undefined, args: readonly string[], options: RunOptions) => {
    cases.push({ how, metrics, container: await runProxy(`health-${cases.length}`, args, { ...options, fastHealth: true }) });
  };
  await add('flag --metrics-port', flagMetrics, [...backendArgs(ports[0]!), '--metrics-host', '127.0.0.1', '--metrics-port', String(flagMetrics)], {});
  await add('environment POP3PROXY_METRICS_PORT', envMetrics, backendArgs(ports[1]!), {
    env: { POP3PROXY_METRICS_HOST: '127.0.0.1', POP3PROXY_METRICS_PORT: String(envMetrics) },
  });
  const withMetrics = await config('with-metrics', {
    'imap-host': '127.0.0.1',
    'imap-port': dovecot.imapPort,
    'imap-tls': 'none',
    host: '127.0.0.1',
    port: ports[2]!,
    'metrics-host': '127.0.0.1',
    'metrics-port': fileMetrics,
  });
  await add('config file metrics-port', fileMetrics, ['--config', '/etc/pop3-imap-proxy/with-metrics.yaml'], { volumes: [withMetrics] });
  // The image's own default (9110, from its defaults file), when that port is free here.
  const defaultFree = await new Promise<boolean>((resolve) => {
    const probe = net.createServer().once('error', () => resolve(false));
    probe.listen(9110, '127.0.0.1', () => probe.close(() => resolve(true)));
  });
  if (defaultFree) await add("the image's default", 9110, [...backendArgs(ports[3]!), '--metrics-host', '127.0.0.1'], {});
  else say(t, "port 9110 is taken here: the image's default port is not tried");
  // A config file of one's own replaces the image's defaults file: without metrics-port in it
  // there is no endpoint, and the health check says so.
  const without = await config('without-metrics', { 'imap-host': '127.0.0.1', 'imap-port': dovecot.imapPort, 'imap-tls': 'none', host: '127.0.0.1', port: ports[4]! });
  await add('no metrics endpoint', undefined, ['--config', '/etc/pop3-imap-proxy/without-metrics.yaml'], { volumes: [without] });

  const started = Date.now();
  await Promise.all(
    cases.map(async (c) => {
      const want = c.metrics === undefined ? 'unhealthy' : 'healthy';
      await waitFor(`${c.how}: ${want}`, 60_000, async () => ((await inspect(c.container, '{{.State.Health.Status}}')) === want ? true : undefined));
      const probe = await healthLog(c.container);
      say(t, `${c.how}: ${want} after ${((Date.now() - started) / 1000).toFixed(1)} s (${probe})`);
      if (c.metrics === undefined) {
        assert.match(probe, /no metrics endpoint/);
      } else {
        assert.match(probe, new RegExp(`ok: http://127\\.0\\.0\\.1:${c.metrics}/healthz`));
        // The port the health check asked is the one the proxy serves on.
        assert.equal((await fetch(`http://127.0.0.1:${c.metrics}/healthz`)).status, 200);
      }
    }),
  );
});

test('docker stop (10 s) with a session holding a DELE: the store is left as it was and the container exits 0', { skip, timeout: 120_000 }, async (t: TestContext) => {
  const before = await uidlsNow('bob');
  const port = await freePort();
  const container = await runProxy('stop', await proxyArgs(port));
  const client = await login(port, 'bob', 'bob-secret');
  assert.match((await client.multiline('RETR 1')).status, /^\+OK/);
  assert.match(await client.command('DELE 1'), /^\+OK/);
  assert.match(await client.command('DELE 2'), /^\+OK/);

  const started = Date.now();
  await docker(['stop', container], 60_000);
  const seconds = (Date.now() - started) / 1000;
  const exitCode = await inspect(container, '{{.State.ExitCode}}');
  await client.waitClose(15_000).catch(() => undefined);
  const told = client.unread().toString('latin1').trim();
  client.destroy();
  const shutdown = (await logs(container)).split('\n').filter((l) => /SIGTERM|session|Session/.test(l));
  say(t, `docker stop took ${seconds.toFixed(1)} s; exit code ${exitCode}; the client was told ${JSON.stringify(told)}`);
  for (const line of shutdown) say(t, `log: ${line}`);

  assert.equal(exitCode, '0');
  assert.equal(await inspect(container, '{{.State.OOMKilled}}'), 'false');
  assert.ok(seconds < 10, `the proxy ended before Docker's SIGKILL (${seconds} s)`);
  assert.equal(await uidlsNow('bob'), before, 'every message is still there');
  assert.ok(!(await maildirFlags('bob')).some((f) => f.includes('T')), 'and none is flagged \\Deleted');
});

test('docker/compose.yaml: the README command brings up the proxy, a Dovecot that holds the sample and a Postfix; the README curl reads the sample and a message swaks sent', { skip, timeout: 600_000 }, async (t: TestContext) => {
  const readme = await readFile(path.join(repoRoot(), 'README.md'), 'utf8');
  assert.ok(readme.includes('docker compose -f docker/compose.yaml up --build'), 'the README says how to bring the stack up');
  assert.ok(readme.includes('curl -u demo:demo pop3://127.0.0.1:1110/1'), 'and how to read the sample');
  assert.ok(readme.includes('swaks --server 127.0.0.1:1587 --auth-user demo --auth-password demo --to demo@example.com'), 'and how to send a message');

  const [imap, pop3, metrics, lmtp, auth, postfixPort, smtp] = (await Promise.all(Array.from({ length: 7 }, () => freePort()))) as [number, number, number, number, number, number, number];
  const dovecotConf = path.join(work, 'demo-dovecot.conf');
  await writeFile(dovecotConf, dovecotOnLoopback(imap, lmtp, auth), { mode: 0o644 });
  const file = await hostNetworkCompose('docker/compose.yaml', path.join(work, 'compose.host.yaml'), {
    dovecot: { volumes: [`${dovecotConf}:/etc/dovecot/local.d/test.conf:ro`] },
    postfix: { environment: { SUBMISSION_LISTEN: `127.0.0.1:${postfixPort}`, DOVECOT_AUTH: `127.0.0.1:${auth}`, DOVECOT_LMTP: `127.0.0.1:${lmtp}` } },
    proxy: {
      environment: {
        POP3PROXY_IMAP_HOST: '127.0.0.1',
        POP3PROXY_IMAP_PORT: String(imap),
        POP3PROXY_HOST: '127.0.0.1',
        POP3PROXY_PORT: String(pop3),
        POP3PROXY_METRICS_HOST: '127.0.0.1',
        POP3PROXY_METRICS_PORT: String(metrics),
        POP3PROXY_SMTP_PORT: String(smtp),
        POP3PROXY_SMTP_RELAY_HOST: '127.0.0.1',
        POP3PROXY_SMTP_RELAY_PORT: String(postfixPort),
      },
    },
  });
  const stack = await withStack(t, 'demo', file, async (running, started) => {
    const message = await waitFor('the demo stack to serve the sample', 300_000, async () => {
      await running.checkRunning();
      return await curlPop3('demo:demo', pop3, '1');
    });
    say(t, `docker-compose up --build to the first good curl: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    const sample = await readFile(path.join(repoRoot(), 'docker/dovecot/welcome.eml'));
    assert.deepEqual(message, Buffer.from(sample.toString('latin1').replace(/\n/g, '\r\n'), 'latin1'), 'the sample, byte for byte (CRLF on the wire)');
    say(t, `curl -u demo:demo pop3://127.0.0.1:${pop3}/1 printed:\n${message.toString('utf8').trimEnd()}`);
    say(t, `curl -u demo:demo pop3://127.0.0.1:${pop3}/ printed: ${(await curlPop3('demo:demo', pop3, '')).toString().trim()}`);

    // The README's swaks through the proxy and Postfix; Postfix delivers after its 250, so wait.
    const subject = `compose round trip ${process.pid}`;
    const swaks = ['--server', `127.0.0.1:${smtp}`, '--auth-user', 'demo', '--auth-password', 'demo', '--to', 'demo@example.com', '--header', `Subject: ${subject}`, '--timeout', '30'];
    // Postfix may still be starting when POP3 already answers: 454 is "later", as for any client.
    const sent = await waitFor('swaks through the proxy', 90_000, () => run('swaks', swaks, 60_000).catch(() => undefined));
    assert.match(sent.stdout, /^<-\s+250 .*queued as/m, `swaks got the relay's 250:\n${sent.stdout}`);
    await waitFor('the message in the demo mailbox', 60_000, async () => ((await curlPop3('demo:demo', pop3, '2')).toString().includes(`Subject: ${subject}`) ? true : undefined));
    say(t, `swaks through 127.0.0.1:${smtp}, then curl pop3://127.0.0.1:${pop3}/2 read it back; swaks said:\n${sent.stdout.trimEnd()}`);
  });
  assert.match(stack.output, /dovecot-demo: the sample message is in demo's mailbox/);
  assert.doesNotMatch(stack.output, /\b(Error|Fatal|panic)\b/i, 'no error in any service');
});

test('docker/compose.replicas.yaml: two proxies behind HAProxy with Redis serve the sample and share the mailbox lock', { skip, timeout: 600_000 }, async (t: TestContext) => {
  const [imap, redis, haproxy, p1, m1, p2, m2] = (await Promise.all(Array.from({ length: 7 }, () => freePort()))) as [number, number, number, number, number, number, number];
  const dovecotConf = path.join(work, 'replicas-dovecot.conf');
  await writeFile(dovecotConf, dovecotOnLoopback(imap, await freePort(), await freePort()), { mode: 0o644 });
  const replica = (port: number, metricsPort: number) => ({
    environment: {
      POP3PROXY_IMAP_HOST: '127.0.0.1',
      POP3PROXY_IMAP_PORT: String(imap),
      POP3PROXY_HOST: '127.0.0.1',
      POP3PROXY_PORT: String(port),
      POP3PROXY_METRICS_HOST: '127.0.0.1',
      POP3PROXY_METRICS_PORT: String(metricsPort),
      POP3PROXY_REDIS: `redis://127.0.0.1:${redis}/0`,
    },
  });
  const file = await hostNetworkCompose('docker/compose.replicas.yaml', path.join(work, 'compose.replicas.host.yaml'), {
    dovecot: { volumes: [`${dovecotConf}:/etc/dovecot/local.d/test.conf:ro`] },
    redis: { command: ['redis-server', '--bind', '127.0.0.1', '--port', String(redis), '--save', '', '--appendonly', 'no'] },
    proxy1: replica(p1, m1),
    proxy2: replica(p2, m2),
    haproxy: {
      environment: {
        POP3_BIND: `127.0.0.1:${haproxy}`,
        PROXY1: `127.0.0.1:${p1}`,
        PROXY1_METRICS_PORT: String(m1),
        PROXY2: `127.0.0.1:${p2}`,
        PROXY2_METRICS_PORT: String(m2),
      },
    },
  });
  const both = async (name: string, labels = '') => [await metric(m1, name, labels), await metric(m2, name, labels)];
  const stack = await withStack(t, 'replicas', file, async (running, started) => {
    const message = await waitFor('the replicas stack to serve the sample through HAProxy', 300_000, async () => {
      await running.checkRunning();
      return await curlPop3('demo:demo', haproxy, '1');
    });
    say(t, `docker-compose up --build to the first good curl through HAProxy: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    assert.match(message.toString(), /This message lives on the IMAP server/);
    say(t, `curl -u demo:demo pop3://127.0.0.1:${haproxy}/1 printed:\n${message.toString('utf8').trimEnd()}`);
    // Both replicas in HAProxy's rotation (a replica that was not listening yet at HAProxy's
    // first check comes back once its /healthz answers), then round robin: both serve logins.
    const inRotation = (server: string) => {
      const down = running.output.lastIndexOf(`proxies/${server} is DOWN`);
      return down < 0 || running.output.lastIndexOf(`proxies/${server} is UP`) > down;
    };
    await waitFor('HAProxy to have both replicas up', 30_000, async () => (inRotation('proxy1') && inRotation('proxy2') ? true : undefined));
    for (let i = 0; i < 4; i++) await curlPop3('demo:demo', haproxy, '');
    const ok = await both('pop3proxy_logins_total', '{outcome="ok"}');
    say(t, `logins served: proxy1 ${ok[0]}, proxy2 ${ok[1]}`);
    assert.ok(ok[0]! > 0 && ok[1]! > 0, 'HAProxy spreads the sessions over both replicas');

    // One session per mailbox across the replicas: while one holds it, the next (on the other
    // replica) gets [IN-USE] from the lock in Redis.
    const holder = await login(haproxy, 'demo', 'demo');
    const afterHolder = await both('pop3proxy_logins_total', '{outcome="ok"}');
    const holding = afterHolder.findIndex((n, i) => n > ok[i]!);
    const second = await RawPop3.connect(haproxy);
    await second.command('USER demo');
    const refused = await second.command('PASS demo', 30_000);
    const inUse = await both('pop3proxy_logins_total', '{outcome="in-use"}');
    say(t, `a second session while the first (on proxy${holding + 1}) holds the mailbox: ${refused}; refused as in use by proxy1/proxy2: ${inUse.join('/')}`);
    assert.match(refused, /^-ERR \[IN-USE\]/);
    assert.ok(holding >= 0 && inUse[1 - holding]! > 0 && inUse[holding] === 0, 'refused by the replica that does not hold the session');
    assert.match(await holder.command('QUIT'), /^\+OK/);
    holder.destroy();
    second.destroy();
  });
  assert.doesNotMatch(stack.output, /\b(Fatal|panic)\b/i);
});

/**
 * Brings a stack up as the README does (`up --build`, in the foreground), runs the checks, then
 * shows `ps` and takes the stack down, and shows what its services printed, pass or fail.
 */
async function withStack(t: TestContext, name: string, file: string, checks: (stack: ComposeStack, started: number) => Promise<void>): Promise<ComposeStack> {
  const stack = new ComposeStack(`${PREFIX.replace(/-/g, '')}${name}`, file);
  stacks.push(stack);
  const started = Date.now();
  stack.start();
  try {
    await checks(stack, started);
    say(t, `docker-compose ps:\n${(await stack.compose(['ps'])).stdout.trimEnd()}`);
  } finally {
    await stack.down();
    say(t, `what the stack printed (builds left out):\n${serviceLines(stack.output)}`);
  }
  return stack;
}

/** What the test adds to the demo Dovecot on the host's network: loopback only, free ports (IMAP, LMTP, auth). */
function dovecotOnLoopback(port: number, lmtp: number, auth: number): string {
  const listener = (service: string, name: string, p: number) => [`service ${service} {`, `  inet_listener ${name} {`, `    port = ${p}`, '  }', '}'];
  return ['listen = 127.0.0.1', 'login_trusted_networks = 127.0.0.0/8', ...listener('imap-login', 'imap', port), ...listener('lmtp', 'lmtp', lmtp), ...listener('auth', 'auth-postfix', auth), ''].join('\n');
}
