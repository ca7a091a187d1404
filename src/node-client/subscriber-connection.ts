/**
 * The subscriber connection of a Node client: the server makes every offer, the client
 * answers (docs/signaling.md, "Subscribe"). Each offer's `tracks` says which track each
 * m-line carries now; a mid whose track changed (the server reuses an inactive m-line of
 * the same kind for a new subscription) gets a new sink, a mid no longer listed none.
 *
 * werift and a reused m-line: while the m-line is inactive its SSRC stays routed to the
 * same receiver, and when it goes sendonly again with the same SSRC no new
 * MediaStreamTrack is made (the transceiver's onTrack does not fire again), so packets
 * keep arriving on the track hooked first; a new SSRC adds a track, which is hooked too.
 * Sinks therefore hang off the transceiver, not the MediaStreamTrack.
 *
 * Only the newest offer is answered: one that a newer offer overtook (the server re-offers
 * after a failed or missing answer, or on resume) is applied only as far as needed.
 */
import { RTCPeerConnection, type MediaStreamTrack, type PeerConfig, type RTCRtpTransceiver, type RtpPacket } from 'werift';
import type { IceCandidateInit, ServerMessage } from '../signaling/messages.ts';

export type OfferMessage = Extract<ServerMessage, { type: 'offer' }>;
export type OfferedTrack = OfferMessage['tracks'][string];

/** Where one subscribed track's packets go (the tests verify them, the load tool counts them). */
export interface TrackSink {
  onPacket(rtp: RtpPacket): void;
  /** The m-line no longer carries this track (a sink that keeps its figures needs no `end`). */
  end?(): void;
}

/** Makes the sink for a track an offer maps to an m-line. */
export type SinkFactory<S extends TrackSink> = (track: OfferedTrack, mid: string, transceiver: RTCRtpTransceiver) => S;

export interface SubscriberSignal {
  /** Sends our answer; resolves with the server's reply (errors included). */
  answer(sdp: string): Promise<ServerMessage>;
  candidate(c: IceCandidateInit | null): void;
  /** Our first answer is out: candidates may follow it. */
  startTrickle(): void;
  problem(what: string): void;
  changed(): void;
}

interface Slot<S> {
  current: S | undefined;
  /** The sid `current` was made for. */
  trackSid: string | undefined;
}

const noop = () => {};
const MAX_EARLY_CANDIDATES = 64;

export class SubscriberConnection<S extends TrackSink> {
  /** Made on the first offer. */
  pc: RTCPeerConnection | undefined;
  offers = 0;
  answers = 0;
  /** Offers a newer one overtook before we answered them. */
  superseded = 0;
  /** Packets on m-lines that no offer mapped to a track. */
  unmapped = 0;
  private readonly config: () => Partial<PeerConfig>;
  private readonly signal: SubscriberSignal;
  private readonly sinkFor: SinkFactory<S>;
  private readonly slots = new Map<RTCRtpTransceiver, Slot<S>>();
  private readonly hooked = new WeakSet<MediaStreamTrack>();
  private earlyCandidates: IceCandidateInit[] = [];
  private latest: OfferMessage | undefined;
  private queue: Promise<void> = Promise.resolve();
  private closed = false;

  /** `config` is read when the first offer makes the PeerConnection (ICE servers come with `joined`). */
  constructor(config: () => Partial<PeerConfig>, signal: SubscriberSignal, sinkFor: SinkFactory<S>) {
    this.config = config;
    this.signal = signal;
    this.sinkFor = sinkFor;
  }

  get connectionState(): RTCPeerConnection['connectionState'] | 'none' {
    return this.pc?.connectionState ?? 'none';
  }

  /** The sinks the newest applied offer maps to an m-line. */
  *live(): Generator<S> {
    for (const slot of this.slots.values()) if (slot.current !== undefined) yield slot.current;
  }

  handleOffer(msg: OfferMessage): void {
    this.latest = msg;
    this.queue = this.queue
      .then(() => this.apply(msg))
      .catch((err: unknown) => {
        this.signal.problem(`subscriber negotiation failed: ${(err as Error).message}`);
        this.signal.changed();
      });
  }

