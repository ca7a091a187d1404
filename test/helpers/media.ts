/**
 * Synthetic, well-formed RTP payloads for VP8, H.264 (packetization-mode=1) and Opus.
 * Nothing is encoded: the codec headers are real (so an SFU's keyframe detection and
 * frame boundaries work), the rest of each payload is a verifiable marker followed by a
 * deterministic pseudo-random fill, so a receiver can prove the bytes arrived intact and
 * tell which source and which packet they came from (`verifyPayload`).
 *
 * Marker layout (right after the codec's header bytes), 17 bytes, never a zero byte (so
 * no H.264 start-code emulation anywhere in a payload):
 *   4 bytes  MAGIC
 *   5 bytes  sourceId   (uint32 as five 7-bit groups, most significant first, each | 0x80)
 *   5 bytes  index      (uint32 packet index within the source, same encoding)
 *   3 bytes  bodyLength (marker + fill length, 21 bits, same encoding)
 * then bodyLength - 17 fill bytes from an xorshift32 seeded by (sourceId, index), 0 → 0x5a.
 */
import { RtpHeader, RtpPacket } from 'werift';
import { FrameClock } from '../../src/loadtest/frame-clock.ts';
import { OPUS_CLOCK_RATE, VIDEO_CLOCK_RATE } from '../../src/loadtest/synthetic-media.ts';

export type SyntheticCodec = 'vp8' | 'h264' | 'opus';

export const MARKER_MAGIC = Buffer.from([0x53, 0x43, 0x56, 0xa7]); // "SCV" + 0xa7
export const MARKER_LENGTH = 17;
/** Default largest RTP payload a generator emits. */
export const DEFAULT_MAX_PAYLOAD_BYTES = 1100;
/** Opus: 20 ms per packet at 48 kHz. */
export const OPUS_TIMESTAMP_STEP = 960;
export const OPUS_MIN_PACKET_BYTES = 60;
export const OPUS_MAX_PACKET_BYTES = 160;
/** Opus TOC: config 31 (CELT FB 20 ms), stereo, code 0 (one frame). */
export const OPUS_TOC = 0xfc;

/** User-data-unregistered SEI UUID used to carry the marker in H.264 STAP-A packets. */
const SEI_UUID = Buffer.from('5343562d73796e746865746963212121', 'hex'); // "SCV-synthetic!!!"

// ---- codec names ----------------------------------------------------------------------

/** 'vp8', 'VP8', 'video/VP8' → 'vp8'; unknown names are returned lowercased without the type. */
export function codecName(nameOrMime: string): string {
  const s = nameOrMime.toLowerCase();
  const slash = s.indexOf('/');
  return slash === -1 ? s : s.slice(slash + 1);
}

// ---- marker -----------------------------------------------------------------------------

