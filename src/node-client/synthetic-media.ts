/**
 * SyntheticSource: timer-driven, well-formed RTP for VP8, H.264 (packetization-mode=1)
 * and Opus, sized to a bitrate, built without encoding anything. The codec headers are
 * real (an SFU's keyframe detection and frame boundaries work on them); behind them each
 * payload carries the marker of payload-marker.ts (source, packet index, send time,
 * verifiable fill), which payload-format.ts reads back. The tests and the load tool both
 * publish with it.
 *
 * VP8 (RFC 7741): a 4-byte payload descriptor (X=1, I=1, 15-bit PictureID, S=1 on the
 * first packet of a frame); the first packet carries the RFC 6386 frame tag (on keyframes
 * with the start code and the picture size); the last has the RTP marker bit.
 * H.264: keyframes are a STAP-A (SPS, PPS and an SEI holding the marker) then FU-A
 * fragments of an IDR slice; delta frames one NAL unit, or FU-A when larger than a packet.
 * Opus: one 20 ms packet every 20 ms (TOC 0xfc: CELT fullband 20 ms, stereo, one frame).
 * Keyframes are 4× a delta frame, the average matches the bitrate, frames wobble ±10 %.
 *
 * Light by design (the load tool runs hundreds): payloads live in a per-source ring, one
 * RtpPacket is reused for every packet (werift's `sendRtp` clones it synchronously, so
 * the PeerConnection must keep `pendingRtp: false`), the marker is a few byte writes and
 * the fill one native copy. `nextFrame()` returns copies, for unit tests.
 */
import { RtpHeader, RtpPacket } from 'werift';
import { FrameClock } from './frame-clock.ts';
import { buildPps, buildSps } from './h264-parameter-sets.ts';
import { SEI_UUID } from './payload-format.ts';
import { MARKER_LENGTH, MAX_FILL_BYTES, markerPrefix, mix, wallClockMs, writeBody } from './payload-marker.ts';
import { PacketRing } from './packet-ring.ts';

export type SyntheticCodec = 'vp8' | 'h264' | 'opus';

export const VIDEO_CLOCK_RATE = 90_000;
export const OPUS_CLOCK_RATE = 48_000;
/** Opus: 20 ms per packet at 48 kHz. */
export const OPUS_TIMESTAMP_STEP = 960;
export const OPUS_PACKETS_PER_SECOND = 50;
export const OPUS_MIN_PACKET_BYTES = 60;
export const OPUS_MAX_PACKET_BYTES = 160;
/** Opus TOC: config 31 (CELT FB 20 ms), stereo, code 0 (one frame). */
export const OPUS_TOC = 0xfc;
/** Default largest RTP payload (leaves room for RTP header, extensions and SRTP tag in 1280 bytes). */
export const DEFAULT_MAX_PAYLOAD_BYTES = 1160;
/** Default keyframe interval. */
export const KEYFRAME_INTERVAL_S = 2;

const VP8_DESCRIPTOR_BYTES = 4;
const SEI_BODY_BYTES = MARKER_LENGTH + 16;
const noop = () => {};

export interface SyntheticSourceOptions {
  codec: SyntheticCodec;
  /** Written into every payload; pick a distinct one per source in a test (default: random). */
  sourceId?: number;
  /** Video frame rate (default 30). Opus is always 50 packets/s. */
  fps?: number;
  /** Average bitrate of the payloads (default: video 400, opus 32). */
  bitrateKbps?: number;
  /** A keyframe every N frames (default 2 s worth); 0 = only the first and forced ones. */
  keyframeIntervalFrames?: number;
  /** Largest payload (default 1160 bytes). */
  maxPayloadBytes?: number;
  width?: number;
  height?: number;
  /** Initial RTP sequence number / timestamp (random by default). */
  initialSequenceNumber?: number;
  initialTimestamp?: number;
  /** Header SSRC / payload type (a werift sender overwrites both). */
  ssrc?: number;
  payloadType?: number;
}

