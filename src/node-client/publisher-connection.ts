/**
 * The publisher connection of a Node client: a werift PeerConnection on which the client
 * makes every offer and the server answers (docs/signaling.md, "Publish"). Each published
 * track is a sendonly transceiver fed by a SyntheticSource; a PLI from the server forces
 * a keyframe. Offers are made one at a time, in call order.
 */
import { RTCPeerConnection, type PeerConfig, type RTCRtpSender } from 'werift';
import type { IceCandidateInit, ServerMessage, TrackInfo } from '../signaling/messages.ts';
import { LocalTrack, type Kind, type TrackSource } from './local-track.ts';
import { ServerError } from './server-error.ts';
import { SyntheticSource, type SyntheticCodec, type SyntheticSourceOptions } from './synthetic-media.ts';

export interface PublisherSignal {
  /** Sends a request; resolves with the server's reply (errors included), rejects on timeout or a closed socket. */
  request(msg: Record<string, unknown> & { type: string }): Promise<ServerMessage>;
  /** A local candidate (`null`: gathering complete); the client holds it until it may trickle. */
  candidate(c: IceCandidateInit | null): void;
  /** Our first offer is out: candidates may follow it. */
  startTrickle(): void;
  problem(what: string): void;
  /** Something observable changed (a PLI, a connection state). */
  changed(): void;
}

export interface PublishSpec extends Omit<SyntheticSourceOptions, 'codec'> {
  kind: Kind;
  codec: SyntheticCodec;
  source?: TrackSource;
  /** Sent in `track_info` (default `${kind}-${mid}`). */
  name?: string;
  /** Send `track_info` before the offer (default true). */
  trackInfo?: boolean;
  /** Start sending once the answer is applied (default true). */
  startMedia?: boolean;
}

const noop = () => {};

/** Remote candidates held before the answer (the server sends a few per connection). */
const MAX_EARLY_CANDIDATES = 64;

export class PublisherConnection {
  readonly pc: RTCPeerConnection;
  readonly tracks: LocalTrack[] = [];
  private readonly signal: PublisherSignal;
  private queue: Promise<unknown> = Promise.resolve();
  private earlyCandidates: IceCandidateInit[] = [];
  private localCount = 0;
  private remoteCount = 0;
  private closed = false;

  constructor(config: Partial<PeerConfig>, signal: PublisherSignal) {
    this.signal = signal;
    this.pc = new RTCPeerConnection(config);
    this.pc.onIceCandidate.subscribe((c) => {
      if (c !== undefined) this.localCount++;
      signal.candidate(c === undefined ? null : { candidate: c.candidate, sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null });
    });
    this.pc.connectionStateChange.subscribe((state) => {
      if (state === 'connected') {
        // Packets sent before DTLS was up were dropped: start clean with a keyframe.
        for (const t of this.tracks) t.source.forceKeyframe();
      } else if (state === 'failed' || state === 'closed') {
        this.stopMedia();
      }
      signal.changed();
    });
  }

  get connectionState(): RTCPeerConnection['connectionState'] {
    return this.pc.connectionState;
  }

  /** Adds the tracks in one offer, applies the answer, starts their sources. Throws `ServerError` if the server refuses. */
  publish(specs: PublishSpec[]): Promise<LocalTrack[]> {
    return this.enqueue(async () => {
      if (this.closed) throw new Error('publisher connection is closed');
      const added = specs.map((spec) => ({ spec, local: this.addTrack(spec) }));
      await this.pc.setLocalDescription(await this.pc.createOffer());
      for (const { spec, local } of added) {
        local.mid = local.transceiver.mid ?? undefined;
        local.name ??= `${local.kind}-${local.mid}`;
        if (spec.trackInfo !== false && local.mid !== undefined) this.sendTrackInfo(local);
      }
      try {
        await this.negotiate();
      } catch (err) {
        for (const { local } of added) local.unpublished = true;
        throw err;
      }
      for (const { spec, local } of added) if (spec.startMedia !== false) this.startMedia(local);
      return added.map((a) => a.local);
    });
  }

  /** Stops sending on a track: direction inactive and a new offer (the server unpublishes it). */
  unpublish(local: LocalTrack): Promise<void> {
    return this.enqueue(async () => {
      local.source.stop();
      local.unpublished = true;
      if (this.closed) return;
      local.transceiver.setDirection('inactive');
      await this.negotiate();
    });
  }

  /** Starts (or resumes) feeding a track's source into its sender. */
  startMedia(local: LocalTrack): void {
    if (this.closed || local.unpublished) return;
    const sender = local.transceiver.sender;
    local.source.start((packet) => sender.sendRtp(packet));
  }

  stopMedia(): void {
    for (const t of this.tracks) t.source.stop();
  }

