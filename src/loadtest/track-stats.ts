/**
 * One remote track as a load-test participant receives it: the sequence-number counting of
 * ReceiveStats (packets, bytes, gaps, loss), and the one-way delay of video packets from the
 * send time the publisher's SyntheticSource wrote into the payload. Nothing is decoded or
 * verified: this runs for every packet the tool receives.
 */
import type { RtpPacket } from 'werift';
import { sendTimeOf } from '../node-client/payload-format.ts';
import { wallClockMs } from '../node-client/payload-marker.ts';
import { ReceiveStats } from '../node-client/receive-stats.ts';
import type { TrackSink } from '../node-client/subscriber-connection.ts';
import type { LatencyRecorder } from './latency-recorder.ts';

/** Delays beyond this are not a delay but a payload that carries no send time. */
const MAX_PLAUSIBLE_DELAY_MS = 60_000;

/**
 * One remote track as this participant receives it. When its m-line goes to another track
 * or none, it just stops receiving: the figures stay for the totals.
 */
export class TrackStats extends ReceiveStats implements TrackSink {
  readonly trackSid: string;
  readonly identity: string;
  readonly video: boolean;
  /** Progress bookkeeping: packets at the last tick, and the last tick that saw packets. */
  tickPackets = 0;
  lastActiveTick = -1000;
  private readonly latency: LatencyRecorder;

  constructor(trackSid: string, identity: string, video: boolean, latency: LatencyRecorder) {
    super();
    this.trackSid = trackSid;
    this.identity = identity;
    this.video = video;
    this.latency = latency;
  }

  onPacket(rtp: RtpPacket): void {
    const payload = rtp.payload;
    this.record(rtp.header.sequenceNumber, payload.length);
    if (this.video) {
      const delay = wallClockMs() - sendTimeOf('vp8', payload);
      if (delay > -1 && delay < MAX_PLAUSIBLE_DELAY_MS) this.latency.record(delay);
      else this.latency.invalid++;
    }
  }
}
