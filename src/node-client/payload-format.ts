/**
 * Reading synthetic payloads back: the codec header bytes (VP8 RFC 7741 descriptor and
 * RFC 6386 frame tag, H.264 RFC 6184 single NAL / STAP-A / FU-A, Opus TOC), where the
 * marker sits behind them (payload-marker.ts), and whether a payload arrived intact.
 */
import { checkBody, sentAtOf, type PayloadCheck } from './payload-marker.ts';

/** User-data-unregistered SEI UUID that carries the marker in an H.264 keyframe's STAP-A. */
export const SEI_UUID = Buffer.from('5343562d73796e746865746963212121', 'hex'); // "SCV-synthetic!!!"

/** 'vp8', 'VP8', 'video/VP8' → 'vp8'; unknown names are returned lowercased without the type. */
export function codecName(nameOrMime: string): string {
  const s = nameOrMime.toLowerCase();
  const slash = s.indexOf('/');
  return slash === -1 ? s : s.slice(slash + 1);
}

// ---- VP8 ----------------------------------------------------------------------------------

export interface Vp8Info {
  /** Payload descriptor length. */
  descriptorLength: number;
  /** S bit: first packet of a VP8 partition. */
  startOfPartition: boolean;
  partitionIndex: number;
  pictureId?: number;
  /** True when this packet starts a frame (S=1, PID=0). */
  startOfFrame: boolean;
  /** Only known on the start of a frame. */
  keyframe?: boolean;
  width?: number;
  height?: number;
  /** Where the marker starts (descriptor + frame header on a frame start). */
  bodyOffset: number;
}

export function parseVp8(p: Buffer): Vp8Info | undefined {
  const b0 = p[0];
  if (b0 === undefined) return undefined;
  let i = 1;
  let pictureId: number | undefined;
  if (b0 & 0x80) {
    const x = p[1];
    if (x === undefined) return undefined;
    i = 2;
    if (x & 0x80) {
      const m = p[i];
      if (m === undefined) return undefined;
      if (m & 0x80) {
        const lo = p[i + 1];
        if (lo === undefined) return undefined;
        pictureId = ((m & 0x7f) << 8) | lo;
        i += 2;
      } else {
        pictureId = m & 0x7f;
        i += 1;
      }
    }
    if (x & 0x40) i += 1; // TL0PICIDX
    if (x & 0x30) i += 1; // TID/Y/KEYIDX
  }
  if (i > p.length) return undefined;
  const startOfPartition = (b0 & 0x10) !== 0;
  const partitionIndex = b0 & 0x07;
  const info: Vp8Info = { descriptorLength: i, startOfPartition, partitionIndex, pictureId, startOfFrame: startOfPartition && partitionIndex === 0, bodyOffset: i };
  if (info.startOfFrame) {
    const tag0 = p[i];
    if (tag0 === undefined || p.length < i + 3) return info;
    info.keyframe = (tag0 & 0x01) === 0;
    if (info.keyframe) {
      if (p.length < i + 10 || p[i + 3] !== 0x9d || p[i + 4] !== 0x01 || p[i + 5] !== 0x2a) return info;
      info.width = p.readUInt16LE(i + 6) & 0x3fff;
      info.height = p.readUInt16LE(i + 8) & 0x3fff;
      info.bodyOffset = i + 10;
    } else {
      info.bodyOffset = i + 3;
    }
  }
  return info;
}

/** parseVp8's bodyOffset without building an object (the load tool reads it per packet); -1 if too short. */
function vp8BodyOffset(p: Buffer): number {
  const len = p.length;
  if (len < 1) return -1;
  const b0 = p[0]!;
  let i = 1;
  if ((b0 & 0x80) !== 0) {
    if (len < 3) return -1;
    const x = p[1]!;
    i = 2;
    if ((x & 0x80) !== 0) i += (p[2]! & 0x80) !== 0 ? 2 : 1;
    if ((x & 0x40) !== 0) i += 1;
    if ((x & 0x30) !== 0) i += 1;
  }
  if ((b0 & 0x10) !== 0 && (b0 & 0x07) === 0) {
    if (i >= len) return -1;
    i += (p[i]! & 0x01) === 0 ? 10 : 3;
  }
  return i;
}

// ---- H.264 ----------------------------------------------------------------------------------

