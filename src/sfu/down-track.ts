import { RtpHeader, RtpPacket, type RTCRtpTransceiver } from 'werift';
import type { MediaStats } from './media-stats.ts';
import type { PublishedTrack } from './published-track.ts';
import { SeqUnwrapper } from './sequence.ts';

const SEQ_MOD = 0x10000;

/**
 * One published track as one subscriber receives it. It owns the subscriber-side
 * transceiver's sender and rewrites what the subscriber must see as one continuous
 * stream: SSRC and payload type (by werift's sender), sequence numbers and timestamps
 * (here, so a publisher SSRC change or a late start stays gap-free), and it holds video
 * back until a keyframe so the subscriber's decoder starts clean.
 */
export class DownTrack {
  readonly track: PublishedTrack;
  readonly transceiver: RTCRtpTransceiver;
  readonly subscriberSid: string;
  private readonly stats: MediaStats;
  private closed = false;
  private needKeyframe: boolean;
  private sourceSsrc: number | undefined;
  private seqOffset = 0;
  private tsOffset = 0;
  private unwrapper = new SeqUnwrapper();
  private startExt = 0;
  private lastOutSeq = Math.floor(Math.random() * SEQ_MOD);
  private lastOutTs = Math.floor(Math.random() * 0x100000000);
  private started = false;
  /** True once anything was sent: a later rebase then leaves one frame's worth of timestamp gap. */
  private sentAny = false;

  constructor(track: PublishedTrack, transceiver: RTCRtpTransceiver, subscriberSid: string, stats: MediaStats) {
    this.track = track;
    this.transceiver = transceiver;
    this.subscriberSid = subscriberSid;
    this.stats = stats;
    this.needKeyframe = track.kind === 'video';
    // We never read werift's sender-side bandwidth estimate, and its per-packet bookkeeping
    // grows without bound (werift field notes, bug 6): switch it off for forwarded senders.
    transceiver.sender.senderBWE.rtpPacketSent = () => {};
    transceiver.sender.onPictureLossIndication.subscribe(() => {
      this.stats.plisReceived++;
      this.track.requestKeyframe();
    });
    transceiver.sender.onGenericNack.subscribe(() => {
      this.stats.nacksReceived++;
    });
    transceiver.sender.onRtcp.subscribe((packet) => {
      // werift surfaces FIR only as a raw payload-specific feedback packet (PT 206, FMT 4).
      if (packet.type === 206 && (packet as { feedback?: { count?: number } }).feedback?.count === 4) {
        this.stats.firsReceived++;
        this.track.requestKeyframe();
      }
    });
  }

  get ready(): boolean {
    return !this.closed && this.transceiver.sender.dtlsTransport?.state === 'connected';
  }

  /**
   * Forward one packet. `template` is shared by all subscribers of this packet: werift's
   * sender clones it synchronously, so setting our sequence number and timestamp on it
   * right before the call is safe and saves one allocation per subscriber.
   */
  write(template: RtpPacket, inSsrc: number, inSeq: number, inTs: number, keyframe: boolean): void {
    if (!this.ready) {
      this.stats.packetsDropped++;
      if (this.track.kind === 'video') this.needKeyframe = true;
      return;
    }
    if (inSsrc !== this.sourceSsrc) {
      this.sourceSsrc = inSsrc;
      this.started = false;
      if (this.track.kind === 'video') this.needKeyframe = true;
    }
    if (!this.started || this.needKeyframe) {
      if (this.needKeyframe && !keyframe) {
        this.stats.packetsDropped++;
        this.track.requestKeyframe();
        return;
      }
      this.rebase(inSeq, inTs);
    } else if (this.unwrapper.unwrap(inSeq) < this.startExt) {
      // Older than where this subscriber started: the subscriber never saw its frame.
      this.stats.packetsDropped++;
      return;
    }
    const outSeq = (inSeq + this.seqOffset) & 0xffff;
    const outTs = (inTs + this.tsOffset) >>> 0;
    if (((outSeq - this.lastOutSeq + SEQ_MOD) & 0xffff) < 0x8000) {
      this.lastOutSeq = outSeq;
      this.lastOutTs = outTs;
    }
    template.header.sequenceNumber = outSeq;
    template.header.timestamp = outTs;
    this.stats.packetsForwarded++;
    this.stats.bytesForwarded += template.payload.length;
    this.transceiver.sender.sendRtp(template).catch(() => {
      this.stats.packetsDropped++;
    });
  }

  /** Continue this subscriber's numbering from the last packet it got, whatever the source does. */
  private rebase(inSeq: number, inTs: number): void {
    const tsStep = this.sentAny ? (this.track.kind === 'video' ? 3000 : 960) : 0;
    this.seqOffset = (this.lastOutSeq + 1 - inSeq + SEQ_MOD * 2) & 0xffff;
    this.tsOffset = (this.lastOutTs + tsStep - inTs) >>> 0;
    this.unwrapper = new SeqUnwrapper();
    this.startExt = this.unwrapper.unwrap(inSeq);
    this.started = true;
    this.sentAny = true;
    this.needKeyframe = false;
  }

  close(): void {
    this.closed = true;
  }
}
