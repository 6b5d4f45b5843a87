/**
 * A kept mailbox listing as one compact binary string, for Redis: about 2 to 4 octets a
 * message instead of the 12 the process keeps. Pure: no I/O.
 *
 *   version         u8     LISTING_FORMAT
 *   uidValidity     u64    big-endian
 *   uidNext         u32    0 = unknown (the server sent none)
 *   exists          u32
 *   highestModseq   u64    0 = unknown (no CONDSTORE)
 *   n               varint the number of messages
 *   UIDs            n varints: the first UID, then each one's distance from the one before
 *   sizes           n varints, in the order of the UIDs
 *   deleted         varint 0 = unknown, else 1 + the count of UIDs flagged \Deleted,
 *                   followed by those UIDs as the UIDs above (first, then distances)
 *
 * Varints are unsigned LEB128 (7 bits an octet, low first). Anything that does not read back
 * exactly (another version, a truncated or overlong string, UIDs out of order, a size that is no
 * whole number) decodes to undefined: a listing that cannot be trusted is no listing.
 */
import type { CachedMailbox } from '../imap/snapshot-cache.js';

export const LISTING_FORMAT = 1;

const HEADER_OCTETS = 1 + 8 + 4 + 4 + 8;
const U32_MAX = 0xffff_ffff;
const U64_MAX = (1n << 64n) - 1n;
/** Octets of the longest varint read: 8 carry 56 bits, enough for any size up to 2^53. */
const MAX_VARINT_OCTETS = 8;

class Writer {
  private buffer: Buffer;
  private at = 0;

  constructor(estimate: number) {
    this.buffer = Buffer.allocUnsafe(Math.max(64, estimate));
  }

  private room(octets: number): void {
    if (this.at + octets <= this.buffer.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.at + octets));
    this.buffer.copy(bigger, 0, 0, this.at);
    this.buffer = bigger;
  }

  u8(value: number): void {
    this.room(1);
    this.buffer[this.at++] = value;
  }

  u32(value: number): void {
    this.room(4);
    this.buffer.writeUInt32BE(value, this.at);
    this.at += 4;
  }

  u64(value: bigint): void {
    this.room(8);
    this.buffer.writeBigUInt64BE(value, this.at);
    this.at += 8;
  }

  /** A whole number from 0 to 2^53 - 1. */
  varint(value: number): void {
    this.room(MAX_VARINT_OCTETS);
    while (value >= 0x80) {
      this.buffer[this.at++] = (value % 0x80) | 0x80;
      value = Math.floor(value / 0x80);
    }
    this.buffer[this.at++] = value;
  }

  done(): Buffer {
    return this.buffer.subarray(0, this.at);
  }
}

class Reader {
  private at = 0;

  constructor(private readonly data: Buffer) {}

  get left(): number {
    return this.data.length - this.at;
  }

  u8(): number | undefined {
    if (this.left < 1) return undefined;
    return this.data[this.at++];
  }

  u32(): number | undefined {
    if (this.left < 4) return undefined;
    const value = this.data.readUInt32BE(this.at);
    this.at += 4;
    return value;
  }

  u64(): bigint | undefined {
    if (this.left < 8) return undefined;
    const value = this.data.readBigUInt64BE(this.at);
    this.at += 8;
    return value;
  }

  /** Undefined when truncated, longer than MAX_VARINT_OCTETS, past 2^53 - 1 or not minimal. */
  varint(): number | undefined {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < MAX_VARINT_OCTETS; i++) {
      if (this.at >= this.data.length) return undefined;
      const octet = this.data[this.at++];
      value += (octet & 0x7f) * scale;
      if ((octet & 0x80) === 0) {
        // A final zero octet after others is a longer spelling of a shorter number.
        if (octet === 0 && i > 0) return undefined;
        return Number.isSafeInteger(value) ? value : undefined;
      }
      scale *= 0x80;
    }
    return undefined;
  }
}