export interface H264Info {
  packetization: 'single' | 'stap-a' | 'fu-a' | 'other';
  /** NAL unit types carried (for FU-A: the fragmented unit's type). */
  nalTypes: number[];
  /** STAP-A: the aggregated NAL units (each starting with its header byte). */
  nalUnits?: Buffer[];
  /** FU-A start / end bits. */
  start?: boolean;
  end?: boolean;
  /** IDR slice or SPS, and for FU-A only on the first fragment. */
  keyframe: boolean;
  /** [offset, end) of the marker region, if this packet layout carries one. */
  body?: [number, number];
}

export function parseH264(p: Buffer): H264Info | undefined {
  const b0 = p[0];
  if (b0 === undefined) return undefined;
  const type = b0 & 0x1f;
  if (type >= 1 && type <= 23) return { packetization: 'single', nalTypes: [type], keyframe: type === 5 || type === 7, body: [1, p.length] };
  if (type === 24) {
    const nalUnits: Buffer[] = [];
    let i = 1;
    while (i + 2 <= p.length) {
      const size = p.readUInt16BE(i);
      if (size === 0 || i + 2 + size > p.length) return undefined;
      nalUnits.push(p.subarray(i + 2, i + 2 + size));
      i += 2 + size;
    }
    if (i !== p.length || nalUnits.length === 0) return undefined;
    const nalTypes = nalUnits.map((n) => n[0]! & 0x1f);
    const info: H264Info = { packetization: 'stap-a', nalTypes, nalUnits, keyframe: nalTypes.some((t) => t === 5 || t === 7) };
    // Our STAP-A ends with a user-data-unregistered SEI: 0x06, type 5, size, UUID, body, 0x80.
    const last = nalUnits[nalUnits.length - 1]!;
    if ((last[0]! & 0x1f) === 6 && last[1] === 5) {
      let j = 2;
      let size = 0;
      while (last[j] === 0xff) {
        size += 255;
        j++;
      }
      size += last[j] ?? 0;
      j++;
      const lastStart = last.byteOffset - p.byteOffset;
      if (last.subarray(j, j + 16).equals(SEI_UUID) && j + size + 1 === last.length) info.body = [lastStart + j + 16, lastStart + j + size];
    }
    return info;
  }
  if (type === 28) {
    const h = p[1];
    if (h === undefined) return undefined;
    const inner = h & 0x1f;
    const start = (h & 0x80) !== 0;
    return { packetization: 'fu-a', nalTypes: [inner], start, end: (h & 0x40) !== 0, keyframe: start && (inner === 5 || inner === 7), body: [2, p.length] };
  }
  return { packetization: 'other', nalTypes: [type], keyframe: false };
}

// ---- any codec ------------------------------------------------------------------------------

/** Keyframe detection from the codec header only (what an SFU would look at). */
export function isKeyframe(codec: string, payload: Buffer): boolean {
  switch (codecName(codec)) {
    case 'vp8':
      return parseVp8(payload)?.keyframe === true;
    case 'h264':
      return parseH264(payload)?.keyframe === true;
    default:
      return false;
  }
}

/** Where the marker region of a payload is, from the codec's header bytes. */
export function bodyRange(codec: string, payload: Buffer): [number, number] | undefined {
  switch (codecName(codec)) {
    case 'vp8': {
      const info = parseVp8(payload);
      return info === undefined ? undefined : [info.bodyOffset, payload.length];
    }
    case 'h264':
      return parseH264(payload)?.body;
    case 'opus':
      return payload.length >= 1 ? [1, payload.length] : undefined;
    default:
      return undefined;
  }
}

/** Checks that a payload made by SyntheticSource arrived byte for byte. */
export function verifyPayload(codec: string, payload: Buffer): PayloadCheck {
  const range = bodyRange(codec, payload);
  if (range === undefined) return { ok: false, reason: `no ${codecName(codec)} body found` };
  return checkBody(payload, range[0], range[1]);
}

/** When a synthetic VP8 or Opus packet was made (wall clock ms), without checking the rest; NaN if it carries no marker. */
export function sendTimeOf(codec: 'vp8' | 'opus', payload: Buffer): number {
  return sentAtOf(payload, codec === 'vp8' ? vp8BodyOffset(payload) : 1);
}
