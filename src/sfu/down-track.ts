import { ntpTime, type RTCDtlsTransport, type RTCRtpSender, type RTCRtpTransceiver } from 'werift';
import type { Logger } from '../common/logger.ts';
import { TypedEmitter } from '../common/typed-emitter.ts';
import { DROP_WANT_KEYFRAME, FORWARD, Forwarder, type ForwarderContinuation, type ForwarderPacket } from './forwarder.ts';
import { KeyframeRequestGate } from './keyframe-request-gate.ts';
import type { MediaStats } from './media-stats.ts';
import type { OverloadGuard } from './overload-guard.ts';
import type { PublishedTrack } from './published-track.ts';
import { RtpSendPath } from './rtp-send-path.ts';
import { checkDtls, checkSender, failTransport, fallbackLogger, isFir, weriftSender, type WeriftSender } from './werift-adapter.ts';

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
export interface ForwardedPacket extends ForwarderPacket {
  payload: Buffer;
  marker: boolean;
  /** RFC abs-send-time (6.18 fixed-point seconds, 24 bits), taken once per incoming packet. */
  absSendTime: number;
}

interface DownTrackEvents extends Record<string, unknown[]> {
  /** Once, from close(), whoever called it. */
  closed: [];
}

/**
 * Where each sender's outgoing numbering stood when its last DownTrack closed: a new
 * DownTrack on a reused transceiver (same sender, same SSRC) continues it, so the
 * subscriber sees no jump and the SRTP rollover counter of that SSRC stays right.
 */
const continuations = new WeakMap<RTCRtpSender, ForwarderContinuation>();

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
 * One published track as one subscriber receives it. Its Forwarder decides, per packet,
 * whether and under which numbers the subscriber gets it (start on a keyframe, one
 * continuous stream across source changes, see forwarder.ts); the DownTrack executes: it
 * writes the header straight into one buffer with the subscriber's SSRC, payload type and
 * extension ids, protects it with werift's negotiated SRTP keys and sends it on werift's ICE
 * socket (RtpSendPath). werift's sender still negotiates, receives the subscriber's RTCP and
 * sends sender reports from the counters kept here; NACKs are answered from this
 * DownTrack's history. Its owner is its PublishedTrack (which closes it); the subscribing
 * participant may close it too.
 */
export class DownTrack extends TypedEmitter<DownTrackEvents> {
  readonly track: PublishedTrack;
  readonly transceiver: RTCRtpTransceiver;
  readonly subscriberSid: string;
  private readonly stats: MediaStats;
  private readonly log: Logger;
  private readonly sender: WeriftSender;
  private readonly guard: OverloadGuard;
  private readonly video: boolean;
  private readonly forwarder: Forwarder;
  private readonly keyframeGate = new KeyframeRequestGate();
  /** Fixed position in the shedding order (see OverloadGuard). */
  private readonly shedRank = Math.random();
  private readonly subscriptions: { unSubscribe: () => void }[];
  private closed = false;
  private extensions: ExtensionLayout | undefined;
  /** The send path of `pathFor`, undefined until that transport connected and passed the adapter's checks. */
  private path: RtpSendPath | undefined;
  private pathFor: RTCDtlsTransport | undefined;
  private rtcpStarted = false;
  /** History for NACKs: the exact header sent (so a resend is byte-identical) and the payload. */
  private readonly historyHeader: (Buffer | undefined)[] = new Array<Buffer | undefined>(HISTORY);
  private readonly historyPayload: (Buffer | undefined)[] = new Array<Buffer | undefined>(HISTORY);
  private readonly historyIndex = new Float64Array(HISTORY).fill(-1);
  /** performance.now() of each held packet's last retransmission (0: never). */
  private readonly historyResentAt = new Float64Array(HISTORY);

