/**
 * Memory figures from /proc: a process's RSS sampled at a fixed interval (its peak during a
 * transfer), and the proportional set size (PSS) of a whole process tree, which counts shared
 * pages once in total (what Dovecot's many processes really use).
 */
import { readFileSync, readdirSync } from 'node:fs';
import { rssKbOf } from './proxy-process.js';

/** Samples a process's RSS every `intervalMs` between start() and stop(). */
export class RssPeakSampler {
  private timer: NodeJS.Timeout | undefined;
  private baselineKb = 0;
  private peakKb = 0;

  constructor(private readonly pid: number, private readonly intervalMs = 20) {}

  start(): void {
    this.baselineKb = rssKbOf(this.pid);
    this.peakKb = this.baselineKb;
    this.timer = setInterval(() => this.sample(), this.intervalMs);
  }

  /** Stops sampling; the RSS at start() and the highest RSS seen since, in KiB. */
  stop(): { baselineKb: number; peakKb: number } {
    clearInterval(this.timer);
    this.sample();
    return { baselineKb: this.baselineKb, peakKb: this.peakKb };
  }

  private sample(): void {
    this.peakKb = Math.max(this.peakKb, rssKbOf(this.pid));
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The median of a few readings over `spanMs`: one reading can catch a transient peak. */
export async function steadyReading(read: () => number, spanMs = 1000, samples = 5): Promise<number> {
  const values: number[] = [];
  for (let i = 0; i < samples; i++) {
    values.push(read());
    if (i < samples - 1) await sleep(spanMs / (samples - 1));
  }
  values.sort((a, b) => a - b);
  return values[Math.floor(values.length / 2)] as number;
}

function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The command name may contain spaces and parentheses: fields resume after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[1]);
  } catch {
    return undefined;
  }
}

function allPids(): number[] {
  return readdirSync('/proc').filter((n) => /^\d+$/.test(n)).map(Number);
}

/** The pid of the Dovecot master started with this configuration file, if it is running. */
export function dovecotMasterPid(configPath: string): number | undefined {
  for (const pid of allPids()) {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
      if (argv.some((a) => a.endsWith('dovecot')) && argv.includes(configPath)) return pid;
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}

/** A process and all its descendants. */
export function processTree(rootPid: number): number[] {
  const children = new Map<number, number[]>();
  for (const pid of allPids()) {
    const parent = parentOf(pid);
    if (parent === undefined) continue;
    const list = children.get(parent) ?? [];
    list.push(pid);
    children.set(parent, list);
  }
  const tree: number[] = [];
  const stack = [rootPid];
  while (stack.length > 0) {
    const pid = stack.pop() as number;
    tree.push(pid);
    stack.push(...(children.get(pid) ?? []));
  }
  return tree;
}

/** The sum of the PSS of a process and all its descendants, in KiB. */
export function treePssKb(rootPid: number): number {
  return processTree(rootPid).reduce((sum, pid) => sum + pssKbOf(pid), 0);
}

function pssKbOf(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'latin1'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}
