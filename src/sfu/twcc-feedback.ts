/**
 * Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-
 * extensions-01), one generator per PeerConnection: every packet the remote sends
 * carries a transport-wide sequence number, and we report when each arrived (or that it
 * did not). Chromium's send-side estimator lives on this; werift's own generator is
 * malformed about half the time and reports losses as arrivals (field notes, bugs 1-2).
 *
 * Packet layout: RTCP header (V=2, FMT=15, PT=205), sender SSRC, media SSRC, base
 * sequence number (16), status count (16), reference time (24, signed, 64 ms units),
 * feedback packet count (8), status chunks (16 each), receive deltas (8 or 16 bits,
 * 250 µs units), then zero bytes to the next 32-bit boundary. We pad with zeros covered
 * by the length field rather than with the P bit, as libwebrtc does.
 */

const DELTA_UNIT_US = 250;
const REFERENCE_UNIT_US = 64_000;
/** Sequence numbers per feedback packet: keeps each one well under the MTU. */
const MAX_STATUS_PER_PACKET = 400;
/** Flush early beyond this many pending arrivals. */
const EARLY_FLUSH_AT = 100;
/** Arrivals kept while nothing can be sent; older ones are dropped. */
const MAX_PENDING = 4096;

const NOT_RECEIVED = 0;
const SMALL_DELTA = 1;
const LARGE_DELTA = 2;

export interface TwccFeedbackOptions {
  senderSsrc: number;
  send: (packet: Buffer) => void;
  intervalMs?: number;
  /** Monotonic clock in microseconds. */
  now?: () => number;
}

const hrtimeUs = () => Number(process.hrtime.bigint() / 1000n);

export class TwccFeedback {
  /** werift sets this on the receiver's TWCC object when it stops; harmless here. */
  twccRunning = true;
  private readonly senderSsrc: number;
  private readonly sendPacket: (packet: Buffer) => void;
  private readonly now: () => number;
  private mediaSsrc = 0;
  /** Arrival time (µs) by unwrapped sequence number. */
  private readonly arrivals = new Map<number, number>();
  private highest = -1;
  /** First unwrapped sequence number not yet reported; -1 before the first packet. */
  private nextToReport = -1;
  private fbCount = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(opts: TwccFeedbackOptions) {
    this.senderSsrc = opts.senderSsrc >>> 0;
    this.sendPacket = opts.send;
    this.now = opts.now ?? hrtimeUs;
    this.timer = setInterval(() => this.flush(), opts.intervalMs ?? 50);
    this.timer.unref();
  }

  setMediaSsrc(ssrc: number): void {
    this.mediaSsrc = ssrc >>> 0;
  }

  /** Records one arrival. Called by werift's receiver for every RTP packet. */
  handleTWCC(transportSequenceNumber: number): void {
    if (this.timer === undefined) return;
    const at = this.now();
    let seq: number;
    if (this.highest < 0) {
      seq = transportSequenceNumber & 0xffff;
      this.nextToReport = seq;
    } else {
      const diff = ((transportSequenceNumber - (this.highest & 0xffff) + 0x8000) & 0xffff) - 0x8000;
      seq = this.highest + diff;
    }
    if (seq < this.nextToReport || this.arrivals.has(seq)) return; // already reported, or a duplicate
    this.arrivals.set(seq, at);
    if (seq > this.highest) this.highest = seq;
    if (this.arrivals.size > MAX_PENDING) this.dropOldest();
    if (this.arrivals.size >= EARLY_FLUSH_AT) this.flush();
  }

  private dropOldest(): void {
    const keep = this.highest - MAX_PENDING / 2;
    for (const seq of this.arrivals.keys()) if (seq < keep) this.arrivals.delete(seq);
    this.nextToReport = Math.max(this.nextToReport, keep);
  }

  /** Sends feedback for everything pending, as as many packets as it takes. */
  flush(): void {
    while (this.arrivals.size > 0) {
      const packet = this.build();
      if (packet === undefined) break;
      this.sendPacket(packet);
    }
  }

