/**
 * The sending side of a participant: the publisher PeerConnection (we offer, the server
 * answers) with one VP8 and optionally one Opus transceiver, each fed by a synthetic
 * source once the connection is up. A PLI from the server forces a keyframe.
 */
import { RTCPeerConnection, type PeerConfig, type RTCRtpSender } from 'werift';
import type { IceCandidateInit, ServerMessage } from '../signaling/messages.ts';
import { peerConfig } from './peer-config.ts';
import { OpusSource, Vp8Source, type SendPacket } from './synthetic-media.ts';

export interface PublisherSignal {
  /** Sends a request and resolves with the server's reply (rejects on timeout or a closed socket). */
  request(msg: Record<string, unknown> & { type: string }): Promise<ServerMessage>;
  candidate(c: IceCandidateInit | null): void;
  problem(what: string): void;
}

export interface PublisherOptions {
  videoBitrateKbps: number;
  fps: number;
  audio: boolean;
}

const noop = () => {};

/** `sendRtp` without the per-call bookkeeping werift's sender estimator would do (field notes, bug 6). */
function sendVia(sender: RTCRtpSender): SendPacket {
  sender.senderBWE.rtpPacketSent = noop;
  return (packet) => {
    sender.sendRtp(packet).catch(noop);
  };
}

export class Publisher {
  readonly pc: RTCPeerConnection;
  readonly video: Vp8Source;
  readonly audio: OpusSource | undefined;
  private readonly signal: PublisherSignal;
  private offered = false;
  private localCount = 0;
  private remoteCount = 0;
  private localCandidates: (IceCandidateInit | null)[] = [];
  private remoteCandidates: IceCandidateInit[] = [];
  private closed = false;

  constructor(ice: Partial<PeerConfig>, opts: PublisherOptions, signal: PublisherSignal) {
    this.signal = signal;
    this.video = new Vp8Source({ bitrateKbps: opts.videoBitrateKbps, fps: opts.fps });
    this.audio = opts.audio ? new OpusSource() : undefined;
    const pc = new RTCPeerConnection(peerConfig('publisher', ice));
    this.pc = pc;
    pc.onIceCandidate.subscribe((c) => {
      const init: IceCandidateInit | null = c === undefined ? null : { candidate: c.candidate, sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null };
      if (init !== null) this.localCount++;
      if (this.offered) this.signal.candidate(init);
      else this.localCandidates.push(init);
    });
    const videoSender = pc.addTransceiver('video', { direction: 'sendonly' }).sender;
    videoSender.onPictureLossIndication.subscribe(() => this.video.forceKeyframe());
    const sendVideo = sendVia(videoSender);
    const audioSender = this.audio === undefined ? undefined : pc.addTransceiver('audio', { direction: 'sendonly' }).sender;
    const sendAudio = audioSender === undefined ? undefined : sendVia(audioSender);
    pc.connectionStateChange.subscribe((state) => {
      if (this.closed) return;
      if (state === 'connected') {
        // Nothing was sent before DTLS was up: start with a keyframe.
        this.video.forceKeyframe();
        this.video.start(sendVideo);
        if (sendAudio !== undefined) this.audio?.start(sendAudio);
      } else if (state === 'failed' || state === 'closed') {
        this.stopMedia();
      }
    });
  }

  get connectionState(): string {
    return this.pc.connectionState;
  }

  /** Offer → answer; throws with the server's error text if it refuses. */
  async publish(): Promise<void> {
    const pc = this.pc;
    await pc.setLocalDescription(await pc.createOffer());
    for (const t of pc.getTransceivers()) {
      if (t.mid == null) continue;
      // Not awaited: the server applies messages in order, so they precede the offer.
      this.signal.request({ type: 'track_info', mid: t.mid, source: t.kind === 'video' ? 'camera' : 'microphone' }).then(
        (r) => {
          if (r.type === 'error') this.signal.problem(`track_info refused: ${r.code}`);
        },
        noop,
      );
    }
    const reply = this.signal.request({ type: 'offer', target: 'publisher', sdp: pc.localDescription!.sdp });
    this.offered = true;
    for (const c of this.localCandidates) this.signal.candidate(c);
    this.localCandidates = [];
    const answer = await reply;
    if (answer.type === 'error') throw new Error(`offer refused: ${answer.code} ${answer.message}`);
    if (answer.type !== 'answer') throw new Error(`unexpected reply to offer: ${answer.type}`);
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    const pending = this.remoteCandidates;
    this.remoteCandidates = [];
    for (const c of pending) await this.addCandidateNow(c);
  }

  addRemoteCandidate(c: IceCandidateInit | null): void {
    if (c === null || c.candidate === '') return;
    this.remoteCount++;
    if (this.pc.remoteDescription == null) {
      if (this.remoteCandidates.length < 64) this.remoteCandidates.push(c);
      return;
    }
    void this.addCandidateNow(c);
  }

  private async addCandidateNow(c: IceCandidateInit): Promise<void> {
    if (this.closed) return;
    try {
      await this.pc.addIceCandidate({ candidate: c.candidate.replace(/^a=/, ''), sdpMid: c.sdpMid ?? undefined, sdpMLineIndex: c.sdpMLineIndex ?? undefined });
    } catch (err) {
      this.signal.problem(`publisher addIceCandidate: ${(err as Error).message}`);
    }
  }

  /** Connection details for a failure message. */
  describe(): string {
    const pc = this.pc;
    return `ice ${pc.iceConnectionState}, connection ${pc.connectionState}, candidates ${this.localCount} local / ${this.remoteCount} remote`;
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

  stopMedia(): void {
    this.video.stop();
    this.audio?.stop();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopMedia();
    await this.pc.close().catch(noop);
  }
}