function write7(buf: Buffer, offset: number, value: number, groups: number): void {
  for (let g = 0; g < groups; g++) {
    const shift = 7 * (groups - 1 - g);
    buf[offset + g] = 0x80 | (Math.floor(value / 2 ** shift) & 0x7f);
  }
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

function seedOf(sourceId: number, index: number): number {
  // A small integer hash of (sourceId, index); never 0 (xorshift's fixed point).
  let h = Math.imul(sourceId ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(index + 0x632be5ab, 0xc2b2ae35);
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  return h === 0 ? 0x1234567 : h >>> 0;
}

/** Writes marker + fill (bodyLength bytes in total) at `offset`. */
export function writeBody(buf: Buffer, offset: number, bodyLength: number, sourceId: number, index: number): void {
  if (bodyLength < MARKER_LENGTH) throw new RangeError(`body of ${bodyLength} bytes cannot hold the ${MARKER_LENGTH}-byte marker`);
  if (bodyLength >= 2 ** 21) throw new RangeError('body too large');
  MARKER_MAGIC.copy(buf, offset);
  write7(buf, offset + 4, sourceId >>> 0, 5);
  write7(buf, offset + 9, index >>> 0, 5);
  write7(buf, offset + 14, bodyLength, 3);
  let x = seedOf(sourceId >>> 0, index >>> 0);
  for (let i = offset + MARKER_LENGTH; i < offset + bodyLength; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    const b = x & 0xff;
    buf[i] = b === 0 ? 0x5a : b;
  }
}

export interface PayloadCheck {
  ok: boolean;
  sourceId?: number;
  index?: number;
  /** Why `ok` is false. */
  reason?: string;
}

/** Checks marker and fill in [offset, end). */
export function checkBody(buf: Buffer, offset: number, end: number = buf.length): PayloadCheck {
  if (offset < 0 || end - offset < MARKER_LENGTH) return { ok: false, reason: 'too short for a marker' };
  if (!buf.subarray(offset, offset + 4).equals(MARKER_MAGIC)) return { ok: false, reason: 'no marker magic' };
  const sourceId = read7(buf, offset + 4, 5);
  const index = read7(buf, offset + 9, 5);
  const bodyLength = read7(buf, offset + 14, 3);
  if (sourceId === undefined || index === undefined || bodyLength === undefined || sourceId > 0xffffffff || index > 0xffffffff) {
    return { ok: false, reason: 'corrupt marker fields' };
  }
  if (bodyLength !== end - offset) {
    return { ok: false, sourceId, index, reason: `body length ${end - offset}, marker says ${bodyLength}` };
  }
  let x = seedOf(sourceId, index);
  for (let i = offset + MARKER_LENGTH; i < end; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    const b = x & 0xff;
    if (buf[i] !== (b === 0 ? 0x5a : b)) return { ok: false, sourceId, index, reason: `fill differs at byte ${i}` };
  }
  return { ok: true, sourceId, index };
}

// ---- VP8 (RFC 7741) ---------------------------------------------------------------------

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
  const info: Vp8Info = {
    descriptorLength: i,
    startOfPartition,
    partitionIndex,
    pictureId,
    startOfFrame: startOfPartition && partitionIndex === 0,
    bodyOffset: i,
  };
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

/** 4-byte descriptor: X=1, S as given, PID=0; I=1 with a 15-bit PictureID. */
function vp8Descriptor(start: boolean, pictureId: number): Buffer {
  return Buffer.from([0x80 | (start ? 0x10 : 0), 0x80, 0x80 | ((pictureId >> 8) & 0x7f), pictureId & 0xff]);
}

/** 3-byte frame tag, plus start code and dimensions on a keyframe (RFC 6386 §9.1). */
function vp8FrameHeader(keyframe: boolean, firstPartSize: number, width: number, height: number): Buffer {
  const size = Math.min(firstPartSize, 0x7ffff);
  const tag = (keyframe ? 0 : 1) | (0 << 1) | (1 << 4) | (size << 5); // version 0, show_frame 1
  const h = Buffer.alloc(keyframe ? 10 : 3);
  h[0] = tag & 0xff;
  h[1] = (tag >> 8) & 0xff;
  h[2] = (tag >> 16) & 0xff;
  if (keyframe) {
    h[3] = 0x9d;
    h[4] = 0x01;
    h[5] = 0x2a;
    h.writeUInt16LE(width & 0x3fff, 6); // horizontal scale 0
    h.writeUInt16LE(height & 0x3fff, 8);
  }
  return h;
}

// ---- H.264 (RFC 6184) -------------------------------------------------------------------

class BitWriter {
  private readonly bits: number[] = [];
  u(n: number, v: number): void {
    for (let i = n - 1; i >= 0; i--) this.bits.push((v >> i) & 1);
  }
  ue(v: number): void {
    const x = v + 1;
    const len = Math.floor(Math.log2(x));
    this.u(len, 0);
    this.u(len + 1, x);
  }
  se(v: number): void {
    this.ue(v <= 0 ? -2 * v : 2 * v - 1);
  }
  /** rbsp_trailing_bits, then emulation prevention. */
  finish(): Buffer {
    this.bits.push(1);
    while (this.bits.length % 8 !== 0) this.bits.push(0);
    const raw: number[] = [];
    for (let i = 0; i < this.bits.length; i += 8) {
      let b = 0;
      for (let j = 0; j < 8; j++) b = (b << 1) | this.bits[i + j]!;
      raw.push(b);
    }
    const out: number[] = [];
    let zeros = 0;
    for (const b of raw) {
      if (zeros >= 2 && b <= 3) {
        out.push(3);
        zeros = 0;
      }
      out.push(b);
      zeros = b === 0 ? zeros + 1 : 0;
    }
    return Buffer.from(out);
  }
}

/** A real SPS: Constrained Baseline, level 3.1 (profile-level-id 42e01f), width × height. */
export function buildSps(width: number, height: number): Buffer {
  const w = new BitWriter();
  w.u(8, 66); // profile_idc: Baseline
  w.u(8, 0xe0); // constraint_set0..2 flags
  w.u(8, 31); // level_idc 3.1
  w.ue(0); // seq_parameter_set_id
  w.ue(0); // log2_max_frame_num_minus4
  w.ue(2); // pic_order_cnt_type
  w.ue(1); // max_num_ref_frames
  w.u(1, 0); // gaps_in_frame_num_value_allowed_flag
  const mbW = Math.ceil(width / 16);
  const mbH = Math.ceil(height / 16);
  w.ue(mbW - 1); // pic_width_in_mbs_minus1
  w.ue(mbH - 1); // pic_height_in_map_units_minus1
  w.u(1, 1); // frame_mbs_only_flag
  w.u(1, 1); // direct_8x8_inference_flag
  const cropRight = (mbW * 16 - width) / 2;
  const cropBottom = (mbH * 16 - height) / 2;
  if (cropRight > 0 || cropBottom > 0) {
    w.u(1, 1);
    w.ue(0);
    w.ue(cropRight);
    w.ue(0);
    w.ue(cropBottom);
  } else {
    w.u(1, 0); // frame_cropping_flag
  }
  w.u(1, 0); // vui_parameters_present_flag
  return Buffer.concat([Buffer.from([0x67]), w.finish()]); // NRI 3, type 7
}

export function buildPps(): Buffer {
  const w = new BitWriter();
  w.ue(0); // pic_parameter_set_id
  w.ue(0); // seq_parameter_set_id
  w.u(1, 0); // entropy_coding_mode_flag (CAVLC)
  w.u(1, 0); // bottom_field_pic_order_in_frame_present_flag
  w.ue(0); // num_slice_groups_minus1
  w.ue(0); // num_ref_idx_l0_default_active_minus1
  w.ue(0); // num_ref_idx_l1_default_active_minus1
  w.u(1, 0); // weighted_pred_flag
  w.u(2, 0); // weighted_bipred_idc
  w.se(0); // pic_init_qp_minus26
  w.se(0); // pic_init_qs_minus26
  w.se(0); // chroma_qp_index_offset
  w.u(1, 1); // deblocking_filter_control_present_flag
  w.u(1, 0); // constrained_intra_pred_flag
  w.u(1, 0); // redundant_pic_cnt_present_flag
  return Buffer.concat([Buffer.from([0x68]), w.finish()]); // NRI 3, type 8
}

/** Reads ue(v)/u(n) from an RBSP (emulation prevention bytes removed first). */
export class BitReader {
  private readonly buf: Buffer;
  private pos = 0;
  constructor(nal: Buffer) {
    const out: number[] = [];
    let zeros = 0;
    for (const b of nal) {
      if (zeros >= 2 && b === 3) {
        zeros = 0;
        continue;
      }
      out.push(b);
      zeros = b === 0 ? zeros + 1 : 0;
    }
    this.buf = Buffer.from(out);
  }
  u(n: number): number {
    let v = 0;
    for (let i = 0; i < n; i++) {
      const byte = this.buf[this.pos >> 3];
      if (byte === undefined) throw new RangeError('read past end');
      v = v * 2 + ((byte >> (7 - (this.pos & 7))) & 1);
      this.pos++;
    }
    return v;
  }
  ue(): number {
    let zeros = 0;
    while (this.u(1) === 0) zeros++;
    return 2 ** zeros - 1 + this.u(zeros);
  }
}

/** Parses the fields of an SPS NAL (with its header byte) needed to get the picture size. */
export function parseSps(nal: Buffer): { profileIdc: number; constraints: number; levelIdc: number; width: number; height: number } {
  const r = new BitReader(nal.subarray(1));
  const profileIdc = r.u(8);
  const constraints = r.u(8);
  const levelIdc = r.u(8);
  r.ue(); // sps id
  if ([100, 110, 122, 244, 44, 83, 86, 118, 128].includes(profileIdc)) throw new Error('high profiles not supported by this parser');
  r.ue(); // log2_max_frame_num_minus4
  const pocType = r.ue();
  if (pocType === 0) r.ue();
  else if (pocType === 1) throw new Error('pic_order_cnt_type 1 not supported by this parser');
  r.ue(); // max_num_ref_frames
  r.u(1);
  const mbW = r.ue() + 1;
  const mbH = r.ue() + 1;
  const frameMbsOnly = r.u(1);
  if (!frameMbsOnly) r.u(1);
  r.u(1);
  let [cl, cr, ct, cb] = [0, 0, 0, 0];
  if (r.u(1)) {
    cl = r.ue();
    cr = r.ue();
    ct = r.ue();
    cb = r.ue();
  }
  const heightUnits = frameMbsOnly ? 1 : 2;
  return {
    profileIdc,
    constraints,
    levelIdc,
    width: mbW * 16 - 2 * (cl + cr),
    height: mbH * 16 * heightUnits - 2 * heightUnits * (ct + cb),
  };
}

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
  if (type >= 1 && type <= 23) {
    return { packetization: 'single', nalTypes: [type], keyframe: type === 5 || type === 7, body: [1, p.length] };
  }
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
      if (last.subarray(j, j + 16).equals(SEI_UUID) && j + size + 1 === last.length) {
        info.body = [lastStart + j + 16, lastStart + j + size];
      }
    }
    return info;
  }
  if (type === 28) {
    const h = p[1];
    if (h === undefined) return undefined;
    const inner = h & 0x1f;
    const start = (h & 0x80) !== 0;
    return {
      packetization: 'fu-a',
      nalTypes: [inner],
      start,
      end: (h & 0x40) !== 0,
      keyframe: start && (inner === 5 || inner === 7),
      body: [2, p.length],
    };
  }
  return { packetization: 'other', nalTypes: [type], keyframe: false };
}