/** Where packets go; a returned promise's rejection is ignored (a closing sender rejects). */
export type SendRtp = (packet: RtpPacket) => unknown;

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

  packetsSent = 0;
  bytesSent = 0;
  framesSent = 0;
  keyframesSent = 0;
  forcedKeyframes = 0;
  /** Packets generated (sent or not); the next packet's marker index. */
  packetIndex = 0;
  /** Frames generated; the next frame's number. */
  frameIndex = 0;

  private seq: number;
  private readonly ts0: number;
  private pictureId = Math.floor(Math.random() * 0x8000);
  private framesSinceKeyframe = 0;
  private keyframeRequested = true;
  private readonly clock: FrameClock;
  private send: SendRtp | undefined;
  private readonly packet: RtpPacket;
  private readonly ring: PacketRing;
  private readonly prefix: Buffer;
  /** Delta frame bytes before the wobble (keyframes are 4×). */
  private readonly deltaBytes: number;
  private readonly sps: Buffer | undefined;
  private readonly pps: Buffer | undefined;
  /** Where emitted packets go: the sender while running, a collector in nextFrame(). */
  private sink: (packet: RtpPacket) => void;

  constructor(opts: SyntheticSourceOptions) {
    this.codec = opts.codec;
    this.sourceId = (opts.sourceId ?? Math.floor(Math.random() * 0x100000000)) >>> 0;
    const audio = opts.codec === 'opus';
    this.fps = audio ? OPUS_PACKETS_PER_SECOND : (opts.fps ?? 30);
    if (!(this.fps > 0 && this.fps <= 240)) throw new RangeError(`fps ${this.fps} out of range`);
    this.bitrateKbps = opts.bitrateKbps ?? (audio ? 32 : 400);
    this.keyframeIntervalFrames = opts.keyframeIntervalFrames ?? Math.round(this.fps * KEYFRAME_INTERVAL_S);
    this.maxPayloadBytes = opts.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD_BYTES;
    if (!(this.maxPayloadBytes >= 100 && this.maxPayloadBytes <= MAX_FILL_BYTES)) throw new RangeError(`maxPayloadBytes must be 100-${MAX_FILL_BYTES}`);
    this.width = opts.width ?? 640;
    this.height = opts.height ?? 480;
    this.clockRate = audio ? OPUS_CLOCK_RATE : VIDEO_CLOCK_RATE;
    this.seq = (opts.initialSequenceNumber ?? Math.floor(Math.random() * 0x10000)) & 0xffff;
    this.ts0 = (opts.initialTimestamp ?? Math.floor(Math.random() * 0x100000000)) >>> 0;
    const payloadType = opts.payloadType ?? (opts.codec === 'vp8' ? 96 : opts.codec === 'h264' ? 97 : 111);
    const ssrc = (opts.ssrc ?? Math.floor(Math.random() * 0xffffffff)) >>> 0;
    this.packet = new RtpPacket(new RtpHeader({ payloadType, ssrc }), Buffer.alloc(0));
    this.ring = new PacketRing(this.maxPayloadBytes);
    this.prefix = markerPrefix(this.sourceId);
    const n = this.keyframeIntervalFrames > 0 ? this.keyframeIntervalFrames : 1000;
    this.deltaBytes = (((this.bitrateKbps * 125) / this.fps) * n) / (n + 3);
    if (opts.codec === 'h264') {
      this.sps = buildSps(this.width, this.height);
      this.pps = buildPps();
    }
    this.sink = (p) => this.deliver(p);
    this.clock = new FrameClock(this.fps, {
      emitFrame: () => {
        if (this.send === undefined) return;
        this.buildFrame();
        this.framesSent++;
      },
      skipFrames: (count) => {
        this.frameIndex += count;
      },
    });
  }

  get ssrc(): number {
    return this.packet.header.ssrc;
  }

  get payloadType(): number {
    return this.packet.header.payloadType;
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

  /** Starts the clock (the first frame at once); packets go to `send`. While running, the new `send` wins. */
  start(send: SendRtp): void {
    this.send = send;
    this.clock.start();
  }

  stop(): void {
    this.clock.stop();
    this.send = undefined;
  }

  /** Builds the next frame without sending it: copies of its packets (advances sequence, frame and packet counters). */
  nextFrame(): RtpPacket[] {
    const out: RtpPacket[] = [];
    const sink = this.sink;
    this.sink = (p) => out.push(new RtpPacket(new RtpHeader({ ...p.header, extensions: [] }), Buffer.from(p.payload)));
    try {
      this.buildFrame();
    } finally {
      this.sink = sink;
    }
    return out;
  }

  private deliver(p: RtpPacket): void {
    const send = this.send;
    if (send === undefined) return;
    this.packetsSent++;
    this.bytesSent += p.payload.length;
    try {
      const r = send(p);
      if (r instanceof Promise) r.catch(noop);
    } catch {
      // a closed sender throws; its owner stops us
    }
  }

  private emit(payload: Buffer, timestamp: number, marker: boolean): void {
    const h = this.packet.header;
    h.sequenceNumber = this.seq;
    h.timestamp = timestamp;
    h.marker = marker;
    this.packet.payload = payload;
    this.seq = (this.seq + 1) & 0xffff;
    this.sink(this.packet);
  }

  private buildFrame(): void {
    const frame = this.frameIndex++;
    const timestamp = this.timestampOf(frame);
    const sentAt = wallClockMs();
    if (this.codec === 'opus') {
      this.opusFrame(frame, timestamp, sentAt);
      return;
    }
    const keyframe = this.keyframeRequested || (this.keyframeIntervalFrames > 0 && this.framesSinceKeyframe >= this.keyframeIntervalFrames);
    this.keyframeRequested = false;
    this.framesSinceKeyframe = keyframe ? 1 : this.framesSinceKeyframe + 1;
    if (keyframe) this.keyframesSent++;
    const wobble = 0.9 + ((mix(this.sourceId, frame) % 1000) / 1000) * 0.2;
    const bytes = Math.round((keyframe ? 4 : 1) * this.deltaBytes * wobble);
    if (this.codec === 'vp8') this.vp8Frame(keyframe, bytes, timestamp, sentAt);
    else this.h264Frame(keyframe, bytes, timestamp, sentAt);
    this.pictureId = (this.pictureId + 1) & 0x7fff;
  }

  private body(p: Buffer, offset: number, sentAt: number): void {
    writeBody(p, offset, p.length - offset, this.prefix, this.sourceId, this.packetIndex++, sentAt);
  }

  /** `total` payload bytes in packets of at most maxPayloadBytes, each with `overhead` header bytes and room for a marker. */
  private split(total: number, overhead: number, minPackets: number): { count: number; base: number; extra: number } {
    const count = Math.max(minPackets, Math.ceil(total / this.maxPayloadBytes));
    const sized = Math.max(total, count * (overhead + MARKER_LENGTH));
    const base = Math.floor(sized / count);
    return { count, base, extra: sized - base * count };
  }

  private vp8Frame(keyframe: boolean, bytes: number, timestamp: number, sentAt: number): void {
    const tagBytes = keyframe ? 10 : 3;
    const { count, base, extra } = this.split(bytes, VP8_DESCRIPTOR_BYTES + tagBytes, 1);
    const pid = this.pictureId;
    for (let i = 0; i < count; i++) {
      const p = this.ring.take(base + (i < extra ? 1 : 0));
      const first = i === 0;
      p[0] = first ? 0x90 : 0x80; // X=1, S on the first packet, PID 0
      p[1] = 0x80; // I=1
      p[2] = 0x80 | (pid >> 8); // M=1: 15-bit PictureID
      p[3] = pid & 0xff;
      let o = VP8_DESCRIPTOR_BYTES;
      if (first) o = this.vp8FrameTag(p, o, keyframe, bytes - count * VP8_DESCRIPTOR_BYTES - tagBytes);
      this.body(p, o, sentAt);
      this.emit(p, timestamp, i === count - 1);
    }
  }

  /** RFC 6386 §9.1: frame tag (key/inter, version 0, show_frame, first partition size), plus start code and size on a keyframe. */
  private vp8FrameTag(p: Buffer, o: number, keyframe: boolean, partitionBytes: number): number {
    const partition = Math.min(0x7ffff, Math.max(0, partitionBytes));
    const tag = (keyframe ? 0 : 1) | (1 << 4) | (partition << 5);
    p[o] = tag & 0xff;
    p[o + 1] = (tag >> 8) & 0xff;
    p[o + 2] = (tag >> 16) & 0xff;
    if (!keyframe) return o + 3;
    p[o + 3] = 0x9d;
    p[o + 4] = 0x01;
    p[o + 5] = 0x2a;
    p.writeUInt16LE(this.width & 0x3fff, o + 6); // horizontal scale 0
    p.writeUInt16LE(this.height & 0x3fff, o + 8);
    return o + 10;
  }

  private h264Frame(keyframe: boolean, bytes: number, timestamp: number, sentAt: number): void {
    const nalHeader = keyframe ? 0x65 : 0x41; // IDR (NRI 3, type 5) / non-IDR slice (NRI 2, type 1)
    if (keyframe) this.emit(this.stapA(sentAt), timestamp, false);
    if (!keyframe && bytes + 1 <= this.maxPayloadBytes) {
      const p = this.ring.take(1 + Math.max(bytes, MARKER_LENGTH));
      p[0] = nalHeader;
      this.body(p, 1, sentAt);
      this.emit(p, timestamp, true);
      return;
    }
    // FU-A; an IDR always takes at least two fragments (S and E must not both be set).
    const { count, base, extra } = this.split(bytes, 2, keyframe ? 2 : 1);
    for (let i = 0; i < count; i++) {
      const p = this.ring.take(base + (i < extra ? 1 : 0));
      p[0] = (nalHeader & 0xe0) | 28;
      p[1] = (i === 0 ? 0x80 : 0) | (i === count - 1 ? 0x40 : 0) | (nalHeader & 0x1f);
      this.body(p, 2, sentAt);
      this.emit(p, timestamp, i === count - 1);
    }
  }

  /** SPS, PPS and a user-data-unregistered SEI (0x06, type 5, size, UUID, marker, 0x80) in one STAP-A. */
  private stapA(sentAt: number): Buffer {
    const sps = this.sps!;
    const pps = this.pps!;
    const seiBytes = 3 + SEI_UUID.length + SEI_BODY_BYTES + 1;
    const p = this.ring.take(1 + 2 + sps.length + 2 + pps.length + 2 + seiBytes);
    p[0] = 0x78; // F 0, NRI 3, type 24
    let o = 1;
    for (const unit of [sps, pps]) {
      p.writeUInt16BE(unit.length, o);
      unit.copy(p, o + 2);
      o += 2 + unit.length;
    }
    p.writeUInt16BE(seiBytes, o);
    o += 2;
    p[o++] = 0x06;
    p[o++] = 0x05;
    p[o++] = SEI_UUID.length + SEI_BODY_BYTES;
    SEI_UUID.copy(p, o);
    o += SEI_UUID.length;
    writeBody(p, o, SEI_BODY_BYTES, this.prefix, this.sourceId, this.packetIndex++, sentAt);
    p[o + SEI_BODY_BYTES] = 0x80; // rbsp_trailing_bits
    return p;
  }

  private opusFrame(frame: number, timestamp: number, sentAt: number): void {
    const target = (this.bitrateKbps * 125) / OPUS_PACKETS_PER_SECOND;
    const wobble = ((mix(this.sourceId, frame) % 41) - 20) / 100; // ±20 %
    const size = Math.min(OPUS_MAX_PACKET_BYTES, Math.max(OPUS_MIN_PACKET_BYTES, Math.round(target * (1 + wobble))));
    const p = this.ring.take(size);
    p[0] = OPUS_TOC;
    this.body(p, 1, sentAt);
    // Each packet is a whole frame: the marker bit, as on the last packet of a video frame.
    this.emit(p, timestamp, true);
  }
}