const wholeU32 = (value: number) => Number.isInteger(value) && value >= 0 && value <= U32_MAX;

/** Writes ascending UIDs: the first, then distances. False if they are not strictly ascending UIDs. */
function writeUids(out: Writer, uids: ArrayLike<number>): boolean {
  let previous = 0;
  for (let i = 0; i < uids.length; i++) {
    const uid = uids[i];
    if (!wholeU32(uid) || uid <= previous) return false;
    out.varint(uid - previous);
    previous = uid;
  }
  return true;
}

function readUids(input: Reader, count: number): Uint32Array | undefined {
  const uids = new Uint32Array(count);
  let previous = 0;
  for (let i = 0; i < count; i++) {
    const step = input.varint();
    if (step === undefined || step === 0) return undefined;
    previous += step;
    if (previous > U32_MAX) return undefined;
    uids[i] = previous;
  }
  return uids;
}

/**
 * The listing as one binary string; undefined when it cannot be written faithfully (UIDs not
 * strictly ascending, a size that is no whole number, a value out of its field's range).
 */
export function encodeListing(listing: CachedMailbox): Buffer | undefined {
  const { state, uids, sizes, deleted } = listing;
  const uidNext = state.uidNext ?? 0;
  const modseq = state.highestModseq ?? 0n;
  if (uids.length !== sizes.length) return undefined;
  if (state.uidValidity < 0n || state.uidValidity > U64_MAX || modseq < 0n || modseq > U64_MAX) return undefined;
  if (!wholeU32(uidNext) || !wholeU32(state.exists)) return undefined;
  const out = new Writer(HEADER_OCTETS + 5 + uids.length * 4 + (deleted?.size ?? 0) * 2);
  out.u8(LISTING_FORMAT);
  out.u64(state.uidValidity);
  out.u32(uidNext);
  out.u32(state.exists);
  out.u64(modseq);
  out.varint(uids.length);
  if (!writeUids(out, uids)) return undefined;
  for (let i = 0; i < sizes.length; i++) {
    const size = sizes[i];
    if (!Number.isSafeInteger(size) || size < 0) return undefined;
    out.varint(size);
  }
  if (deleted === undefined) out.varint(0);
  else {
    out.varint(deleted.size + 1);
    if (
      !writeUids(
        out,
        [...deleted].sort((a, b) => a - b),
      )
    )
      return undefined;
  }
  return out.done();
}

/** The listing `encodeListing` wrote; undefined for anything else. */
export function decodeListing(data: Buffer): CachedMailbox | undefined {
  const input = new Reader(data);
  if (input.u8() !== LISTING_FORMAT) return undefined;
  const uidValidity = input.u64();
  const uidNext = input.u32();
  const exists = input.u32();
  const modseq = input.u64();
  const count = input.varint();
  if (
    uidValidity === undefined ||
    uidNext === undefined ||
    exists === undefined ||
    modseq === undefined ||
    count === undefined
  )
    return undefined;
  // Every message takes two octets at least (a UID step and a size): no allocation past that.
  if (count * 2 > input.left) return undefined;
  const uids = readUids(input, count);
  if (uids === undefined) return undefined;
  const sizes = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    const size = input.varint();
    if (size === undefined) return undefined;
    sizes[i] = size;
  }
  const marker = input.varint();
  if (marker === undefined || marker - 1 > input.left) return undefined;
  let deleted: Set<number> | undefined;
  if (marker > 0) {
    const flagged = readUids(input, marker - 1);
    if (flagged === undefined) return undefined;
    deleted = new Set(flagged);
  }
  if (input.left !== 0) return undefined;
  return {
    state: {
      uidValidity,
      uidNext: uidNext === 0 ? undefined : uidNext,
      exists,
      highestModseq: modseq === 0n ? undefined : modseq,
    },
    uids,
    sizes,
    deleted,
  };
}