function seiNal(sourceId: number, index: number, bodyLength: number): Buffer {
  const payloadSize = 16 + bodyLength;
  const sizeBytes: number[] = [];
  let s = payloadSize;
  while (s >= 255) {
    sizeBytes.push(0xff);
    s -= 255;
  }
  sizeBytes.push(s);
  const head = Buffer.from([0x06, 0x05, ...sizeBytes]);
  const nal = Buffer.alloc(head.length + payloadSize + 1);
  head.copy(nal, 0);
  SEI_UUID.copy(nal, head.length);
  writeBody(nal, head.length + 16, bodyLength, sourceId, index);
  nal[nal.length - 1] = 0x80; // rbsp_trailing_bits
  return nal;
}

// ---- inspection -------------------------------------------------------------------------

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

/** Checks that a payload made by these generators arrived byte for byte. */
export function verifyPayload(codec: string, payload: Buffer): PayloadCheck {
  const range = bodyRange(codec, payload);
  if (range === undefined) return { ok: false, reason: `no ${codecName(codec)} body found` };
  return checkBody(payload, range[0], range[1]);
}

// ---- the source -------------------------------------------------------------------------

export interface SyntheticSourceOptions {
  codec: SyntheticCodec;
  /** Written into every payload; pick a distinct one per source in a test. */
  sourceId: number;
  /** Video frame rate (default 30). Opus is always 50 packets/s. */
  fps?: number;
  /** Average bitrate of the payloads (default: video 400, opus 32). */
  bitrateKbps?: number;
  /** A keyframe every N frames (default fps × 3); 0 = only the first and forced ones. */
  keyframeIntervalFrames?: number;
  /** Largest payload (default 1100 bytes). */
  maxPayloadBytes?: number;
  width?: number;
  height?: number;
  /** Initial RTP sequence number / timestamp (random by default). */
  initialSequenceNumber?: number;
  initialTimestamp?: number;
  /** Header SSRC / payload type (the werift sender overwrites both). */
  ssrc?: number;
  payloadType?: number;
}