  addRemoteCandidate(c: IceCandidateInit | null): void {
    if (this.closed || c === null || c.candidate === '') return;
    if (this.pc?.remoteDescription == null) {
      if (this.earlyCandidates.length < MAX_EARLY_CANDIDATES) this.earlyCandidates.push(c);
      return;
    }
    this.queue = this.queue.then(() => this.addCandidateNow(c));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const slot of this.slots.values()) {
      slot.current?.end?.();
      slot.current = undefined;
      slot.trackSid = undefined;
    }
    this.earlyCandidates = [];
    await this.pc?.close().catch(noop);
  }

  private createPc(): RTCPeerConnection {
    const pc = new RTCPeerConnection(this.config());
    pc.onIceCandidate.subscribe((c) => {
      this.signal.candidate(c === undefined ? null : { candidate: c.candidate, sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null });
    });
    pc.onRemoteTransceiverAdded.subscribe((t) => this.hook(t));
    pc.connectionStateChange.subscribe(() => this.signal.changed());
    return pc;
  }

  private async apply(msg: OfferMessage): Promise<void> {
    if (this.closed) return;
    this.offers++;
    if (msg !== this.latest) {
      this.superseded++;
      return;
    }
    const pc = (this.pc ??= this.createPc());
    await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
    for (const t of pc.getTransceivers()) this.hook(t);
    const early = this.earlyCandidates;
    this.earlyCandidates = [];
    for (const c of early) await this.addCandidateNow(c);
    await pc.setLocalDescription(await pc.createAnswer());
    if (this.closed) return;
    if (msg !== this.latest) {
      // A newer offer arrived meanwhile: the server waits for the answer to that one.
      this.superseded++;
      return;
    }
    this.map(pc, msg.tracks);
    const reply = this.signal.answer(pc.localDescription!.sdp);
    this.answers++;
    this.signal.startTrickle();
    this.signal.changed();
    reply.then(
      (r) => {
        if (r.type === 'error') this.signal.problem(`subscriber answer refused: ${r.code} ${r.message}`);
      },
      (err: Error) => {
        if (!this.closed) this.signal.problem(`subscriber answer: ${err.message}`);
      },
    );
  }

  private hook(t: RTCRtpTransceiver): void {
    if (!this.slots.has(t)) {
      this.slots.set(t, { current: undefined, trackSid: undefined });
      t.onTrack.subscribe((track) => this.attach(t, track));
    }
    for (const track of t.receiver.tracks) this.attach(t, track);
  }

  private attach(t: RTCRtpTransceiver, track: MediaStreamTrack): void {
    if (this.hooked.has(track)) return;
    this.hooked.add(track);
    const slot = this.slots.get(t)!;
    track.onReceiveRtp.subscribe((rtp) => {
      const sink = slot.current;
      if (sink === undefined) this.unmapped++;
      else sink.onPacket(rtp);
    });
  }

  /** Points each m-line at the track the offer says it carries (a new sid: a new sink). */
  private map(pc: RTCPeerConnection, tracks: OfferMessage['tracks']): void {
    for (const t of pc.getTransceivers()) {
      this.hook(t);
      const slot = this.slots.get(t)!;
      const mid = t.mid ?? undefined;
      const info = mid === undefined ? undefined : tracks[mid];
      if (info === undefined) {
        slot.current?.end?.();
        slot.current = undefined;
        slot.trackSid = undefined;
      } else if (slot.current === undefined || slot.trackSid !== info.trackSid) {
        slot.current?.end?.();
        slot.current = this.sinkFor(info, mid!, t);
        slot.trackSid = info.trackSid;
      }
    }
  }

  private async addCandidateNow(c: IceCandidateInit): Promise<void> {
    if (this.closed || this.pc === undefined) return;
    try {
      await this.pc.addIceCandidate({ candidate: c.candidate.replace(/^a=/, ''), sdpMid: c.sdpMid ?? undefined, sdpMLineIndex: c.sdpMLineIndex ?? undefined });
    } catch (err) {
      this.signal.problem(`subscriber addIceCandidate: ${(err as Error).message}`);
    }
  }
}
