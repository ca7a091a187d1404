import { randomBytes } from 'node:crypto';
import { type MediaStreamTrack, type RtpPacket, type RTCRtpCodecParameters, type RTCRtpTransceiver } from 'werift';
import type { DownTrack, ForwardedPacket } from './down-track.ts';
import { isKeyframe } from './keyframe.ts';
import { codecNameOf } from './media-config.ts';
import type { MediaStats } from './media-stats.ts';
import { PaddingRemover } from './sequence.ts';
import type { MediaKind, TrackDescription, TrackSource } from './signals.ts';

/** At most one keyframe request upstream per this many ms, however many subscribers ask. */
export const KEYFRAME_REQUEST_INTERVAL_MS = 500;

/** Anything besides a subscriber that consumes a track's packets as they arrive (the recorder). */
export type RtpSink = (rtp: RtpPacket, keyframe: boolean) => void;

/**
 * A track a participant publishes: reads its RTP once and hands every packet to each
 * subscriber's DownTrack. It also owns the upstream keyframe request throttle.
 */
export class PublishedTrack {
  readonly sid = `TR_${randomBytes(6).toString('hex')}`;
  readonly kind: MediaKind;
  readonly ownerSid: string;
  readonly mid: string;
  readonly codec: RTCRtpCodecParameters;
  readonly codecName: string;
  source: TrackSource;
  name: string;
  muted = false;
  private readonly transceiver: RTCRtpTransceiver;
  private readonly stats: MediaStats;
  private readonly downTracks = new Map<string, DownTrack>();
  /** Iteration copy rebuilt only when subscribers change, not per packet. */
  private downTrackList: DownTrack[] = [];
  private sinkList: RtpSink[] = [];
  private readonly unsubscribe: () => void;
  private lastSsrc: number | undefined;
  private padding = new PaddingRemover();
  private lastKeyframeRequest = 0;
  private closed = false;
  /** Handed to every DownTrack in turn, refilled per packet: nothing is allocated per subscriber. */
  private readonly forwarded: ForwardedPacket = {
    payload: Buffer.alloc(0),
    marker: false,
    ssrc: 0,
    sequenceNumber: 0,
    timestamp: 0,
    keyframe: false,
    absSendTime: 0,
  };

  constructor(opts: {
    ownerSid: string;
    transceiver: RTCRtpTransceiver;
    track: MediaStreamTrack;
    codec: RTCRtpCodecParameters;
    source?: TrackSource;
    name?: string;
    stats: MediaStats;
  }) {
    this.ownerSid = opts.ownerSid;
    this.transceiver = opts.transceiver;
    this.kind = opts.track.kind === 'audio' ? 'audio' : 'video';
    this.mid = opts.transceiver.mid ?? '';
    this.codec = opts.codec;
    this.codecName = codecNameOf(opts.codec.mimeType);
    this.source = opts.source ?? (this.kind === 'audio' ? 'microphone' : 'camera');
    this.name = opts.name ?? '';
    this.stats = opts.stats;
    const sub = opts.track.onReceiveRtp.subscribe((rtp) => this.onRtp(rtp));
    // werift's receiver sends the NACKs upstream; we only count them.
    const lost = opts.transceiver.receiver.onPacketLost.subscribe(() => {
      this.stats.nacksSent++;
    });
    this.unsubscribe = () => {
      sub.unSubscribe();
      lost.unSubscribe();
    };
  }

  info(): TrackDescription {
    return { sid: this.sid, kind: this.kind, source: this.source, name: this.name, codec: this.codecName, muted: this.muted, mid: this.mid };
  }

  get subscriberCount(): number {
    return this.downTracks.size;
  }

  addDownTrack(dt: DownTrack): void {
    this.downTracks.set(dt.subscriberSid, dt);
    this.downTrackList = [...this.downTracks.values()];
    if (this.kind === 'video') this.requestKeyframe();
  }

  removeDownTrack(subscriberSid: string): void {
    if (this.downTracks.delete(subscriberSid)) this.downTrackList = [...this.downTracks.values()];
  }

  addSink(sink: RtpSink): void {
    this.sinkList = [...this.sinkList, sink];
    if (this.kind === 'video') this.requestKeyframe();
  }

  removeSink(sink: RtpSink): void {
    this.sinkList = this.sinkList.filter((s) => s !== sink);
  }

  private onRtp(rtp: RtpPacket): void {
    if (this.closed) return;
    const { header, payload } = rtp;
    this.stats.packetsReceived++;
    this.stats.bytesReceived += payload.length;
    if (header.ssrc !== this.lastSsrc) {
      this.lastSsrc = header.ssrc;
      this.padding = new PaddingRemover();
    }
    // Padding-only probes carry nothing a subscriber can use; their numbers are closed up.
    const sequenceNumber = this.padding.map(header.sequenceNumber, payload.length === 0);
    if (sequenceNumber === undefined) return;
    const list = this.downTrackList;
    const sinks = this.sinkList;
    if (list.length === 0 && sinks.length === 0) return;
    const keyframe = this.kind === 'video' && isKeyframe(this.codecName, payload);
    for (let i = 0; i < sinks.length; i++) sinks[i]!(rtp, keyframe);
    if (list.length === 0) return;
    const p = this.forwarded;
    p.payload = payload;
    p.marker = header.marker;
    p.ssrc = header.ssrc;
    p.sequenceNumber = sequenceNumber;
    p.timestamp = header.timestamp;
    p.keyframe = keyframe;
    // abs-send-time: seconds in 6.18 fixed point, modulo 64 s; one clock read for all subscribers.
    p.absSendTime = Math.floor(((performance.timeOrigin + performance.now()) / 1000) * 262144) % 0x1000000;
    for (let i = 0; i < list.length; i++) list[i]!.write(p);
  }

  /** Throttled PLI to the publisher. */
  requestKeyframe(): void {
    if (this.closed || this.kind !== 'video' || this.lastSsrc === undefined) return;
    const now = Date.now();
    if (now - this.lastKeyframeRequest < KEYFRAME_REQUEST_INTERVAL_MS) return;
    this.lastKeyframeRequest = now;
    this.stats.keyframeRequestsSent++;
    this.transceiver.receiver.sendRtcpPLI(this.lastSsrc).catch(() => {});
  }

  /** Stops reading; the subscribers' DownTracks are closed by their owners. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe();
    this.downTracks.clear();
    this.downTrackList = [];
    this.sinkList = [];
  }
}
