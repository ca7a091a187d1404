import { RTCPeerConnection, type RTCDtlsTransport, type RTCRtpTransceiver, type MediaStreamTrack } from 'werift';
import { AppError } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import { TypedEmitter } from '../common/typed-emitter.ts';
import type { Config } from '../config.ts';
import { codecsFor, headerExtensions } from './media-config.ts';
import type { MediaStats } from './media-stats.ts';
import type { IceCandidate } from './signals.ts';
import { announceCandidate, announceSdp, assertAnswerTo, assertPlausibleSdp, CANDIDATE_LINE, firstUfrag, type MediaSection } from './sdp.ts';
import { TwccFeedback } from './twcc-feedback.ts';
import { installTwcc, sendRawRtcp } from './werift-adapter.ts';

export type TransportRole = 'publisher' | 'subscriber' | 'combined';
export type TransportState = 'new' | 'connecting' | 'connected' | 'disconnected' | 'failed' | 'closed';

interface RtcTransportEvents extends Record<string, unknown[]> {
  candidate: [IceCandidate | null];
  state: [TransportState];
  /** A remote track arrived on a transceiver the remote sends on. */
  track: [MediaStreamTrack, RTCRtpTransceiver];
}

/** How long a transport may stay "disconnected" before it counts as failed. */
const DISCONNECTED_TIMEOUT_MS = 10_000;

/**
 * Distinct trickled remote candidates one ICE generation accepts (a restart, i.e. a new
 * remote ufrag, starts afresh; a repeated candidate does not count): each becomes pairs the
 * server sends checks to, so without a cap one client could aim the server's checks at any
 * address.
 */
export const MAX_REMOTE_CANDIDATES = 32;

/**
 * One werift RTCPeerConnection and everything that belongs to it: ICE trickle (with the
 * announced address applied), connection state, our own TWCC feedback for what the remote
 * sends, and SDP validation. A publisher transport answers the client's offers; a
 * subscriber transport makes the offers; a combined one (HTTP, WHIP, WHEP) answers an
 * offer that may both send and receive.
 */
export class RtcTransport extends TypedEmitter<RtcTransportEvents> {
  readonly role: TransportRole;
  readonly pc: RTCPeerConnection;
  private readonly announcedIp: string | undefined;
  private readonly maxSections: number;
  private readonly log: Logger;
  private readonly twcc: TwccFeedback | undefined;
  private disconnectedTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Every werift event this transport listens to, ended by close(). */
  private readonly subscriptions: { unSubscribe(): void }[] = [];
  private _state: TransportState = 'new';
  /** Candidates that arrived before the remote description; applied right after it. */
  private pendingCandidates: (IceCandidate | null)[] = [];
  private readonly watchedDtls = new WeakSet<RTCDtlsTransport>();
  /** Transport, address and port of each trickled candidate of the current ICE generation. */
  private readonly remoteCandidates = new Set<string>();
  private remoteUfrag: string | undefined;

