/**
 * Synthetic media for the load tool: well-formed RTP payloads, sized to a bitrate, built
 * without encoding anything.
 *
 * VP8 (RFC 7741): every packet starts with a 4-byte payload descriptor (X=1, I=1, 15-bit
 * PictureID, PID 0, S=1 on the first packet of a frame); the first packet of a frame
 * carries a VP8 frame tag (RFC 6386 §9.1; on keyframes with the start code and 640×480),
 * the last one has the RTP marker bit. Right after those header bytes each video packet
 * carries its send time: 8 bytes, a big-endian float64 of `performance.timeOrigin +
 * performance.now()` in milliseconds (`sendTimeOf` reads it back). The rest is filler.
 * Keyframes come every 2 s and whenever `forceKeyframe()` is called (on PLI).
 *
 * Opus: one 20 ms packet every 20 ms (TOC 0xfc: CELT fullband 20 ms, stereo, one frame),
 * sized to 32 kbps.
 *
 * Lean by design: packet buffers come from a per-source ring (werift's sender keeps the
 * last 128 payloads for NACK, the ring has 256), and one RtpPacket object per source is
 * reused: werift's `sendRtp` clones the packet synchronously, before its first await.
 */
import { RtpHeader, RtpPacket } from 'werift';
import { FrameClock } from './frame-clock.ts';

/** Wall clock in ms with sub-millisecond resolution (the same clock on every process of a host). */
export function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

export const SEND_TIME_BYTES = 8;
export const VIDEO_CLOCK_RATE = 90_000;
export const OPUS_CLOCK_RATE = 48_000;
export const OPUS_PACKETS_PER_SECOND = 50;
export const OPUS_BITRATE_KBPS = 32;
/** Largest RTP payload we send (leaves room for RTP header, extensions and SRTP tag in 1280). */
export const MAX_PAYLOAD_BYTES = 1160;
export const KEYFRAME_INTERVAL_S = 2;

const VP8_DESCRIPTOR_BYTES = 4;
const RING_SLOTS = 256;
const VIDEO_WIDTH = 640;
const VIDEO_HEIGHT = 480;
const OPUS_TOC = 0xfc;

export type SendPacket = (packet: RtpPacket) => void;

/**
 * Where the send time sits in a VP8 payload made here (or any VP8 payload with the same
 * layout): after the descriptor and, on the first packet of a frame, after the frame tag.
 * Returns the time in ms, or NaN if the payload is too short.
 */
export function sendTimeOf(p: Buffer): number {
  const len = p.length;
  if (len < 1) return Number.NaN;
  const b0 = p[0]!;
  let i = 1;
  if ((b0 & 0x80) !== 0) {
    if (len < 3) return Number.NaN;
    const x = p[1]!;
    i = 2;
    if ((x & 0x80) !== 0) i += (p[2]! & 0x80) !== 0 ? 2 : 1; // PictureID, 7 or 15 bits
    if ((x & 0x40) !== 0) i += 1; // TL0PICIDX
    if ((x & 0x30) !== 0) i += 1; // TID / KEYIDX
  }
  if ((b0 & 0x10) !== 0 && (b0 & 0x07) === 0) {
    // Start of a frame: the 3-byte frame tag, 10 bytes with start code and size on keyframes.
    if (i >= len) return Number.NaN;
    i += (p[i]! & 0x01) === 0 ? 10 : 3;
  }
  if (i + SEND_TIME_BYTES > len) return Number.NaN;
  return p.readDoubleBE(i);
}

/** Fixed-size buffers handed out round-robin (one allocation per source). */
class PacketRing {
  private readonly slab: Buffer;
  private readonly slotBytes: number;
  private next = 0;
  constructor(slotBytes: number) {
    this.slotBytes = slotBytes;
    this.slab = Buffer.alloc(slotBytes * RING_SLOTS);
  }
  take(length: number): Buffer {
    const start = this.next * this.slotBytes;
    this.next = (this.next + 1) % RING_SLOTS;
    return this.slab.subarray(start, start + length);
  }
}

/** A frame-rate timer that emits the frames due since start (at most 3 per tick; skips ahead after a stall). */
abstract class TimedSource {
  readonly fps: number;
  packetsSent = 0;
  bytesSent = 0;
  framesSent = 0;
  protected send: SendPacket | undefined;
  protected seq = Math.floor(Math.random() * 0x10000);
  protected readonly ts0 = Math.floor(Math.random() * 0x100000000);
  protected readonly packet: RtpPacket;
  private readonly clock: FrameClock;
  /** Frames emitted (or skipped) since the source was made: the RTP timestamp clock. */
  protected frame = 0;

  constructor(fps: number, payloadType: number) {
    this.fps = fps;
    this.packet = new RtpPacket(new RtpHeader({ payloadType, ssrc: Math.floor(Math.random() * 0xffffffff) }), Buffer.alloc(0));
    this.clock = new FrameClock(fps, {
      emitFrame: () => {
        if (this.send === undefined) return;
        this.emitFrame(this.send);
        this.frame++;
        this.framesSent++;
      },
      skipFrames: (n) => {
        this.frame += n;
      },
    });
  }

  get running(): boolean {
    return this.clock.running;
  }

  start(send: SendPacket): void {
    this.send = send;
    this.clock.start();
  }

