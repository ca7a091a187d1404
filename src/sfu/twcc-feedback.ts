/**
 * Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-
 * extensions-01), one generator per PeerConnection transport: every packet the remote
 * sends carries a transport-wide sequence number, and we report when each arrived (or that
 * it did not). Chromium's send-side bandwidth estimator lives on this; werift's own
 * generator is malformed about half the time, reports losses as arrivals and never runs
 * its timer, so the SFU installs this class in its place.
 *
 * Packet layout: RTCP header (V=2, FMT=15, PT=205), sender SSRC, media SSRC, base sequence
 * number (16), packet status count (16), reference time (24, signed, 64 ms units), feedback
 * packet count (8), status chunks (16 each), receive deltas (8 or 16 bits, 250 µs units).
 * Padding to 32 bits follows RFC 3550 and libwebrtc's own encoder: the P bit is set and
 * the last padding byte holds the padding count, so any RTCP parser strips it cleanly.
 */

import { SeqUnwrapper } from '../common/seq-unwrapper.ts';

const DELTA_UNIT_US = 250;
const REFERENCE_UNIT_US = 64_000;
const HEADER_BYTES = 20;
/** Keeps feedback (plus SRTCP, UDP and IP overhead) inside one unfragmented datagram. */
const DEFAULT_MAX_PACKET_BYTES = 1200;
/** Flush without waiting for the timer beyond this many pending arrivals. */
const EARLY_FLUSH_AFTER = 100;
/**
 * Span of sequence numbers kept pending (a power of two: it is also the ring size). A jump
 * further ahead drops the oldest, so memory stays fixed however long nothing is reported.
 */
const WINDOW = 4096;
const MASK = WINDOW - 1;

/** Packet status symbols; for received packets the value is also the delta's byte size. */
const NOT_RECEIVED = 0;
const SMALL_DELTA = 1;
const LARGE_DELTA = 2;

export interface TwccFeedbackOptions {
  senderSsrc: number;
  send: (packet: Buffer) => void;
  /** Feedback period; 50 ms unless given. */
  intervalMs?: number;
  /** Monotonic clock in microseconds. */
  now?: () => number;
  /** Upper bound on one feedback packet's size; 1200 unless given. */
  maxPacketBytes?: number;
}

const hrtimeUs = () => Number(process.hrtime.bigint() / 1000n);

export class TwccFeedback {
  /**
   * werift's receiver clears this flag on its own TWCC object when it stops. One instance
   * serves every receiver of the transport, so it is deliberately not consulted.
   */
  twccRunning = true;
  private readonly senderSsrc: number;
  private readonly sendPacket: (packet: Buffer) => void;
  private readonly now: () => number;
  private readonly maxPacketBytes: number;
  private readonly timer: NodeJS.Timeout;
  private closed = false;
  private mediaSsrc = 0;
  /** Arrival time (µs) by unwrapped sequence number modulo WINDOW; NaN where none pends. */
  private readonly arrivals = new Float64Array(WINDOW).fill(NaN);
  private readonly unwrapper = new SeqUnwrapper();
  /** First unwrapped sequence number not yet reported. */
  private start = 0;
  /** Highest unwrapped sequence number received (-1 before any); below `start` when nothing pends. */
  private highest = -1;
  private pending = 0;
  private fbCount = 0;
  // Scratch space for building one packet, reused so a flush allocates only its Buffer.
  private readonly statuses = new Uint8Array(WINDOW);
  private readonly deltas = new Int16Array(WINDOW);
  private readonly chunks = new ChunkEncoder();

  constructor(opts: TwccFeedbackOptions) {
    this.senderSsrc = opts.senderSsrc >>> 0;
    this.sendPacket = opts.send;
    this.now = opts.now ?? hrtimeUs;
    this.maxPacketBytes = opts.maxPacketBytes ?? DEFAULT_MAX_PACKET_BYTES;
    this.timer = setInterval(() => this.flush(), opts.intervalMs ?? 50);
    this.timer.unref();
  }

  /** The media source SSRC written into feedback from now on. */
  setMediaSsrc(ssrc: number): void {
    this.mediaSsrc = ssrc >>> 0;
  }

