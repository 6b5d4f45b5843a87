/** Medians, the result table and its pass/fail verdicts. */

export function median(values: readonly number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

export interface Row {
  readonly workload: string;
  readonly metric: string;
  readonly native?: number | undefined;
  readonly proxy?: number | undefined;
  readonly imapDirect?: number | undefined;
  /** proxy / native */
  readonly ratio?: number | undefined;
  readonly target: string;
  /** undefined: no verdict (no target, or the figure is missing). */
  readonly pass?: boolean | undefined;
  /** A remark shown with the verdict: failed sessions, or why the row has no figures. */
  readonly note?: string | undefined;
}

export function ratio(proxy: number | undefined, native: number | undefined): number | undefined {
  return proxy === undefined || native === undefined || native === 0 ? undefined : proxy / native;
}

function num(value: number | undefined): string {
  if (value === undefined || Number.isNaN(value)) return '-';
  const abs = Math.abs(value);
  if (abs >= 100) return value.toFixed(0);
  if (abs >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

function verdict(pass: boolean | undefined): string {
  return pass === undefined ? '-' : pass ? 'PASS' : 'FAIL';
}

export function formatTable(rows: readonly Row[]): string {
  const header = ['workload', 'metric', 'native', 'proxy', 'imap-direct', 'proxy/native', 'target', 'result'];
  const cells = rows.map((r) => [
    r.workload,
    r.metric,
    num(r.native),
    num(r.proxy),
    num(r.imapDirect),
    r.ratio === undefined ? '-' : `${r.ratio.toFixed(2)}x`,
    r.target,
    r.note ? `${verdict(r.pass)} (${r.note})` : verdict(r.pass),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] as string).length)));
  const numeric = new Set([2, 3, 4, 5]);
  const line = (c: string[]) => c.map((v, i) => (numeric.has(i) ? v.padStart(widths[i] as number) : v.padEnd(widths[i] as number))).join('  ').trimEnd();
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  return [line(header), rule, ...cells.map(line)].join('\n');
}