  constructor(role: TransportRole, rtc: Config['rtc'], stats: MediaStats, log: Logger) {
    super();
    this.role = role;
    this.announcedIp = rtc.announcedIp;
    this.maxSections = rtc.maxMediaSections;
    this.log = log;
    const exts = headerExtensions();
    this.pc = new RTCPeerConnection({
      // One ICE transport per connection: with werift's default (max-compat) the per-m-line
      // transports of a first offer stay open after BUNDLE and even after close().
      bundlePolicy: 'max-bundle',
      codecs: codecsFor(rtc.codecs),
      // Subscribers get no transport-cc: we do not run a send-side estimator on werift.
      headerExtensions: role === 'subscriber' ? { audio: [exts.audio[0]!], video: exts.video.slice(0, 2) } : exts,
      iceAdditionalHostAddresses: rtc.extraHosts,
      iceUseIpv6: rtc.ipv6,
      icePortRange: rtc.portRange,
      iceInterfaceAddresses: rtc.interfaces.length > 0 ? { udp4: rtc.interfaces[0], udp6: undefined } : undefined,
      iceConsentTimeout: rtc.consentTimeoutSeconds,
      onPacketDropped: (reason) => {
        stats.mediaPacketsDropped[reason]++;
      },
    });
    if (role !== 'subscriber') {
      const twcc = new TwccFeedback({
        senderSsrc: Math.floor(Math.random() * 0xffffffff),
        send: (packet) => {
          const dtls = this.pc.dtlsTransports[0];
          if (dtls === undefined || dtls.state !== 'connected') return;
          stats.twccFeedbackSent++;
          sendRawRtcp(dtls, packet).catch(() => {});
        },
      });
      this.twcc = twcc;
      this.subscriptions.push(this.pc.onRemoteTransceiverAdded.subscribe((t) => this.installTwcc(t, twcc)));
    }
    this.subscriptions.push(
      this.pc.onIceCandidate.subscribe((c) => {
        if (this.closed) return;
        this.emit(
          'candidate',
          c === undefined
            ? null
            : { candidate: announceCandidate(c.candidate, this.announcedIp), sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null },
        );
      }),
      this.pc.onRemoteTransceiverAdded.subscribe((t) => {
        this.subscriptions.push(
          t.onTrack.subscribe((track, transceiver) => {
            if (!this.closed) this.emit('track', track, transceiver);
          }),
        );
      }),
      this.pc.connectionStateChange.subscribe((s) => this.onConnectionState(s)),
    );
  }

  get state(): TransportState {
    return this._state;
  }

  /** Our TWCC feedback instead of werift's malformed one (docs/werift.md); checked at the track's first packet. */
  private installTwcc(t: RTCRtpTransceiver, twcc: TwccFeedback): void {
    installTwcc(t.receiver, twcc);
  }

  /**
   * werift never carries a DTLS close into the connection state: after the peer's
   * close_notify (or a fatal alert) the connection stayed "connected" with no media.
   * A DTLS transport that was up and ends is a failed connection.
   */
  private watchDtls(): void {
    for (const dtls of this.pc.dtlsTransports) {
      if (this.watchedDtls.has(dtls)) continue;
      this.watchedDtls.add(dtls);
      let wasConnected = dtls.state === 'connected';
      this.subscriptions.push(
        dtls.onStateChange.subscribe((state) => {
          if (state === 'connected') wasConnected = true;
          if (this.closed || !wasConnected || (state !== 'closed' && state !== 'failed')) return;
          this.log.warn({ role: this.role, dtlsState: state }, 'DTLS ended');
          clearTimeout(this.disconnectedTimer);
          this._state = 'failed';
          this.emit('state', 'failed');
        }),
      );
    }
  }

  private onConnectionState(s: string): void {
    if (this.closed) return;
    const next = s as TransportState;
    this._state = next;
    clearTimeout(this.disconnectedTimer);
    this.disconnectedTimer = undefined;
    if (next === 'disconnected') {
      this.disconnectedTimer = setTimeout(() => {
        this._state = 'failed';
        this.emit('state', 'failed');
      }, DISCONNECTED_TIMEOUT_MS);
      this.disconnectedTimer.unref();
    }
    this.emit('state', next);
  }

  /** Applies a remote offer and returns our answer. */
  async answer(offerSdp: string): Promise<{ sdp: string; sections: MediaSection[] }> {
    const sections = assertPlausibleSdp(offerSdp, this.maxSections);
    await this.setRemote({ type: 'offer', sdp: offerSdp });
    return { sdp: await this.createAndSetLocal('answer'), sections };
  }

  /**
   * Between applying a remote offer and answering, the caller may add senders to the
   * transceivers the offer created; `answer()` runs both halves when nothing is in between.
   */
  async applyOffer(offerSdp: string): Promise<MediaSection[]> {
    const sections = assertPlausibleSdp(offerSdp, this.maxSections);
    await this.setRemote({ type: 'offer', sdp: offerSdp });
    return sections;
  }

  async createAnswer(): Promise<string> {
    return this.createAndSetLocal('answer');
  }

  async createOffer(): Promise<string> {
    return this.createAndSetLocal('offer');
  }

