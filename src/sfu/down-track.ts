import { ntpTime, type RTCDtlsTransport, type RTCRtpSender, type RTCRtpTransceiver } from 'werift';
import type { MediaStats } from './media-stats.ts';
import { KeyframeRequestGate } from './keyframe-request-gate.ts';
import type { OverloadGuard } from './overload-guard.ts';
import type { PublishedTrack } from './published-track.ts';
import { RtpSendPath } from './rtp-send-path.ts';
import { SeqUnwrapper } from './sequence.ts';

const SEQ_MOD = 0x10000;
/** Packets kept per DownTrack to answer NACKs (werift's sender keeps as many). */
const HISTORY = 128;
/**
 * A held packet is resent at most once in this many ms, however often it is NACKed: one
 * NACK can name thousands of sequence numbers (or one many times), and a subscriber can
 * send thousands of NACKs a second. Bounds retransmissions at HISTORY per this interval.
 */
export const RETRANSMIT_REPEAT_MS = 50;
const URI_MID = 'urn:ietf:params:rtp-hdrext:sdes:mid';
const URI_ABS_SEND_TIME = 'http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time';
const URI_TRANSPORT_CC = 'http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01';

/** One packet of a published track as PublishedTrack hands it to every DownTrack. */
export interface ForwardedPacket {
  payload: Buffer;
  marker: boolean;
  ssrc: number;
  /** After padding removal. */
  sequenceNumber: number;
  timestamp: number;
  keyframe: boolean;
  /** RFC abs-send-time (6.18 fixed-point seconds, 24 bits), taken once per incoming packet. */
  absSendTime: number;
}

/** werift sender state this path reads or keeps up to date (private in werift's typings). */
interface SenderInternals {
  ssrc: number;
  stopped: boolean;
  codec: { payloadType: number } | undefined;
  mid: string | undefined;
  headerExtensions: { id: number; uri: string }[];
  dtlsTransport: { transportSequenceNumber: number } | undefined;
  ntpTimestamp: bigint;
  rtpTimestamp: number;
  octetCount: number;
  packetCount: number;
  headerBytesSent: number;
  retransmittedPacketsSent: number;
  retransmittedBytesSent: number;
  runRtcp(): Promise<void>;
}

/** The header-extension block for a subscriber's negotiated ids, built once per negotiation. */
interface ExtensionLayout {
  /** 0xBEDE profile, length and every element, abs-send-time and transport-cc left blank. */
  bytes: Buffer;
  /** Offsets of the abs-send-time and transport-cc values inside the header, or -1. */
  absSendTimeAt: number;
  transportCcAt: number;
  /** What it was built from, to notice a renegotiation. */
  from: { id: number; uri: string }[];
  mid: string | undefined;
}

/**
 * One published track as one subscriber receives it. It rewrites what the subscriber must
 * see as one continuous stream (SSRC and payload type of the subscriber's sender, sequence
 * numbers and timestamps, so a publisher SSRC change or a late start stays gap-free), holds
 * video back until a keyframe so the subscriber's decoder starts clean, and sends each
 * packet itself: header written straight into one buffer with the subscriber's extension
 * ids, SRTP with werift's negotiated keys, UDP on werift's ICE transport (RtpSendPath).
 * werift's sender still negotiates, receives the subscriber's RTCP and sends sender
 * reports from the counters kept here; NACKs are answered from this DownTrack's history.
 */
export class DownTrack {
  readonly track: PublishedTrack;
  readonly transceiver: RTCRtpTransceiver;
  readonly subscriberSid: string;
  private readonly stats: MediaStats;
  private readonly sender: SenderInternals;
  private readonly guard: OverloadGuard;
  private readonly keyframeGate = new KeyframeRequestGate();
  /** Fixed position in the shedding order (see OverloadGuard). */
  private readonly shedRank = Math.random();
  private closed = false;
  private needKeyframe: boolean;
  private shedding = false;
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
  /** Outgoing sequence numbers, unwrapped: the SRTP rollover counter is its upper bits. */
  private readonly outIndex = new SeqUnwrapper();
  private extensions: ExtensionLayout | undefined;
  private path: RtpSendPath | undefined;
  private pathFor: RTCDtlsTransport | undefined;
  private rtcpStarted = false;
  /** History for NACKs: the exact header sent (so a resend is byte-identical) and the payload. */
  private readonly historyHeader: (Buffer | undefined)[] = new Array<Buffer | undefined>(HISTORY);
  private readonly historyPayload: (Buffer | undefined)[] = new Array<Buffer | undefined>(HISTORY);
  private readonly historyIndex = new Float64Array(HISTORY).fill(-1);
  /** performance.now() of each held packet's last retransmission (0: never). */
  private readonly historyResentAt = new Float64Array(HISTORY);