  /** One feedback packet starting at `nextToReport`; advances it past what was reported. */
  private build(): Buffer | undefined {
    const base = this.nextToReport;
    // The reference time is the first reported arrival, floored to 64 ms; deltas run from it.
    let first = base;
    while (first <= this.highest && !this.arrivals.has(first)) first++;
    if (first > this.highest) return undefined;
    const referenceUnits = Math.floor(this.arrivals.get(first)! / REFERENCE_UNIT_US);
    let clock = referenceUnits * REFERENCE_UNIT_US;
    const statuses: number[] = [];
    const deltas: number[] = [];
    let seq = base;
    for (; seq <= this.highest && statuses.length < MAX_STATUS_PER_PACKET; seq++) {
      const at = this.arrivals.get(seq);
      if (at === undefined) {
        statuses.push(NOT_RECEIVED);
        continue;
      }
      const delta = Math.round((at - clock) / DELTA_UNIT_US);
      // A delta that a 16-bit field cannot carry ends this packet; the next starts here.
      if (delta < -32768 || delta > 32767) break;
      statuses.push(delta >= 0 && delta <= 255 ? SMALL_DELTA : LARGE_DELTA);
      deltas.push(delta);
      clock += delta * DELTA_UNIT_US;
      this.arrivals.delete(seq);
    }
    // Trailing losses are not reported yet: those packets may still arrive.
    while (statuses.length > 0 && statuses[statuses.length - 1] === NOT_RECEIVED) {
      statuses.pop();
      seq--;
    }
    this.nextToReport = seq;
    return this.serialize(base & 0xffff, statuses, deltas, referenceUnits);
  }

  private serialize(baseSeq: number, statuses: number[], deltas: number[], referenceUnits: number): Buffer {
    const chunks = encodeChunks(statuses);
    const deltaBytes = deltas.reduce((n, d) => n + (d >= 0 && d <= 255 ? 1 : 2), 0);
    const unpadded = 20 + chunks.length * 2 + deltaBytes;
    const size = (unpadded + 3) & ~3;
    const buf = Buffer.alloc(size);
    buf[0] = 0x80 | 15;
    buf[1] = 205;
    buf.writeUInt16BE(size / 4 - 1, 2);
    buf.writeUInt32BE(this.senderSsrc, 4);
    buf.writeUInt32BE(this.mediaSsrc, 8);
    buf.writeUInt16BE(baseSeq, 12);
    buf.writeUInt16BE(statuses.length, 14);
    buf.writeUIntBE(referenceUnits & 0xffffff, 16, 3);
    buf[19] = this.fbCount;
    this.fbCount = (this.fbCount + 1) & 0xff;
    let o = 20;
    for (const c of chunks) {
      buf.writeUInt16BE(c, o);
      o += 2;
    }
    for (const d of deltas) {
      if (d >= 0 && d <= 255) buf[o++] = d;
      else {
        buf.writeInt16BE(d, o);
        o += 2;
      }
    }
    return buf;
  }

  /** Idempotent. */
  close(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.twccRunning = false;
    this.arrivals.clear();
  }
}

/**
 * Run-length chunks for runs of 14 or more equal statuses, two-bit status vector chunks
 * (7 statuses each) otherwise.
 */
export function encodeChunks(statuses: readonly number[]): number[] {
  const chunks: number[] = [];
  let i = 0;
  while (i < statuses.length) {
    let run = 1;
    while (i + run < statuses.length && statuses[i + run] === statuses[i] && run < 0x1fff) run++;
    if (run >= 14) {
      chunks.push((statuses[i]! << 13) | run);
      i += run;
      continue;
    }
    let chunk = 0xc000;
    for (let k = 0; k < 7; k++) {
      const s = i + k < statuses.length ? statuses[i + k]! : NOT_RECEIVED;
      chunk |= s << (12 - 2 * k);
    }
    chunks.push(chunk);
    i += 7;
  }
  return chunks;
}
