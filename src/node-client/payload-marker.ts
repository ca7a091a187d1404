/**
 * The marker every synthetic payload carries right after its codec's header bytes, and
 * the fill after it, so a receiver can prove the bytes arrived intact, tell which source
 * and which packet they came from, and read when the packet was made.
 *
 * Layout, 25 bytes, never a zero byte (so no H.264 start-code emulation anywhere):
 *   4 bytes  MAGIC
 *   5 bytes  sourceId   (uint32 as five 7-bit groups, most significant first, each | 0x80)
 *   5 bytes  index      (uint32 packet index within the source, same encoding)
 *   3 bytes  bodyLength (marker + fill length, 21 bits, same encoding)
 *   8 bytes  sentAt     (wall clock in µs since the epoch, 56 bits, same encoding)
 * then bodyLength - 25 fill bytes: a window of a fixed pseudo-random table (no zero byte)
 * starting at an offset that depends on (sourceId, index). Writing and checking the fill
 * are one native copy and one native compare, so the load tool's hot path stays light.
 */

export const MARKER_MAGIC = Buffer.from([0x53, 0x43, 0x56, 0xa7]); // "SCV" + 0xa7
export const MARKER_LENGTH = 25;
/** Longest fill a body may have (bodies are at most one RTP payload). */
export const MAX_FILL_BYTES = 4096;

const FILL_OFFSETS = 65536;
const TWO_28 = 2 ** 28;

/** xorshift32 bytes, 0 → 0x5a. */
const FILL = (() => {
  const t = Buffer.alloc(FILL_OFFSETS + MAX_FILL_BYTES);
  let x = 0x2545f491;
  for (let i = 0; i < t.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    const b = x & 0xff;
    t[i] = b === 0 ? 0x5a : b;
  }
  return t;
})();

/** A small integer hash of (a, b); never 0. */
export function mix(a: number, b: number): number {
  let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 0x632be5ab, 0xc2b2ae35);
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  return h === 0 ? 0x1234567 : h >>> 0;
}

/** Wall clock in ms with sub-millisecond resolution (the same clock on every process of a host). */
export function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

/** MAGIC and the encoded sourceId: the first 9 marker bytes, the same in every packet of a source. */
export function markerPrefix(sourceId: number): Buffer {
  const p = Buffer.alloc(9);
  MARKER_MAGIC.copy(p, 0);
  const v = sourceId >>> 0;
  p[4] = 0x80 | (v >>> 28);
  p[5] = 0x80 | ((v >>> 21) & 0x7f);
  p[6] = 0x80 | ((v >>> 14) & 0x7f);
  p[7] = 0x80 | ((v >>> 7) & 0x7f);
  p[8] = 0x80 | (v & 0x7f);
  return p;
}

/** Writes marker + fill, `bodyLength` bytes in all, at `offset`; `prefix` from markerPrefix(sourceId). */
export function writeBody(buf: Buffer, offset: number, bodyLength: number, prefix: Buffer, sourceId: number, index: number, sentAtMs: number): void {
  if (bodyLength < MARKER_LENGTH || bodyLength - MARKER_LENGTH > MAX_FILL_BYTES) throw new RangeError(`body of ${bodyLength} bytes`);
  prefix.copy(buf, offset);
  let o = offset + 9;
  const i = index >>> 0;
  buf[o++] = 0x80 | (i >>> 28);
  buf[o++] = 0x80 | ((i >>> 21) & 0x7f);
  buf[o++] = 0x80 | ((i >>> 14) & 0x7f);
  buf[o++] = 0x80 | ((i >>> 7) & 0x7f);
  buf[o++] = 0x80 | (i & 0x7f);
  buf[o++] = 0x80 | ((bodyLength >>> 14) & 0x7f);
  buf[o++] = 0x80 | ((bodyLength >>> 7) & 0x7f);
  buf[o++] = 0x80 | (bodyLength & 0x7f);
  const us = Math.round(sentAtMs * 1000);
  const hi = Math.floor(us / TWO_28);
  const lo = us - hi * TWO_28;
  buf[o++] = 0x80 | ((hi >>> 21) & 0x7f);
  buf[o++] = 0x80 | ((hi >>> 14) & 0x7f);
  buf[o++] = 0x80 | ((hi >>> 7) & 0x7f);
  buf[o++] = 0x80 | (hi & 0x7f);
  buf[o++] = 0x80 | ((lo >>> 21) & 0x7f);
  buf[o++] = 0x80 | ((lo >>> 14) & 0x7f);
  buf[o++] = 0x80 | ((lo >>> 7) & 0x7f);
  buf[o++] = 0x80 | (lo & 0x7f);
  const start = mix(sourceId >>> 0, i) % FILL_OFFSETS;
  FILL.copy(buf, o, start, start + bodyLength - MARKER_LENGTH);
}

function read7(buf: Buffer, offset: number, groups: number): number | undefined {
  let v = 0;
  for (let g = 0; g < groups; g++) {
    const b = buf[offset + g];
    if (b === undefined || (b & 0x80) === 0) return undefined;
    v = v * 128 + (b & 0x7f);
  }
  return v;
}

export interface PayloadCheck {
  ok: boolean;
  sourceId?: number;
  index?: number;
  /** When the packet was made (wall clock ms). */
  sentAtMs?: number;
  /** Why `ok` is false. */
  reason?: string;
}

/** Checks marker and fill in [offset, end). */
export function checkBody(buf: Buffer, offset: number, end: number = buf.length): PayloadCheck {
  if (offset < 0 || end - offset < MARKER_LENGTH) return { ok: false, reason: 'too short for a marker' };
  if (buf.compare(MARKER_MAGIC, 0, 4, offset, offset + 4) !== 0) return { ok: false, reason: 'no marker magic' };
  const sourceId = read7(buf, offset + 4, 5);
  const index = read7(buf, offset + 9, 5);
  const bodyLength = read7(buf, offset + 14, 3);
  const sentAtUs = read7(buf, offset + 17, 8);
  if (sourceId === undefined || index === undefined || bodyLength === undefined || sentAtUs === undefined || sourceId > 0xffffffff || index > 0xffffffff) {
    return { ok: false, reason: 'corrupt marker fields' };
  }
  if (bodyLength !== end - offset) return { ok: false, sourceId, index, reason: `body length ${end - offset}, marker says ${bodyLength}` };
  const fill = bodyLength - MARKER_LENGTH;
  if (fill > MAX_FILL_BYTES) return { ok: false, sourceId, index, reason: `fill of ${fill} bytes` };
  const start = mix(sourceId, index) % FILL_OFFSETS;
  if (buf.compare(FILL, start, start + fill, offset + MARKER_LENGTH, end) !== 0) return { ok: false, sourceId, index, reason: 'fill differs' };
  return { ok: true, sourceId, index, sentAtMs: sentAtUs / 1000 };
}

/** The send time of a marker at `offset` (ms), or NaN if there is none. */
export function sentAtOf(buf: Buffer, offset: number): number {
  if (offset < 0 || offset + MARKER_LENGTH > buf.length || buf[offset] !== 0x53 || buf[offset + 3] !== 0xa7) return Number.NaN;
  const us = read7(buf, offset + 17, 8);
  return us === undefined ? Number.NaN : us / 1000;
}