  constructor(track: PublishedTrack, transceiver: RTCRtpTransceiver, subscriberSid: string, stats: MediaStats, guard: OverloadGuard) {
    this.track = track;
    this.transceiver = transceiver;
    this.subscriberSid = subscriberSid;
    this.stats = stats;
    this.guard = guard;
    this.sender = transceiver.sender as unknown as SenderInternals;
    this.needKeyframe = track.kind === 'video';
    transceiver.sender.onPictureLossIndication.subscribe(() => {
      this.stats.plisReceived++;
      this.requestKeyframe();
    });
    transceiver.sender.onGenericNack.subscribe((nack) => {
      this.stats.nacksReceived++;
      const now = performance.now();
      for (const seq of nack.lost) this.retransmit(seq, now);
    });
    transceiver.sender.onRtcp.subscribe((packet) => {
      // werift surfaces FIR only as a raw payload-specific feedback packet (PT 206, FMT 4).
      if (packet.type === 206 && (packet as { feedback?: { count?: number } }).feedback?.count === 4) {
        this.stats.firsReceived++;
        this.requestKeyframe();
      }
    });
  }

  get ready(): boolean {
    const sender = this.sender;
    return !this.closed && !sender.stopped && sender.codec !== undefined && this.transceiver.sender.dtlsTransport?.state === 'connected';
  }

