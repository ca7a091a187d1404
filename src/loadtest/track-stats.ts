/**
 * One remote track as a load-test participant receives it: packets, bytes, sequence gaps
 * and loss, and the one-way delay of video packets from the send time the publisher's
 * SyntheticSource wrote into the payload. Nothing is decoded or verified: this runs for
 * every packet the tool receives.
 */
import type { RtpPacket } from 'werift';
import { sendTimeOf } from '../node-client/payload-format.ts';
import { wallClockMs } from '../node-client/payload-marker.ts';
import type { TrackSink } from '../node-client/subscriber-connection.ts';
import type { LatencyRecorder } from './latency-recorder.ts';

const DUP_WINDOW = 1024;

/** Delays beyond this are not a delay but a payload that carries no send time. */
const MAX_PLAUSIBLE_DELAY_MS = 60_000;

/** One remote track as this participant receives it. */
export class TrackStats implements TrackSink {
  readonly trackSid: string;
  readonly identity: string;
  readonly video: boolean;
  packets = 0;
  bytes = 0;
  /** Forward jumps of the sequence number by more than one. */
  gaps = 0;
  /** Packets below the highest sequence number that filled a gap (NACK retransmissions, reordering). */
  late = 0;
  /** Packets whose sequence number had already arrived (within the last 1024). */
  duplicates = 0;
  /** First and highest sequence number, extended (no wrap). */
  private base = 0;
  private maxExt = 0;
  /** Extended sequence number + 1 of the packet last seen in each of 1024 slots. */
  private readonly seen = new Uint32Array(DUP_WINDOW);
  /** Progress bookkeeping: packets at the last tick, and the last tick that saw packets. */
  tickPackets = 0;
  lastActiveTick = -1000;
  private readonly latency: LatencyRecorder;

  constructor(trackSid: string, identity: string, video: boolean, latency: LatencyRecorder) {
    this.trackSid = trackSid;
    this.identity = identity;
    this.video = video;
    this.latency = latency;
  }

  /** RTP sequence numbers the stream covered so far (RFC 3550 "expected"). */
  get expected(): number {
    return this.packets === 0 ? 0 : this.maxExt - this.base + 1;
  }

  /** Distinct packets received. */
  get unique(): number {
    return this.packets - this.duplicates;
  }

  onPacket(rtp: RtpPacket): void {
    const seq = rtp.header.sequenceNumber;
    const payload = rtp.payload;
    let ext: number;
    if (this.packets++ === 0) {
      // Start high enough that packets from before the first one still have a positive index.
      ext = 0x10000 + seq;
      this.base = ext;
      this.maxExt = ext;
    } else {
      const d = ((seq - this.maxExt + 0x8000) & 0xffff) - 0x8000; // signed distance
      ext = this.maxExt + d;
      if (d > 0) {
        if (d > 1) this.gaps++;
        this.maxExt = ext;
      } else if (this.seen[ext & (DUP_WINDOW - 1)] === ext + 1) {
        this.duplicates++;
      } else {
        this.late++;
      }
    }
    this.seen[ext & (DUP_WINDOW - 1)] = ext + 1;
    this.bytes += payload.length;
    if (this.video) {
      const delay = wallClockMs() - sendTimeOf('vp8', payload);
      if (delay > -1 && delay < MAX_PLAUSIBLE_DELAY_MS) this.latency.record(delay);
      else this.latency.invalid++;
    }
  }

  /** Its m-line went to another track or none; the figures stay for the totals. */
  end(): void {}
}
