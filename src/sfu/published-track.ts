import { randomBytes } from 'node:crypto';
import { type MediaStreamTrack, type RtpPacket, type RTCRtpCodecParameters, type RTCRtpTransceiver } from 'werift';
import type { Logger } from '../common/logger.ts';
import type { DownTrack, ForwardedPacket } from './down-track.ts';
import { isKeyframe } from './keyframe.ts';
import { codecNameOf } from './media-config.ts';
import type { MediaStats } from './media-stats.ts';
import { PaddingRemover } from './padding-remover.ts';
import type { MediaKind, TrackDescription, TrackSource } from './signals.ts';
import { checkReceiver, failTransport, fallbackLogger } from './werift-adapter.ts';

/** At most one keyframe request upstream per this many ms, however many subscribers ask. */
export const KEYFRAME_REQUEST_INTERVAL_MS = 500;

/** Anything besides a subscriber that consumes a track's packets as they arrive (the recorder). */
export type RtpSink = (rtp: RtpPacket, keyframe: boolean) => void;

/**
 * A track a participant publishes: reads its RTP once and hands every packet to each
 * subscriber's DownTrack, which it owns (closes them when it closes). It also owns the
 * upstream keyframe request throttle. Padding-only packets are closed up here, once per
 * incoming stream, not per subscriber: every subscriber sees the same numbering of a source
 * (its Forwarder only offsets it), so one PaddingRemover serves them all.
 */
export class PublishedTrack {
  readonly sid = `TR_${randomBytes(6).toString('hex')}`;
  readonly kind: MediaKind;
  readonly ownerSid: string;
  /** Its publisher's identity, for the offers that carry it. */
  readonly ownerIdentity: string;
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
  /** werift's receiver fields are checked at the first packet (werift-adapter.ts). */
  private checked = false;
  private readonly log: Logger;
  /** Handed to every DownTrack in turn, refilled per packet: nothing is allocated per subscriber. */
  private readonly forwarded: ForwardedPacket = {
    payload: Buffer.alloc(0),
    marker: false,
    ssrc: 0,
    layer: 0,
    sequenceNumber: 0,
    timestamp: 0,
    keyframe: false,
    arrivalMs: 0,
    absSendTime: 0,
  };

  constructor(opts: {
    ownerSid: string;
    ownerIdentity: string;
    transceiver: RTCRtpTransceiver;
    track: MediaStreamTrack;
    codec: RTCRtpCodecParameters;
    source?: TrackSource;
    name?: string;
    stats: MediaStats;
    log?: Logger;
  }) {
    this.ownerSid = opts.ownerSid;
    this.ownerIdentity = opts.ownerIdentity;
    this.transceiver = opts.transceiver;
    this.kind = opts.track.kind === 'audio' ? 'audio' : 'video';
    this.mid = opts.transceiver.mid ?? '';
    this.codec = opts.codec;
    this.codecName = codecNameOf(opts.codec.mimeType);
    this.source = opts.source ?? (this.kind === 'audio' ? 'microphone' : 'camera');
    this.name = opts.name ?? '';
    this.stats = opts.stats;
    this.log = opts.log ?? fallbackLogger().child({ participant: opts.ownerSid });
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

  /** The DownTracks it forwards to now (a snapshot; rebuilt only when subscribers change). */
  get subscribers(): readonly DownTrack[] {
    return this.downTrackList;
  }

  /** The track owns `dt` from now on: closes it with itself; a DownTrack closed by anyone leaves the track. */
  addDownTrack(dt: DownTrack): void {
    if (this.closed) {
      dt.close();
      return;
    }
    this.downTracks.get(dt.subscriberSid)?.close();
    this.downTracks.set(dt.subscriberSid, dt);
    this.downTrackList = [...this.downTracks.values()];
    dt.once('closed', () => this.detach(dt));
    if (this.kind === 'video') this.requestKeyframe();
  }

  private detach(dt: DownTrack): void {
    if (this.downTracks.get(dt.subscriberSid) !== dt) return;
    this.downTracks.delete(dt.subscriberSid);
    this.downTrackList = [...this.downTracks.values()];
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
    if (!this.checked) this.checkWerift();
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
    // One clock read for all subscribers; abs-send-time: seconds in 6.18 fixed point, modulo 64 s.
    const now = performance.now();
    p.arrivalMs = now;
    p.absSendTime = Math.floor(((performance.timeOrigin + now) / 1000) * 262144) % 0x1000000;
    for (let i = 0; i < list.length; i++) list[i]!.write(p);
  }

  /** Once, at the first packet: a TWCC hook werift no longer calls closes the publisher's transport. */
  private checkWerift(): void {
    this.checked = true;
    const problems = checkReceiver(this.transceiver.receiver);
    if (problems.length > 0) failTransport(this.transceiver.receiver.dtlsTransport, `the receiver of ${this.sid}`, problems, this.log, this.stats);
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

  /** Idempotent: stops reading and closes its DownTracks (their subscribers' feedback no longer goes upstream). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe();
    const downTracks = this.downTrackList;
    this.downTrackList = [];
    this.sinkList = [];
    for (const dt of downTracks) dt.close();
    this.downTracks.clear();
  }
}