  /** Our own `track_published`: ties the sid to its transceiver, by mid (by kind and name from a server that sends no mid). */
  onOwnTrackPublished(track: TrackInfo): void {
    if (this.tracks.some((t) => t.trackSid === track.sid)) return;
    const unassigned = this.tracks.filter((t) => t.trackSid === undefined && t.kind === track.kind && !t.unpublished);
    const mid = (track as { mid?: string }).mid;
    const local =
      mid !== undefined && mid !== ''
        ? unassigned.find((t) => t.mid === mid)
        : (unassigned.find((t) => t.name !== undefined && t.name === track.name) ?? unassigned[0]);
    if (local === undefined) return;
    local.trackSid = track.sid;
    local.info = track;
    this.signal.changed();
  }

  addRemoteCandidate(c: IceCandidateInit | null): void {
    if (this.closed || c === null || c.candidate === '') return;
    this.remoteCount++;
    if (this.pc.remoteDescription == null) {
      if (this.earlyCandidates.length < MAX_EARLY_CANDIDATES) this.earlyCandidates.push(c);
      return;
    }
    void this.addCandidateNow(c);
  }

  /** Resolves once connected; rejects when the connection fails or closes first. */
  connected(): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (state: string) => {
        if (state === 'connected') {
          sub.unSubscribe();
          resolve();
        } else if (state === 'failed' || state === 'closed') {
          sub.unSubscribe();
          reject(new Error(`publisher connection ${state}`));
        }
      };
      const sub = this.pc.connectionStateChange.subscribe(check);
      check(this.pc.connectionState);
    });
  }

  /** Connection details for a failure message. */
  describe(): string {
    const pc = this.pc;
    return `ice ${pc.iceConnectionState}, connection ${pc.connectionState}, candidates ${this.localCount} local / ${this.remoteCount} remote`;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopMedia();
    this.earlyCandidates = [];
    await this.pc.close().catch(noop);
  }

  private addTrack(spec: PublishSpec): LocalTrack {
    const transceiver = this.pc.addTransceiver(spec.kind, { direction: 'sendonly' });
    lightenSender(transceiver.sender);
    const { kind, codec, source: sourceKind, name, trackInfo: _t, startMedia: _s, ...sourceOpts } = spec;
    const local = new LocalTrack({ kind, codec, transceiver, source: new SyntheticSource({ codec, ...sourceOpts }), name, sourceKind });
    transceiver.sender.onPictureLossIndication.subscribe(() => {
      local.plisReceived++;
      local.source.forceKeyframe();
      this.signal.changed();
    });
    transceiver.sender.onGenericNack.subscribe((nack) => {
      local.onNack(nack.lost);
      this.signal.changed();
    });
    this.tracks.push(local);
    return local;
  }

  /** Not awaited: the server applies messages in order, so it precedes the offer. */
  private sendTrackInfo(local: LocalTrack): void {
    const msg = { type: 'track_info', mid: local.mid, ...(local.name !== undefined ? { name: local.name } : {}), ...(local.sourceKind !== undefined ? { source: local.sourceKind } : {}) };
    this.signal.request(msg).then((reply) => {
      if (reply.type === 'error') this.signal.problem(`track_info for mid ${local.mid} refused: ${reply.code} ${reply.message}`);
    }, noop);
  }

  /** Sends the current local offer (made now if there is none), applies the answer. */
  private async negotiate(): Promise<void> {
    const pc = this.pc;
    if (pc.signalingState !== 'have-local-offer') await pc.setLocalDescription(await pc.createOffer());
    const reply = this.signal.request({ type: 'offer', target: 'publisher', sdp: pc.localDescription!.sdp });
    this.signal.startTrickle();
    let answer: ServerMessage;
    try {
      answer = await reply;
      if (answer.type === 'error') throw new ServerError(answer);
      if (answer.type !== 'answer') throw new Error(`unexpected reply to offer: ${answer.type}`);
    } catch (err) {
      await pc.setLocalDescription({ type: 'rollback' }).catch(noop);
      throw err;
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    const early = this.earlyCandidates;
    this.earlyCandidates = [];
    for (const c of early) await this.addCandidateNow(c);
  }

  private async addCandidateNow(c: IceCandidateInit): Promise<void> {
    if (this.closed) return;
    try {
      await this.pc.addIceCandidate({ candidate: c.candidate.replace(/^a=/, ''), sdpMid: c.sdpMid ?? undefined, sdpMLineIndex: c.sdpMLineIndex ?? undefined });
    } catch (err) {
      this.signal.problem(`publisher addIceCandidate: ${(err as Error).message}`);
    }
  }

  private enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn);
    this.queue = run.catch(noop);
    return run;
  }
}

/**
 * werift's sender-side bandwidth estimator books every packet sent and nothing here reads
 * it: skipping it is most of a synthetic packet's cost outside SRTP (the load tool sends
 * hundreds of thousands a second; docs/werift.md, W6).
 */
function lightenSender(sender: RTCRtpSender): void {
  sender.senderBWE.rtpPacketSent = noop;
}
