/** IMAP sequence sets of UIDs (RFC 3501 section 9, sequence-set), both ways. */

/** The UIDs of an IMAP sequence set such as "3:7,9", ascending. */
export function parseUidSet(set: string): Uint32Array {
  const uids: number[] = [];
  for (const part of set.split(',')) {
    if (part === '') continue;
    const [first, last = first] = part.split(':').map(Number) as [number, number?];
    const [low, high] = first <= last ? [first, last] : [last, first];
    for (let uid = low; uid <= high; uid++) uids.push(uid);
  }
  return Uint32Array.from(uids).sort();
}

/** An IMAP sequence set of UIDs, with runs folded ("3:7,9"). */
export function uidSet(uids: readonly number[]): string {
  const sorted = [...uids].sort((a, b) => a - b);
  const ranges: string[] = [];
  for (let i = 0; i < sorted.length;) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++;
    ranges.push(i === j ? String(sorted[i]) : `${sorted[i]}:${sorted[j]}`);
    i = j + 1;
  }
  return ranges.join(',');
}