  stop(): void {
    this.clock.stop();
    this.send = undefined;
  }

  /** Sends one packet: `payload` must be filled in already. */
  protected emit(send: SendPacket, payload: Buffer, timestamp: number, marker: boolean): void {
    const p = this.packet;
    const h = p.header;
    h.sequenceNumber = this.seq;
    h.timestamp = timestamp;
    h.marker = marker;
    p.payload = payload;
    this.seq = (this.seq + 1) & 0xffff;
    this.packetsSent++;
    this.bytesSent += payload.length;
    send(p);
  }

  protected abstract emitFrame(send: SendPacket): void;
}

export interface Vp8SourceOptions {
  bitrateKbps: number;
  fps: number;
  /** Frames between periodic keyframes (default fps × 2). */
  keyframeInterval?: number;
}

export class Vp8Source extends TimedSource {
  readonly keyframeInterval: number;
  keyframesSent = 0;
  private readonly deltaBytes: number;
  private readonly keyBytes: number;
  private readonly ring = new PacketRing(MAX_PAYLOAD_BYTES);
  private pictureId = Math.floor(Math.random() * 0x8000);
  private sinceKeyframe = 0;
  private keyframeRequested = true;

  constructor(opts: Vp8SourceOptions) {
    super(opts.fps, 96);
    this.keyframeInterval = Math.max(1, opts.keyframeInterval ?? Math.round(opts.fps * KEYFRAME_INTERVAL_S));
    // Keyframes are 4× a delta frame; the average over an interval matches the bitrate.
    const avg = (opts.bitrateKbps * 125) / opts.fps;
    const n = this.keyframeInterval;
    const minBytes = VP8_DESCRIPTOR_BYTES + 10 + SEND_TIME_BYTES;
    this.deltaBytes = Math.max(minBytes, Math.round((avg * n) / (n + 3)));
    this.keyBytes = Math.max(minBytes, 4 * this.deltaBytes);
  }

  /** The next frame is a keyframe (call on PLI / FIR). */
  forceKeyframe(): void {
    this.keyframeRequested = true;
  }

  protected emitFrame(send: SendPacket): void {
    const keyframe = this.keyframeRequested || this.sinceKeyframe >= this.keyframeInterval;
    this.keyframeRequested = false;
    this.sinceKeyframe = keyframe ? 1 : this.sinceKeyframe + 1;
    if (keyframe) this.keyframesSent++;
    const total = keyframe ? this.keyBytes : this.deltaBytes;
    const count = Math.ceil(total / MAX_PAYLOAD_BYTES);
    const base = Math.floor(total / count);
    const extra = total - base * count;
    const timestamp = (this.ts0 + Math.round((this.frame * VIDEO_CLOCK_RATE) / this.fps)) >>> 0;
    const pid = this.pictureId;
    this.pictureId = (pid + 1) & 0x7fff;
    const sentAt = wallClockMs();
    for (let i = 0; i < count; i++) {
      const payload = this.ring.take(base + (i < extra ? 1 : 0));
      const first = i === 0;
      payload[0] = first ? 0x90 : 0x80; // X=1, S on the first packet, PID 0
      payload[1] = 0x80; // I=1
      payload[2] = 0x80 | (pid >> 8); // M=1: 15-bit PictureID
      payload[3] = pid & 0xff;
      let o = VP8_DESCRIPTOR_BYTES;
      if (first) o = writeFrameTag(payload, o, keyframe, total - o);
      payload.writeDoubleBE(sentAt, o);
      this.emit(send, payload, timestamp, i === count - 1);
    }
  }
}

/** RFC 6386 §9.1: frame tag (key/inter, version 0, show_frame, first partition size), plus start code and size on a keyframe. */
function writeFrameTag(p: Buffer, o: number, keyframe: boolean, frameBytes: number): number {
  const headerBytes = keyframe ? 10 : 3;
  const partition = Math.min(0x7ffff, Math.max(0, frameBytes - headerBytes));
  const tag = (keyframe ? 0 : 1) | (1 << 4) | (partition << 5);
  p[o] = tag & 0xff;
  p[o + 1] = (tag >> 8) & 0xff;
  p[o + 2] = (tag >> 16) & 0xff;
  if (!keyframe) return o + 3;
  p[o + 3] = 0x9d;
  p[o + 4] = 0x01;
  p[o + 5] = 0x2a;
  p.writeUInt16LE(VIDEO_WIDTH, o + 6); // horizontal scale 0
  p.writeUInt16LE(VIDEO_HEIGHT, o + 8);
  return o + 10;
}

export class OpusSource extends TimedSource {
  private readonly ring = new PacketRing(256);
  private readonly bytes: number;

  constructor() {
    super(OPUS_PACKETS_PER_SECOND, 111);
    this.bytes = Math.round((OPUS_BITRATE_KBPS * 125) / OPUS_PACKETS_PER_SECOND);
  }

  protected emitFrame(send: SendPacket): void {
    const payload = this.ring.take(this.bytes);
    payload[0] = OPUS_TOC;
    this.emit(send, payload, (this.ts0 + this.frame * (OPUS_CLOCK_RATE / OPUS_PACKETS_PER_SECOND)) >>> 0, false);
  }
}