  /** Records one arrival at now(). werift's receiver calls this for every RTP packet. */
  handleTWCC(transportSequenceNumber: number): void {
    if (this.closed) return;
    const at = this.now();
    const seq = this.unwrapper.unwrap(transportSequenceNumber);
    if (this.highest < 0) this.start = seq; // the first packet
    if (seq < this.start) return; // its range was already reported (or dropped)
    if (seq > this.highest) {
      if (seq - this.start >= WINDOW) this.dropBefore(seq - WINDOW + 1);
      this.highest = seq;
    }
    const slot = seq & MASK;
    if (!Number.isNaN(this.arrivals[slot]!)) return; // duplicate
    this.arrivals[slot] = at;
    if (++this.pending > EARLY_FLUSH_AFTER) this.flush();
  }

  /** Sends feedback for everything pending now, in as many packets as it takes. */
  flush(): void {
    // Each packet reports at least one arrival, so this ends.
    while (this.pending > 0) this.sendPacket(this.build());
  }

  /** Stops the timer and drops all state; idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.arrivals.fill(NaN);
    this.pending = 0;
  }

  private dropBefore(newStart: number): void {
    const end = Math.min(newStart, this.highest + 1);
    for (let seq = this.start; seq < end; seq++) {
      const slot = seq & MASK;
      if (Number.isNaN(this.arrivals[slot]!)) continue;
      this.arrivals[slot] = NaN;
      this.pending--;
    }
    this.start = newStart;
  }

  /** One feedback packet from `start` on; advances `start` past what it reports. */
  private build(): Buffer {
    const { arrivals, statuses, deltas, chunks } = this;
    const base = this.start;
    let first = base;
    while (Number.isNaN(arrivals[first & MASK]!)) first++;
    // The floored arrival of the first reported packet is the reference time, and the
    // deltas run from that floored value so the receiver reconstructs exact arrivals.
    const reference = Math.floor(arrivals[first & MASK]! / REFERENCE_UNIT_US);
    let clock = reference * REFERENCE_UNIT_US;
    chunks.reset();
    let count = 0;
    let reported = 0; // statuses up to and including the last received packet
    let received = 0;
    let deltaBytes = 0;
    for (let seq = base; seq <= this.highest; seq++) {
      // One more status adds at most a chunk and a two-byte delta.
      if (received > 0 && HEADER_BYTES + chunks.bytes + deltaBytes + 4 > this.maxPacketBytes) break;
      const at = arrivals[seq & MASK]!;
      let status = NOT_RECEIVED;
      if (!Number.isNaN(at)) {
        const delta = Math.round((at - clock) / DELTA_UNIT_US);
        // A delta that 16 bits cannot carry ends this packet; the next one starts here.
        if (delta < -0x8000 || delta > 0x7fff) break;
        status = delta >= 0 && delta <= 0xff ? SMALL_DELTA : LARGE_DELTA;
        deltas[received++] = delta;
        deltaBytes += status;
        // Advance by the encoded delta, so rounding errors do not accumulate.
        clock += delta * DELTA_UNIT_US;
      }
      chunks.add(status);
      statuses[count++] = status;
      if (status !== NOT_RECEIVED) reported = count;
    }
    // Losses after the last reported arrival wait for the next packet: they may still come.
    if (reported < count) {
      chunks.reset();
      for (let i = 0; i < reported; i++) chunks.add(statuses[i]!);
    }
    for (let i = 0; i < reported; i++) arrivals[(base + i) & MASK] = NaN;
    this.start = base + reported;
    this.pending -= received;

    const unpadded = HEADER_BYTES + chunks.bytes + deltaBytes;
    const size = (unpadded + 3) & ~3;
    const padding = size - unpadded;
    const buf = Buffer.alloc(size);
    buf[0] = (padding > 0 ? 0xa0 : 0x80) | 15;
    buf[1] = 205;
    buf.writeUInt16BE(size / 4 - 1, 2);
    buf.writeUInt32BE(this.senderSsrc, 4);
    buf.writeUInt32BE(this.mediaSsrc, 8);
    buf.writeUInt16BE(base & 0xffff, 12);
    buf.writeUInt16BE(reported, 14);
    buf.writeUIntBE(reference & 0xffffff, 16, 3);
    buf[19] = this.fbCount;
    this.fbCount = (this.fbCount + 1) & 0xff;
    let o = chunks.writeTo(buf, HEADER_BYTES);
    for (let i = 0; i < received; i++) {
      const d = deltas[i]!;
      if (d >= 0 && d <= 0xff) buf[o++] = d;
      else o = buf.writeInt16BE(d, o);
    }
    if (padding > 0) buf[size - 1] = padding;
    return buf;
  }
}