export type SendRtp = (packet: RtpPacket) => unknown;

/**
 * A timer-driven RTP source. `nextFrame()` builds the next frame's packets without
 * sending (for unit tests); `start(send)` calls it at the frame rate and hands every
 * packet to `send` (e.g. `p => transceiver.sender.sendRtp(p)`).
 */
export class SyntheticSource {
  readonly codec: SyntheticCodec;
  readonly sourceId: number;
  readonly fps: number;
  readonly bitrateKbps: number;
  readonly keyframeIntervalFrames: number;
  readonly maxPayloadBytes: number;
  readonly width: number;
  readonly height: number;
  readonly clockRate: number;
  readonly ssrc: number;
  readonly payloadType: number;

  packetsSent = 0;
  framesSent = 0;
  keyframesSent = 0;
  bytesSent = 0;
  forcedKeyframes = 0;
  /** Packets generated (sent or not); the next packet's marker index. */
  packetIndex = 0;
  /** Frames generated; the next frame's number. */
  frameIndex = 0;

  private seq: number;
  private readonly ts0: number;
  private pictureId: number;
  private framesSinceKeyframe = 0;
  private keyframeRequested = true;
  private readonly clock: FrameClock;
  private send: SendRtp | undefined;
  private readonly sps: Buffer;
  private readonly pps: Buffer;