  constructor(track: PublishedTrack, transceiver: RTCRtpTransceiver, subscriberSid: string, stats: MediaStats, guard: OverloadGuard, log?: Logger) {
    super();
    this.track = track;
    this.transceiver = transceiver;
    this.subscriberSid = subscriberSid;
    this.stats = stats;
    this.guard = guard;
    this.log = log ?? fallbackLogger().child({ participant: subscriberSid });
    this.sender = weriftSender(transceiver.sender);
    this.video = track.kind === 'video';
    this.forwarder = new Forwarder(track.kind, track.codec.clockRate, continuations.get(transceiver.sender));
    const sender = transceiver.sender;
    this.subscriptions = [
      sender.onPictureLossIndication.subscribe(() => {
        this.stats.plisReceived++;
        this.requestKeyframe();
      }),
      sender.onGenericNack.subscribe((nack) => {
        this.stats.nacksReceived++;
        const now = performance.now();
        for (const seq of nack.lost) this.retransmit(seq, now);
      }),
      sender.onRtcp.subscribe((packet) => {
        if (!isFir(packet)) return;
        this.stats.firsReceived++;
        this.requestKeyframe();
      }),
    ];
  }

  /** Forward one packet, as the Forwarder decides. */
  write(p: ForwardedPacket): void {
    if (!this.ready()) {
      this.stats.packetsDropped++;
      this.forwarder.interrupt();
      return;
    }
    if (this.video && this.guard.sheds(this.shedRank)) {
      // Shed under overload: counted, and resumed later at a keyframe like a fresh start.
      this.forwarder.interrupt();
      this.stats.packetsDropped++;
      this.stats.packetsShed++;
      return;
    }
    const verdict = this.forwarder.push(p);
    if (verdict !== FORWARD) {
      this.stats.packetsDropped++;
      if (verdict === DROP_WANT_KEYFRAME) this.track.requestKeyframe();
      return;
    }
    if (this.send(p)) {
      this.stats.packetsForwarded++;
      this.stats.bytesForwarded += p.payload.length;
    } else {
      this.stats.packetsDropped++;
    }
  }

  /** Whether a packet can go out now; on a transport's first connected moment, checks werift's fields once. */
  private ready(): boolean {
    if (this.closed) return false;
    const dtls = this.transceiver.sender.dtlsTransport;
    if (dtls?.state !== 'connected') return false;
    if (dtls !== this.pathFor) this.attach(dtls);
    const sender = this.sender;
    return this.path !== undefined && !sender.stopped && sender.codec !== undefined;
  }

  /** The send path of a newly connected transport, if werift's fields are what the adapter expects; else the transport is closed. */
  private attach(dtls: RTCDtlsTransport): void {
    this.pathFor = dtls;
    this.path = undefined;
    const problems = [...checkSender(this.transceiver.sender), ...checkDtls(dtls)];
    if (problems.length > 0) {
      failTransport(dtls, `the send path of ${this.track.sid}`, problems, this.log, this.stats);
      return;
    }
    this.path = RtpSendPath.for(dtls);
  }

  private send(p: ForwardedPacket): boolean {
    const sender = this.sender;
    const path = this.path!;
    const srtp = path.srtp();
    if (srtp === undefined) return false;
    const f = this.forwarder;
    const outSeq = f.sequenceNumber;
    const outTs = f.timestamp;
    const index = f.index;
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
    const path = this.path;
    const srtp = path?.srtp();
    if (path === undefined || srtp === undefined) return;
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

  /**
   * Idempotent. Stops passing the subscriber's feedback upstream (its PLIs, FIRs and NACKs
   * no longer reach the publisher), keeps where its numbering stood for the next DownTrack
   * on this sender, frees the history, and tells the listeners (its PublishedTrack drops it).
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.subscriptions) s.unSubscribe();
    const continuation = this.forwarder.continuation();
    if (continuation !== undefined) continuations.set(this.transceiver.sender, continuation);
    this.historyHeader.fill(undefined);
    this.historyPayload.fill(undefined);
    this.emit('closed');
    this.removeAllListeners();
  }
}