/**
 * Packet status chunks, built one status at a time so the packet size is known as it
 * grows. Statuses collect in an open chunk; when the next one does not fit, the open chunk
 * is finished as a run-length chunk if its statuses are all equal (runs up to 8191, so long
 * loss bursts cost two bytes), as a one-bit vector if it holds 14 statuses without a
 * large delta, or else as a two-bit vector of its first 7 statuses.
 */
class ChunkEncoder {
  /** Every finished chunk covers at least 7 statuses of a window's worth. */
  private readonly finished = new Uint16Array(Math.ceil(WINDOW / 7));
  private finishedCount = 0;
  /** The open chunk's statuses (only the first 14 are kept: longer means a run). */
  private readonly open = new Uint8Array(14);
  private size = 0;
  private allSame = true;
  private hasLarge = false;

  reset(): void {
    this.finishedCount = 0;
    this.size = 0;
    this.allSame = true;
    this.hasLarge = false;
  }

  /** Bytes of status chunks so far, the open one included. */
  get bytes(): number {
    return 2 * (this.finishedCount + (this.size > 0 ? 1 : 0));
  }

  add(status: number): void {
    if (!this.fits(status)) this.finishChunk();
    if (this.size < 14) this.open[this.size] = status;
    if (this.size > 0 && status !== this.open[0]) this.allSame = false;
    if (status === LARGE_DELTA) this.hasLarge = true;
    this.size++;
  }

  /** Writes all chunks at `offset`; returns the offset after them. */
  writeTo(buf: Buffer, offset: number): number {
    let o = offset;
    for (let i = 0; i < this.finishedCount; i++) o = buf.writeUInt16BE(this.finished[i]!, o);
    if (this.size === 0) return o;
    let last: number;
    if (this.allSame) last = this.runLength();
    else if (this.size <= 7) last = this.twoBit(this.size);
    else last = this.oneBit();
    return buf.writeUInt16BE(last, o);
  }

  private fits(status: number): boolean {
    if (this.size < 7) return true;
    if (this.size < 14 && !this.hasLarge && status !== LARGE_DELTA) return true;
    return this.allSame && this.size < 0x1fff && status === this.open[0];
  }

  private finishChunk(): void {
    if (this.allSame) {
      this.finished[this.finishedCount++] = this.runLength();
      this.size = 0;
    } else if (this.size === 14) {
      this.finished[this.finishedCount++] = this.oneBit();
      this.size = 0;
    } else {
      // 7 to 13 statuses, mixed: the first 7 go out, the rest stay open.
      this.finished[this.finishedCount++] = this.twoBit(7);
      this.open.copyWithin(0, 7, this.size);
      this.size -= 7;
    }
    this.allSame = true;
    this.hasLarge = false;
    for (let i = 0; i < this.size; i++) {
      if (this.open[i] !== this.open[0]) this.allSame = false;
      if (this.open[i] === LARGE_DELTA) this.hasLarge = true;
    }
  }

  /** T=0, 2-bit symbol, 13-bit run length. */
  private runLength(): number {
    return (this.open[0]! << 13) | this.size;
  }

  /** T=1, S=0, 14 one-bit symbols, first in the high bits; missing ones are zero. */
  private oneBit(): number {
    let chunk = 0x8000;
    for (let i = 0; i < this.size; i++) chunk |= this.open[i]! << (13 - i);
    return chunk;
  }

  /** T=1, S=1, 7 two-bit symbols from the first `n` statuses; missing ones are zero. */
  private twoBit(n: number): number {
    let chunk = 0xc000;
    for (let i = 0; i < n; i++) chunk |= this.open[i]! << (12 - 2 * i);
    return chunk;
  }
}