  constructor(opts: SyntheticSourceOptions) {
    this.codec = opts.codec;
    this.sourceId = opts.sourceId >>> 0;
    const audio = opts.codec === 'opus';
    this.fps = audio ? 50 : (opts.fps ?? 30);
    if (!(this.fps > 0 && this.fps <= 240)) throw new RangeError(`fps ${this.fps} out of range`);
    this.bitrateKbps = opts.bitrateKbps ?? (audio ? 32 : 400);
    this.keyframeIntervalFrames = opts.keyframeIntervalFrames ?? Math.round(this.fps * 3);
    this.maxPayloadBytes = opts.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD_BYTES;
    if (this.maxPayloadBytes < 100) throw new RangeError('maxPayloadBytes must be at least 100');
    this.width = opts.width ?? 640;
    this.height = opts.height ?? 480;
    this.clockRate = audio ? OPUS_CLOCK_RATE : VIDEO_CLOCK_RATE;
    this.ssrc = (opts.ssrc ?? Math.floor(Math.random() * 0xffffffff)) >>> 0;
    this.payloadType = opts.payloadType ?? (opts.codec === 'vp8' ? 96 : opts.codec === 'h264' ? 97 : 111);
    this.seq = (opts.initialSequenceNumber ?? Math.floor(Math.random() * 0x10000)) & 0xffff;
    this.ts0 = (opts.initialTimestamp ?? Math.floor(Math.random() * 0x100000000)) >>> 0;
    this.pictureId = Math.floor(Math.random() * 0x8000);
    this.sps = buildSps(this.width, this.height);
    this.pps = buildPps();
    this.clock = new FrameClock(this.fps, {
      emitFrame: () => this.sendFrame(),
      skipFrames: (n) => {
        this.frameIndex += n;
      },
    });
  }

  get running(): boolean {
    return this.clock.running;
  }

  /** RTP timestamp of frame `n`. */
  timestampOf(frame: number): number {
    const step = this.codec === 'opus' ? OPUS_TIMESTAMP_STEP * frame : Math.round((frame * VIDEO_CLOCK_RATE) / this.fps);
    return (this.ts0 + step) % 0x100000000;
  }

  /** The next frame becomes a keyframe (call it when a PLI arrives). No-op for audio. */
  forceKeyframe(): void {
    if (this.codec === 'opus') return;
    if (!this.keyframeRequested) this.forcedKeyframes++;
    this.keyframeRequested = true;
  }

  /** Starts the clock; packets go to `send`. Idempotent while running (the new `send` wins). */
  start(send: SendRtp): void {
    this.send = send;
    this.clock.start();
  }

  stop(): void {
    this.clock.stop();
    this.send = undefined;
  }

  private sendFrame(): void {
    const send = this.send;
    if (send === undefined) return;
    for (const packet of this.nextFrame()) {
      this.packetsSent++;
      this.bytesSent += packet.payload.length;
      try {
        const r = send(packet);
        if (r instanceof Promise) r.catch(() => {});
      } catch {
        // a closed sender throws; the owner stops us
      }
    }
    this.framesSent++;
  }

  /** Builds the next frame's packets (advances sequence numbers, frame and packet counters). */
  nextFrame(): RtpPacket[] {
    const frame = this.frameIndex++;
    const timestamp = this.timestampOf(frame);
    let payloads: Buffer[];
    if (this.codec === 'opus') {
      payloads = [this.opusPayload(frame)];
    } else {
      const keyframe =
        this.keyframeRequested || (this.keyframeIntervalFrames > 0 && this.framesSinceKeyframe >= this.keyframeIntervalFrames);
      this.keyframeRequested = false;
      this.framesSinceKeyframe = keyframe ? 1 : this.framesSinceKeyframe + 1;
      if (keyframe) this.keyframesSent++;
      const size = this.frameBytes(frame, keyframe);
      payloads = this.codec === 'vp8' ? this.vp8Frame(keyframe, size) : this.h264Frame(keyframe, size);
      this.pictureId = (this.pictureId + 1) & 0x7fff;
    }
    return payloads.map((payload, i) => {
      const header = new RtpHeader({
        payloadType: this.payloadType,
        sequenceNumber: this.seq,
        timestamp,
        ssrc: this.ssrc,
        marker: i === payloads.length - 1,
      });
      this.seq = (this.seq + 1) & 0xffff;
      return new RtpPacket(header, payload);
    });
  }

