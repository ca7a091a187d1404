import type { RTCRtpTransceiver } from 'werift';
import type { TrackInfo } from '../signaling/messages.ts';
import type { SyntheticCodec, SyntheticSource } from './synthetic-media.ts';

export type Kind = 'audio' | 'video';
export type TrackSource = TrackInfo['source'];

/** NACKed sequence numbers kept per track (the newest). */
const NACKED_KEPT = 1000;

/** One track a client publishes: its sendonly transceiver, the synthetic source feeding it, and what the server said of it. */
export class LocalTrack {
  readonly kind: Kind;
  readonly codec: SyntheticCodec;
  readonly transceiver: RTCRtpTransceiver;
  readonly source: SyntheticSource;
  /** Sent in `track_info`. */
  name: string | undefined;
  readonly sourceKind: TrackSource | undefined;
  /** The m-line on the publisher connection (set once the offer is made). */
  mid: string | undefined;
  /** From our own `track_published` (the server sends it to the publisher too). */
  trackSid: string | undefined;
  info: TrackInfo | undefined;
  /** PLIs the server sent us for this track (each forces a keyframe). */
  plisReceived = 0;
  /** NACK messages and (the newest) sequence numbers they asked for. */
  nacksReceived = 0;
  readonly nackedSeqs: number[] = [];
  unpublished = false;
  muted = false;

  constructor(init: { kind: Kind; codec: SyntheticCodec; transceiver: RTCRtpTransceiver; source: SyntheticSource; name?: string; sourceKind?: TrackSource }) {
    this.kind = init.kind;
    this.codec = init.codec;
    this.transceiver = init.transceiver;
    this.source = init.source;
    this.name = init.name;
    this.sourceKind = init.sourceKind;
  }

  get sourceId(): number {
    return this.source.sourceId;
  }

  get packetsSent(): number {
    return this.source.packetsSent;
  }

  /** @internal */
  onNack(lost: number[]): void {
    this.nacksReceived++;
    this.nackedSeqs.push(...lost);
    if (this.nackedSeqs.length > NACKED_KEPT) this.nackedSeqs.splice(0, this.nackedSeqs.length - NACKED_KEPT);
  }
}
