/**
 * The soak's settings: flags (`--duration 300`, `--duration=300`), else SOAK_* environment
 * variables (SOAK_DURATION, ...), else the defaults below. Defaults are sized for a 2-core
 * machine that other test suites share: a modest load, generous time bounds.
 */
export interface SoakOptions {
  /** Seconds clients start new sessions for (faults are injected over the same window). */
  durationS: number;
  /** POP3 clients running at once (each runs one session after another). */
  clients: number;
  /** Test mailboxes (half served by the lone proxy, half by the two replicas). */
  users: number;
  seed: number;
  /** --lock-ttl of the replicas, seconds. */
  lockTtlS: number;
  /** How much later than its holder's end + lock TTL an [IN-USE] may still come, seconds. */
  inUseMarginS: number;
  /** The longest a command may go without a reply before it counts as unanswered, seconds. */
  replyBoundS: number;
  /** Bound for the resident memory of each proxy process, MiB. */
  rssLimitMiB: number;
  /** Messages each mailbox starts with (and is topped up to). */
  messagesPerUser: number;
  /** Seconds between two faults: drawn from [min, max]. */
  faultGapS: [number, number];
  /** Keep the work folder (proxy logs) even when nothing failed. */
  keep: boolean;
  /** Print faults and violations as they happen. */
  verbose: boolean;
}

export const DEFAULT_OPTIONS: SoakOptions = {
  durationS: 60,
  clients: 8,
  users: 12,
  seed: 1,
  lockTtlS: 3,
  inUseMarginS: 3,
  replyBoundS: 60,
  rssLimitMiB: 400,
  messagesPerUser: 8,
  faultGapS: [1.5, 4],
  keep: false,
  verbose: false,
};

type NumberKey = { [K in keyof SoakOptions]: SoakOptions[K] extends number ? K : never }[keyof SoakOptions];

const NUMBERS: Record<string, NumberKey> = {
  duration: 'durationS',
  clients: 'clients',
  users: 'users',
  seed: 'seed',
  'lock-ttl': 'lockTtlS',
  'in-use-margin': 'inUseMarginS',
  'reply-bound': 'replyBoundS',
  'rss-limit': 'rssLimitMiB',
  messages: 'messagesPerUser',
};
const FLAGS: Record<string, 'keep' | 'verbose'> = { keep: 'keep', verbose: 'verbose' };

export const USAGE = [
  'npm run soak -- [--duration S] [--clients N] [--users N] [--seed N] [--lock-ttl S] [--in-use-margin S]',
  '                [--reply-bound S] [--rss-limit MiB] [--messages N] [--fault-gap MIN,MAX] [--keep] [--verbose]',
  'Each flag can also be given as SOAK_<NAME> (SOAK_DURATION=300, SOAK_SEED=7, SOAK_FAULT_GAP=1,3, SOAK_KEEP=1).',
].join('\n');

function numberOf(name: string, text: string): number {
  const value = Number(text);
  if (text.trim() === '' || !Number.isFinite(value) || value < 0) throw new Error(`--${name}: not a number >= 0: ${JSON.stringify(text)}`);
  return value;
}

function gapOf(text: string): [number, number] {
  const parts = text.split(',').map((p) => numberOf('fault-gap', p));
  const [lo, hi = lo] = parts;
  if (parts.length > 2 || lo === undefined || hi < lo) throw new Error(`--fault-gap: MIN,MAX with MIN <= MAX: ${JSON.stringify(text)}`);
  return [lo, hi];
}

function apply(options: SoakOptions, name: string, value: string | undefined): void {
  const key = NUMBERS[name];
  if (key !== undefined) {
    if (value === undefined) throw new Error(`--${name} needs a value`);
    options[key] = numberOf(name, value);
  } else if (name === 'fault-gap') {
    if (value === undefined) throw new Error('--fault-gap needs a value');
    options.faultGapS = gapOf(value);
  } else if (FLAGS[name] !== undefined) {
    options[FLAGS[name]] = value === undefined || !/^(0|false|no)$/i.test(value);
  } else {
    throw new Error(`unknown option --${name}\n${USAGE}`);
  }
}

/** The settings from `argv` (without node and the script) over `env` over the defaults. */
export function parseSoakOptions(argv: readonly string[], env: NodeJS.ProcessEnv = process.env, base: Partial<SoakOptions> = {}): SoakOptions {
  const options: SoakOptions = { ...DEFAULT_OPTIONS, faultGapS: [...DEFAULT_OPTIONS.faultGapS], ...base };
  for (const name of [...Object.keys(NUMBERS), 'fault-gap', ...Object.keys(FLAGS)]) {
    const value = env[`SOAK_${name.toUpperCase().replace(/-/g, '_')}`];
    if (value !== undefined && value !== '') apply(options, name, value);
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (!m) throw new Error(`unexpected argument ${JSON.stringify(arg)}\n${USAGE}`);
    const name = m[1]!;
    let value = m[2];
    const wantsValue = NUMBERS[name] !== undefined || name === 'fault-gap';
    if (value === undefined && wantsValue) value = argv[++i];
    apply(options, name, value);
  }
  if (options.users < 2) throw new Error('--users: at least 2 (one for each proxy group)');
  if (options.clients < 1) throw new Error('--clients: at least 1');
  options.users = Math.floor(options.users);
  options.clients = Math.floor(options.clients);
  return options;
}