  /** Frame size: keyframes are 4× a delta frame, the average matches the bitrate; ±10 % wobble. */
  private frameBytes(frame: number, keyframe: boolean): number {
    const avg = (this.bitrateKbps * 125) / this.fps;
    const n = this.keyframeIntervalFrames > 0 ? this.keyframeIntervalFrames : 1000;
    const delta = (avg * n) / (n + 3);
    const wobble = 0.9 + ((seedOf(this.sourceId, frame) % 1000) / 1000) * 0.2;
    return Math.max(MARKER_LENGTH + 16, Math.round((keyframe ? 4 * delta : delta) * wobble));
  }

  private splitSizes(total: number, perPacketOverhead: number, minPackets = 1): number[] {
    const room = this.maxPayloadBytes - perPacketOverhead;
    const n = Math.max(minPackets, Math.ceil(total / room));
    const base = Math.floor(total / n);
    return Array.from({ length: n }, (_, i) => Math.max(MARKER_LENGTH, base + (i < total - base * n ? 1 : 0)));
  }

  private vp8Frame(keyframe: boolean, size: number): Buffer[] {
    const frameHeaderLen = keyframe ? 10 : 3;
    const bodies = this.splitSizes(size, 4 + frameHeaderLen);
    const firstPartSize = bodies.reduce((a, b) => a + b, 0);
    return bodies.map((bodyLen, i) => {
      const head = i === 0 ? Buffer.concat([vp8Descriptor(true, this.pictureId), vp8FrameHeader(keyframe, firstPartSize, this.width, this.height)]) : vp8Descriptor(false, this.pictureId);
      const p = Buffer.alloc(head.length + bodyLen);
      head.copy(p, 0);
      writeBody(p, head.length, bodyLen, this.sourceId, this.packetIndex++);
      return p;
    });
  }

  private h264Frame(keyframe: boolean, size: number): Buffer[] {
    const out: Buffer[] = [];
    const nalHeader = keyframe ? 0x65 : 0x41; // IDR (NRI 3, type 5) / non-IDR slice (NRI 2, type 1)
    if (keyframe) {
      const sei = seiNal(this.sourceId, this.packetIndex++, MARKER_LENGTH + 16);
      const units = [this.sps, this.pps, sei];
      const stap = Buffer.alloc(1 + units.reduce((a, u) => a + 2 + u.length, 0));
      stap[0] = 0x78; // F 0, NRI 3, type 24
      let o = 1;
      for (const u of units) {
        stap.writeUInt16BE(u.length, o);
        u.copy(stap, o + 2);
        o += 2 + u.length;
      }
      out.push(stap);
    }
    if (!keyframe && size + 1 <= this.maxPayloadBytes) {
      const p = Buffer.alloc(1 + size);
      p[0] = nalHeader;
      writeBody(p, 1, size, this.sourceId, this.packetIndex++);
      out.push(p);
      return out;
    }
    // FU-A; an IDR always takes at least two fragments (S and E must not both be set).
    const bodies = this.splitSizes(size, 2, keyframe ? 2 : 1);
    bodies.forEach((bodyLen, i) => {
      const p = Buffer.alloc(2 + bodyLen);
      p[0] = (nalHeader & 0xe0) | 28;
      p[1] = (i === 0 ? 0x80 : 0) | (i === bodies.length - 1 ? 0x40 : 0) | (nalHeader & 0x1f);
      writeBody(p, 2, bodyLen, this.sourceId, this.packetIndex++);
      out.push(p);
    });
    return out;
  }

  private opusPayload(frame: number): Buffer {
    const target = (this.bitrateKbps * 125) / 50;
    const wobble = ((seedOf(this.sourceId, frame) % 41) - 20) / 100; // ±20 %
    const size = Math.min(OPUS_MAX_PACKET_BYTES, Math.max(OPUS_MIN_PACKET_BYTES, Math.round(target * (1 + wobble))));
    const p = Buffer.alloc(size);
    p[0] = OPUS_TOC;
    writeBody(p, 1, size - 1, this.sourceId, this.packetIndex++);
    return p;
  }
}