  /** Forward one packet. */
  write(p: ForwardedPacket): void {
    if (!this.ready) {
      this.stats.packetsDropped++;
      if (this.track.kind === 'video') this.needKeyframe = true;
      return;
    }
    if (this.track.kind === 'video' && this.guard.sheds(this.shedRank)) {
      // Shed under overload: counted, and resumed later at a keyframe like a fresh start.
      this.shedding = true;
      this.needKeyframe = true;
      this.stats.packetsDropped++;
      this.stats.packetsShed++;
      return;
    }
    if (this.shedding) {
      this.shedding = false;
      this.track.requestKeyframe();
    }
    const inSeq = p.sequenceNumber;
    const inTs = p.timestamp;
    if (p.ssrc !== this.sourceSsrc) {
      this.sourceSsrc = p.ssrc;
      this.started = false;
      if (this.track.kind === 'video') this.needKeyframe = true;
    }
    if (!this.started || this.needKeyframe) {
      if (this.needKeyframe && !p.keyframe) {
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
    if (this.send(p, outSeq, outTs)) {
      this.stats.packetsForwarded++;
      this.stats.bytesForwarded += p.payload.length;
    } else {
      this.stats.packetsDropped++;
    }
  }

  /** The subscriber transport's send path, looked up once per transport rather than per packet. */
  private sendPath(): RtpSendPath {
    const dtls = this.transceiver.sender.dtlsTransport;
    if (this.path === undefined || this.pathFor !== dtls) {
      this.path = RtpSendPath.for(dtls);
      this.pathFor = dtls;
    }
    return this.path;
  }

  private send(p: ForwardedPacket, outSeq: number, outTs: number): boolean {
    const sender = this.sender;
    const path = this.sendPath();
    const srtp = path.srtp();
    if (srtp === undefined) return false;
    const ext = this.extensionLayout();
    const header = Buffer.allocUnsafe(12 + ext.bytes.length);
    header[0] = ext.bytes.length > 0 ? 0x90 : 0x80; // version 2, X when extensions follow
    header[1] = (p.marker ? 0x80 : 0) | (sender.codec!.payloadType & 0x7f);
    header.writeUInt16BE(outSeq, 2);
    header.writeUInt32BE(outTs, 4);
    header.writeUInt32BE(sender.ssrc, 8);
    if (ext.bytes.length > 0) {
      ext.bytes.copy(header, 12);
      if (ext.absSendTimeAt >= 0) header.writeUIntBE(p.absSendTime, ext.absSendTimeAt, 3);
      if (ext.transportCcAt >= 0 && sender.dtlsTransport !== undefined) {
        const twccSeq = (sender.dtlsTransport.transportSequenceNumber + 1) & 0xffff;
        sender.dtlsTransport.transportSequenceNumber = twccSeq;
        header.writeUInt16BE(twccSeq, ext.transportCcAt);
      }
    }
    const index = this.outIndex.unwrap(outSeq);
    const pieces = srtp.protect(header, p.payload, Math.floor(index / SEQ_MOD));
    if (!path.send(pieces, header.length + p.payload.length + srtp.tagLength)) return false;
    const slot = outSeq % HISTORY;
    this.historyHeader[slot] = header;
    this.historyPayload[slot] = p.payload;
    this.historyIndex[slot] = index;
    this.historyResentAt[slot] = 0;
    // What werift's sender reports in its SRs and stats; the NTP/RTP pair once per frame.
    if (sender.rtpTimestamp !== outTs || !this.rtcpStarted) {
      sender.rtpTimestamp = outTs;
      sender.ntpTimestamp = ntpTime();
    }
    sender.octetCount += p.payload.length;
    sender.packetCount = (sender.packetCount + 1) >>> 0;
    sender.headerBytesSent += header.length;
    if (!this.rtcpStarted) {
      this.rtcpStarted = true;
      void sender.runRtcp();
    }
    return true;
  }

  /** The subscriber's PLI/FIR, backed off while it keeps asking (see KeyframeRequestGate). */
  private requestKeyframe(): void {
    if (this.keyframeGate.pass(Date.now())) this.track.requestKeyframe();
  }

  /**
   * Resends a packet the subscriber NACKed, byte-identical to the first time, if still held
   * and not resent in the last RETRANSMIT_REPEAT_MS.
   */
  private retransmit(seq: number, now: number): void {
    const slot = seq % HISTORY;
    const header = this.historyHeader[slot];
    const payload = this.historyPayload[slot];
    const index = this.historyIndex[slot]!;
    if (this.closed || header === undefined || payload === undefined || index % SEQ_MOD !== seq) return;
    const resentAt = this.historyResentAt[slot]!;
    if (resentAt !== 0 && now - resentAt < RETRANSMIT_REPEAT_MS) return;
    this.historyResentAt[slot] = now;
    const path = this.sendPath();
    const srtp = path.srtp();
    if (srtp === undefined) return;
    if (path.send(srtp.protect(header, payload, Math.floor(index / SEQ_MOD)), header.length + payload.length + srtp.tagLength)) {
      this.sender.retransmittedPacketsSent++;
      this.sender.retransmittedBytesSent += payload.length;
    }
  }

  /**
   * The one-byte header-extension block (RFC 8285) werift's sender would write for this
   * subscriber: mid, abs-send-time and transport-cc where negotiated. The publisher's own
   * extensions are never copied: their ids mean other things on the subscriber's session.
   */
  private extensionLayout(): ExtensionLayout {
    const sender = this.sender;
    const cached = this.extensions;
    if (cached !== undefined && cached.from === sender.headerExtensions && cached.mid === sender.mid) return cached;
    const elements: Buffer[] = [];
    let absSendTimeAt = -1;
    let transportCcAt = -1;
    let offset = 12 + 4;
    for (const { id, uri } of sender.headerExtensions) {
      let value: Buffer | undefined;
      if (uri === URI_MID && sender.mid !== undefined && sender.mid !== '') value = Buffer.from(sender.mid);
      else if (uri === URI_ABS_SEND_TIME) {
        value = Buffer.alloc(3);
        absSendTimeAt = offset + 1;
      } else if (uri === URI_TRANSPORT_CC) {
        value = Buffer.alloc(2);
        transportCcAt = offset + 1;
      }
      if (value === undefined || id < 1 || id > 14 || value.length > 16) continue;
      elements.push(Buffer.from([(id << 4) | (value.length - 1)]), value);
      offset += 1 + value.length;
    }
    let bytes = Buffer.alloc(0);
    if (elements.length > 0) {
      const body = Buffer.concat(elements);
      const words = Math.ceil(body.length / 4);
      bytes = Buffer.alloc(4 + words * 4);
      bytes.writeUInt16BE(0xbede, 0);
      bytes.writeUInt16BE(words, 2);
      body.copy(bytes, 4);
    }
    this.extensions = { bytes, absSendTimeAt, transportCcAt, from: sender.headerExtensions, mid: sender.mid };
    return this.extensions;
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
    this.historyHeader.fill(undefined);
    this.historyPayload.fill(undefined);
  }
}