  async applyAnswer(answerSdp: string): Promise<void> {
    assertPlausibleSdp(answerSdp, this.maxSections);
    if (this.pc.signalingState !== 'have-local-offer') {
      throw new AppError('CONFLICT', 'no offer from the server is waiting for an answer');
    }
    assertAnswerTo(answerSdp, this.pc.localDescription?.sdp);
    await this.setRemote({ type: 'answer', sdp: answerSdp });
  }

  /** Withdraws our offer that was not answered (or whose answer failed): back to the last agreed description. */
  async rollback(): Promise<void> {
    if (this.closed || this.pc.signalingState !== 'have-local-offer') return;
    await this.pc.setLocalDescription({ type: 'rollback' });
  }

  async addCandidate(candidate: IceCandidate | null): Promise<void> {
    if (this.closed) return;
    if (candidate !== null && candidate.candidate !== '' && !CANDIDATE_LINE.test(candidate.candidate)) {
      throw new AppError('INVALID_CANDIDATE', 'ICE candidate is not a valid candidate line');
    }
    if (candidate !== null && candidate.candidate !== '') this.countCandidate(candidate.candidate);
    if (this.pc.remoteDescription === null) {
      if (this.pendingCandidates.length < 64) this.pendingCandidates.push(candidate);
      return;
    }
    await this.addCandidateNow(candidate);
  }

  private async addCandidateNow(candidate: IceCandidate | null): Promise<void> {
    if (candidate === null || candidate.candidate === '') return; // end of candidates: nothing to do
    try {
      await this.pc.addIceCandidate({
        candidate: candidate.candidate.replace(/^a=/, ''),
        sdpMid: candidate.sdpMid ?? undefined,
        sdpMLineIndex: candidate.sdpMLineIndex ?? undefined,
      });
    } catch (err) {
      throw new AppError('INVALID_CANDIDATE', `ICE candidate rejected: ${(err as Error).message}`);
    }
  }

  private countCandidate(line: string): void {
    // candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...
    const f = line.replace(/^a=/, '').split(/\s+/);
    const key = `${f[2]?.toLowerCase()} ${f[4]?.toLowerCase()} ${f[5]}`;
    if (this.remoteCandidates.has(key)) return;
    if (this.remoteCandidates.size >= MAX_REMOTE_CANDIDATES) {
      throw new AppError('INVALID_CANDIDATE', `too many ICE candidates for one connection (at most ${MAX_REMOTE_CANDIDATES} per ICE restart)`);
    }
    this.remoteCandidates.add(key);
  }

  private async setRemote(desc: { type: 'offer' | 'answer'; sdp: string }): Promise<void> {
    if (this.closed) throw new AppError('CONFLICT', 'transport is closed');
    try {
      await this.pc.setRemoteDescription(desc);
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'setRemoteDescription failed');
      throw new AppError('INVALID_SDP', `SDP rejected: ${(err as Error).message}`);
    }
    const ufrag = firstUfrag(desc.sdp);
    // An ICE restart: the candidates of the old generation are gone with it (those trickled
    // before the first description belong to the first generation).
    if (this.remoteUfrag !== undefined && ufrag !== this.remoteUfrag) this.remoteCandidates.clear();
    this.remoteUfrag = ufrag;
    this.watchDtls();
    const pending = this.pendingCandidates;
    this.pendingCandidates = [];
    for (const c of pending) await this.addCandidateNow(c).catch(() => {});
  }

  private async createAndSetLocal(type: 'offer' | 'answer'): Promise<string> {
    if (this.closed) throw new AppError('CONFLICT', 'transport is closed');
    try {
      const desc = type === 'offer' ? await this.pc.createOffer() : await this.pc.createAnswer();
      await this.pc.setLocalDescription(desc);
    } catch (err) {
      if (err instanceof AppError) throw err;
      throw new AppError('INVALID_SDP', `could not negotiate: ${(err as Error).message}`);
    }
    this.watchDtls();
    return announceSdp(this.pc.localDescription!.sdp, this.announcedIp);
  }

  /** Idempotent: stops timers, feedback and the PeerConnection. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this._state = 'closed';
    clearTimeout(this.disconnectedTimer);
    this.twcc?.close();
    for (const sub of this.subscriptions.splice(0)) sub.unSubscribe();
    this.removeAllListeners();
    this.pc.close().catch(() => {});
  }
}
