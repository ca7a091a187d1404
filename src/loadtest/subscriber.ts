/**
 * The receiving side of a participant: the subscriber PeerConnection (the server offers,
 * we answer), which m-line carries whose track (from each offer's `tracks`), and per-track
 * counters: packets, bytes, sequence gaps and loss, and the one-way delay of video packets
 * from the send time the publisher wrote into the payload. Nothing is decoded.
 */
import { RTCPeerConnection, type MediaStreamTrack, type PeerConfig, type RTCRtpTransceiver, type RtpPacket } from 'werift';
import type { IceCandidateInit, ServerMessage } from '../signaling/messages.ts';
import { peerConfig } from './peer-config.ts';
import { Histogram } from './report.ts';
import { sendTimeOf, wallClockMs } from './synthetic-media.ts';

type OfferMessage = Extract<ServerMessage, { type: 'offer' }>;

const DUP_WINDOW = 1024;

/** Delays beyond this are not a delay but a payload that carries no send time. */
const MAX_PLAUSIBLE_DELAY_MS = 60_000;

/** One-way delay samples: `window` since the measured window began, `tick` since the last progress line. */
export class LatencyRecorder {
  readonly window = new Histogram();
  readonly tick = new Histogram();
  /** Video packets whose payload held no plausible send time. */
  invalid = 0;
  record(ms: number): void {
    this.window.record(ms);
    this.tick.record(ms);
  }
}

/** One remote track as this participant receives it. */
export class TrackStats {
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
      const delay = wallClockMs() - sendTimeOf(payload);
      if (delay > -1 && delay < MAX_PLAUSIBLE_DELAY_MS) this.latency.record(delay);
      else this.latency.invalid++;
    }
  }
}

interface Slot {
  current: TrackStats | undefined;
}

export interface SubscriberSignal {
  /** Sends our answer; resolves with an error text if the server refused it. */
  answer(sdp: string): Promise<string | undefined>;
  candidate(c: IceCandidateInit | null): void;
  problem(what: string): void;
}

export class Subscriber {
  pc: RTCPeerConnection | undefined;
  /** Every track ever mapped (ended ones stay, for the totals). */
  readonly tracks: TrackStats[] = [];
  /** Packets on m-lines that no offer mapped to a track. */
  unmapped = 0;
  offers = 0;
  private config: Partial<PeerConfig>;
  private readonly latency: LatencyRecorder;
  private readonly signal: SubscriberSignal;
  private readonly slots = new Map<RTCRtpTransceiver, Slot>();
  private readonly attached = new WeakSet<MediaStreamTrack>();
  private remoteCandidates: IceCandidateInit[] = [];
  private localCandidates: (IceCandidateInit | null)[] = [];
  private answered = false;
  private queue: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(ice: Partial<PeerConfig>, latency: LatencyRecorder, signal: SubscriberSignal) {
    this.config = peerConfig('subscriber', ice);
    this.latency = latency;
    this.signal = signal;
  }

  /** ICE servers from `joined`, for the connection made on the first offer. */
  setIceServers(iceServers: PeerConfig['iceServers']): void {
    this.config = { ...this.config, iceServers };
  }

  get connectionState(): string {
    return this.pc?.connectionState ?? 'none';
  }

  /** Live tracks: what the latest offer maps to an m-line. */
  *live(): Generator<TrackStats> {
    for (const slot of this.slots.values()) if (slot.current !== undefined) yield slot.current;
  }

  handleOffer(msg: OfferMessage): void {
    this.queue = this.queue
      .then(() => this.applyOffer(msg))
      .catch((err: unknown) => this.signal.problem(`subscriber negotiation failed: ${(err as Error).message}`));
  }

  addRemoteCandidate(c: IceCandidateInit | null): void {
    if (c === null || c.candidate === '') return;
    if (this.pc?.remoteDescription == null) {
      if (this.remoteCandidates.length < 64) this.remoteCandidates.push(c);
      return;
    }
    this.queue = this.queue.then(() => this.addCandidateNow(c));
  }

  private async addCandidateNow(c: IceCandidateInit): Promise<void> {
    if (this.closed || this.pc === undefined) return;
    try {
      await this.pc.addIceCandidate({ candidate: c.candidate.replace(/^a=/, ''), sdpMid: c.sdpMid ?? undefined, sdpMLineIndex: c.sdpMLineIndex ?? undefined });
    } catch (err) {
      this.signal.problem(`subscriber addIceCandidate: ${(err as Error).message}`);
    }
  }

  private createPc(): RTCPeerConnection {
    const pc = new RTCPeerConnection(this.config);
    pc.onIceCandidate.subscribe((c) => {
      const init: IceCandidateInit | null = c === undefined ? null : { candidate: c.candidate, sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null };
      if (this.answered) this.signal.candidate(init);
      else this.localCandidates.push(init);
    });
    pc.onRemoteTransceiverAdded.subscribe((t) => this.hook(t));
    return pc;
  }

  private async applyOffer(msg: OfferMessage): Promise<void> {
    if (this.closed) return;
    this.offers++;
    const pc = (this.pc ??= this.createPc());
    await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
    for (const t of pc.getTransceivers()) this.hook(t);
    const pending = this.remoteCandidates;
    this.remoteCandidates = [];
    for (const c of pending) await this.addCandidateNow(c);
    await pc.setLocalDescription(await pc.createAnswer());
    this.map(pc, msg.tracks);
    if (this.closed) return;
    const refused = this.signal.answer(pc.localDescription!.sdp);
    if (!this.answered) {
      this.answered = true;
      for (const c of this.localCandidates) this.signal.candidate(c);
      this.localCandidates = [];
    }
    const why = await refused;
    if (why !== undefined) this.signal.problem(`subscriber answer refused: ${why}`);
  }

  private hook(t: RTCRtpTransceiver): void {
    if (!this.slots.has(t)) {
      this.slots.set(t, { current: undefined });
      t.onTrack.subscribe((track) => this.attach(t, track));
    }
    for (const track of t.receiver.tracks) this.attach(t, track);
  }

  private attach(t: RTCRtpTransceiver, track: MediaStreamTrack): void {
    if (this.attached.has(track)) return;
    this.attached.add(track);
    const slot = this.slots.get(t)!;
    track.onReceiveRtp.subscribe((rtp) => {
      const stats = slot.current;
      if (stats === undefined) this.unmapped++;
      else stats.onPacket(rtp);
    });
  }

  /** Points each m-line at the track the offer says it carries (a new sid: a new TrackStats). */
  private map(pc: RTCPeerConnection, tracks: OfferMessage['tracks']): void {
    for (const t of pc.getTransceivers()) {
      this.hook(t);
      const slot = this.slots.get(t)!;
      const info = t.mid == null ? undefined : tracks[t.mid];
      if (info === undefined) {
        slot.current = undefined;
      } else if (slot.current?.trackSid !== info.trackSid) {
        slot.current = new TrackStats(info.trackSid, info.identity, info.kind === 'video', this.latency);
        this.tracks.push(slot.current);
      }
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const slot of this.slots.values()) slot.current = undefined;
    await this.pc?.close().catch(() => {});
  }
}
