import { randomBytes } from 'node:crypto';
import type { MediaStreamTrack, RTCRtpTransceiver } from 'werift';
import type { Grant } from '../auth/tokens.ts';
import { AppError } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import { TypedEmitter } from '../common/typed-emitter.ts';
import type { Config } from '../config.ts';
import type { MediaStats } from './media-stats.ts';
import type { OverloadGuard } from './overload-guard.ts';
import { PublishedTrack } from './published-track.ts';
import { RtcTransport } from './rtc-transport.ts';
import { receives, sends, type MediaSection } from './sdp.ts';
import { SubscriberConnection } from './subscriber-connection.ts';
import type {
  ConnectionRole,
  IceCandidate,
  LeaveReason,
  ParticipantCapabilities,
  ParticipantDescription,
  ParticipantSignal,
  SignalSink,
  TrackSource,
} from './signals.ts';

interface ParticipantEvents extends Record<string, unknown[]> {
  trackPublished: [PublishedTrack];
  trackUnpublished: [PublishedTrack];
  trackMuted: [PublishedTrack];
  closed: [LeaveReason];
}

export interface ParticipantOptions {
  identity: string;
  name: string;
  grants: ReadonlySet<Grant>;
  capabilities: ParticipantCapabilities;
  /** Which protocol brought it ('ws', 'http', 'whip', 'whep'): shown by the admin API, never branched on here. */
  joinedVia: string;
  /** The token identity that opened it, if not its own (a WHEP player's random identity). */
  owner?: string;
  rtc: Config['rtc'];
  stats: MediaStats;
  /** The Sfu's: what its subscriptions shed under overload. */
  overload: OverloadGuard;
  log: Logger;
  /** Seconds-based grace for a dropped WebSocket, from config. */
  reconnectGraceMs: number;
}

/** Transports that never connect are given up after this long. */
const CONNECT_TIMEOUT_MS = 30_000;

export class Participant extends TypedEmitter<ParticipantEvents> {
  readonly sid = `PA_${randomBytes(6).toString('hex')}`;
  readonly identity: string;
  readonly name: string;
  readonly grants: ReadonlySet<Grant>;
  readonly capabilities: ParticipantCapabilities;
  readonly joinedVia: string;
  /** The token identity it acts for: its own, or for a WHEP player the viewer's. */
  readonly owner: string;
  readonly joinedAt = Date.now();
  readonly log: Logger;
  private readonly rtc: Config['rtc'];
  private readonly stats: MediaStats;
  private readonly overload: OverloadGuard;
  private readonly reconnectGraceMs: number;
  private publisher: RtcTransport | undefined;
  /** What it receives: on its subscriber connection, or (not renegotiating) on its one combined connection. */
  private receiving: SubscriberConnection | undefined;
  readonly published = new Map<string, PublishedTrack>();
  private readonly trackInfoByMid = new Map<string, { source?: TrackSource; name?: string }>();
  private sink: SignalSink | undefined;
  private graceTimer: NodeJS.Timeout | undefined;
  private connectTimer: NodeJS.Timeout | undefined;
  private _closed = false;

  constructor(opts: ParticipantOptions) {
    super();
    this.identity = opts.identity;
    this.name = opts.name;
    this.grants = opts.grants;
    this.capabilities = opts.capabilities;
    this.joinedVia = opts.joinedVia;
    this.owner = opts.owner ?? opts.identity;
    this.rtc = opts.rtc;
    this.stats = opts.stats;
    this.overload = opts.overload;
    this.reconnectGraceMs = opts.reconnectGraceMs;
    this.log = opts.log.child({ participant: this.identity, participantSid: this.sid });
  }

  get closed(): boolean {
    return this._closed;
  }

  get hidden(): boolean {
    return this.capabilities.hidden;
  }

  get canSubscribe(): boolean {
    return this.grants.has('subscribe');
  }

  /** Whether this participant receives what `owner` publishes (never its own tracks). */
  receivesFrom(owner: Participant): boolean {
    if (owner === this || !this.canSubscribe) return false;
    const from = this.capabilities.receives;
    return from.from === 'all' || (from.from === 'participant' && from.identity === owner.identity);
  }

  info(): ParticipantDescription {
    return { sid: this.sid, identity: this.identity, name: this.name, tracks: [...this.published.values()].map((t) => t.info()) };
  }

  /** The protocol session that speaks for this participant from now on (a reconnect brings a new one). */
  attachSink(sink: SignalSink): void {
    this.sink = sink;
  }

  /** Only the current sink detaches: a session replaced by a reconnect must not cut off its successor. */
  detachSink(sink: SignalSink): void {
    if (this.sink === sink) this.sink = undefined;
  }

  /** Hands a signal to this participant's client, if a session speaks for it now. */
  deliver(signal: ParticipantSignal): void {
    if (!this._closed) this.sink?.deliver(signal);
  }

  // ---- signaling presence ---------------------------------------------------------------

  /** The WebSocket is gone: keep media up for the grace period, then leave. */
  signalingLost(): void {
    if (this._closed || this.graceTimer !== undefined) return;
    this.log.info({ graceMs: this.reconnectGraceMs }, 'signaling lost, waiting for reconnect');
    this.graceTimer = setTimeout(() => this.close('signaling_lost'), this.reconnectGraceMs);
    this.graceTimer.unref();
    this.receiving?.suspend();
  }

  signalingResumed(): void {
    clearTimeout(this.graceTimer);
    this.graceTimer = undefined;
  }

  get awaitingReconnect(): boolean {
    return this.graceTimer !== undefined;
  }

  // ---- publishing (client offers) -------------------------------------------------------

  setTrackInfo(mid: string, info: { source?: TrackSource; name?: string }): void {
    this.trackInfoByMid.set(mid, info);
    for (const t of this.published.values()) {
      if (t.mid === mid) {
        if (info.source !== undefined) t.source = info.source;
        if (info.name !== undefined) t.name = info.name;
      }
    }
  }

  /** WebSocket participants: an offer on the publisher PeerConnection. */
  async handlePublisherOffer(sdp: string): Promise<string> {
    this.assertOpen();
    const transport = this.publisher ?? this.createTransport('publisher');
    this.publisher = transport;
    const sections = await transport.applyOffer(sdp);
    this.rejectUnwantedSends(sections);
    const answer = await transport.createAnswer();
    this.unpublishStopped(sections);
    return answer;
  }

  /**
   * One-PeerConnection participants: the offer's receiving m-lines are filled with
   * `subscribeTo` (in order, by kind), its sending m-lines become published tracks.
   */
  async handleCombinedOffer(sdp: string, subscribeTo: readonly PublishedTrack[]): Promise<string> {
    this.assertOpen();
    if (this.publisher !== undefined) {
      throw new AppError('CONFLICT', 'this participant already negotiated; renegotiation over HTTP is not supported, leave and join again');
    }
    const transport = this.createTransport('combined');
    this.publisher = transport;
    const sections = await transport.applyOffer(sdp);
    this.rejectUnwantedSends(sections);
    const receiving = this.receivingOn(transport);
    const queue = [...subscribeTo];
    const transceivers = transport.pc.getTransceivers();
    sections.forEach((section, index) => {
      if (!receives(section.direction) || section.stopped) return;
      const t = transceivers.find((x) => x.mid === section.mid) ?? transceivers[index];
      const i = queue.findIndex((track) => track.kind === section.kind);
      if (t === undefined || i === -1 || !this.canSubscribe) return;
      const [track] = queue.splice(i, 1);
      t.setDirection(sends(section.direction) ? 'sendrecv' : 'sendonly');
      receiving.attach(track!, t);
    });
    return transport.createAnswer();
  }

  /** Without the publish grant, any m-line the client would send on is refused. */
  private rejectUnwantedSends(sections: MediaSection[]): void {
    if (this.grants.has('publish')) return;
    if (sections.some((s) => sends(s.direction) && !s.stopped && s.kind !== 'application')) {
      throw new AppError('FORBIDDEN', 'token lacks the "publish" grant');
    }
  }

  /** A re-offer that stops or stops sending on an m-line ends the track published there. */
  private unpublishStopped(sections: MediaSection[]): void {
    for (const track of [...this.published.values()]) {
      const s = sections.find((x) => x.mid === track.mid);
      if (s === undefined || s.stopped || !sends(s.direction)) this.unpublish(track);
    }
  }

  private onRemoteTrack(track: MediaStreamTrack, transceiver: RTCRtpTransceiver): void {
    if (this._closed || !this.grants.has('publish')) return;
    const mid = transceiver.mid ?? '';
    if ([...this.published.values()].some((t) => t.mid === mid)) return;
    const codec = track.codec ?? transceiver.codecs[0];
    if (codec === undefined) return;
    const info = this.trackInfoByMid.get(mid);
    const published = new PublishedTrack({
      ownerSid: this.sid,
      ownerIdentity: this.identity,
      transceiver,
      track,
      codec,
      source: info?.source,
      name: info?.name,
      stats: this.stats,
      log: this.log,
    });
    this.published.set(published.sid, published);
    this.log.info({ track: published.sid, kind: published.kind, codec: published.codecName, mid }, 'track published');
    this.emit('trackPublished', published);
  }

  private unpublish(track: PublishedTrack): void {
    if (!this.published.delete(track.sid)) return;
    track.close();
    this.log.info({ track: track.sid }, 'track unpublished');
    this.emit('trackUnpublished', track);
  }

  setMuted(trackSid: string, muted: boolean): void {
    const track = this.published.get(trackSid);
    if (track === undefined) throw new AppError('TRACK_NOT_FOUND', `no published track "${trackSid}"`);
    if (track.muted === muted) return;
    track.muted = muted;
    this.emit('trackMuted', track);
  }

  // ---- subscribing (server offers) ------------------------------------------------------

  /** The SubscriberConnection on `transport`, made on first use. */
  private receivingOn(transport: RtcTransport): SubscriberConnection {
    if (this.receiving !== undefined) return this.receiving;
    const renegotiates = this.capabilities.renegotiates;
    const receiving = new SubscriberConnection({
      subscriberSid: this.sid,
      transport,
      renegotiates,
      maxSections: this.rtc.maxMediaSections,
      answerTimeoutMs: this.rtc.negotiationTimeoutMs,
      stats: this.stats,
      overload: this.overload,
      log: this.log,
    });
    receiving.on('offer', (offer) => this.deliver({ type: 'subscriptionOffer', offer }));
    receiving.on('candidate', (candidate) => this.deliver({ type: 'localCandidate', role: 'subscriber', candidate }));
    receiving.on('failed', () => this.close('negotiation_failed'));
    if (this.awaitingReconnect) receiving.suspend();
    this.receiving = receiving;
    return receiving;
  }

  subscribe(track: PublishedTrack): void {
    if (this._closed || !this.canSubscribe || !this.capabilities.renegotiates || this.receiving?.has(track.sid)) return;
    this.receiving ??= this.receivingOn(this.createTransport('subscriber'));
    this.receiving.subscribe(track);
  }

  unsubscribe(track: PublishedTrack): void {
    this.receiving?.unsubscribe(track);
  }

  /** After a WebSocket reconnect: an offer sent while the socket was down must be seen again. */
  resendPendingOffer(): void {
    this.receiving?.resendPendingOffer();
  }


  async handleSubscriberAnswer(sdp: string): Promise<void> {
    this.assertOpen();
    if (this.receiving === undefined || !this.capabilities.renegotiates) {
      throw new AppError('CONFLICT', 'no subscriber offer is waiting for an answer');
    }
    await this.receiving.handleAnswer(sdp);
  }

  async addCandidate(target: ConnectionRole, candidate: IceCandidate | null): Promise<void> {
    this.assertOpen();
    // A client may trickle publisher candidates before its offer arrives (they are gathered
    // while it sets its local description): the transport is made now and holds them.
    if (target === 'publisher' && this.publisher === undefined && this.capabilities.renegotiates && this.grants.has('publish')) {
      this.publisher = this.createTransport('publisher');
    }
    const transport = target === 'publisher' ? this.publisher : this.capabilities.renegotiates ? this.receiving?.transport : undefined;
    if (transport === undefined) throw new AppError('CONFLICT', `no ${target} connection to add a candidate to`);
    await transport.addCandidate(candidate);
  }

  // ---- lifecycle ------------------------------------------------------------------------

  private createTransport(role: 'publisher' | 'subscriber' | 'combined'): RtcTransport {
    const transport = new RtcTransport(role, this.rtc, this.stats, this.log);
    // The subscriber's candidates go through its SubscriberConnection, which holds them until its first offer.
    if (role !== 'subscriber') transport.on('candidate', (candidate) => this.deliver({ type: 'localCandidate', role: 'publisher', candidate }));
    transport.on('track', (track, transceiver) => this.onRemoteTrack(track, transceiver));
    transport.on('state', (state) => {
      this.log.debug({ role, state }, 'transport state');
      if (state === 'connected') clearTimeout(this.connectTimer);
      if (state === 'failed' || state === 'closed') this.close('connection_failed');
    });
    clearTimeout(this.connectTimer);
    this.connectTimer = setTimeout(() => {
      const transports = [this.publisher, this.receiving?.transport].filter((t) => t !== undefined);
      if (transports.some((t) => t.state !== 'connected')) {
        this.log.warn('transport never connected');
        this.close('connection_failed');
      }
    }, CONNECT_TIMEOUT_MS);
    this.connectTimer.unref();
    return transport;
  }

  private assertOpen(): void {
    if (this._closed) throw new AppError('PEER_NOT_FOUND', 'participant has left');
  }

  /** Idempotent; unpublishes (so the room can tell the others), then frees every resource. */
  close(reason: LeaveReason): void {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this.graceTimer);
    clearTimeout(this.connectTimer);
    for (const track of [...this.published.values()]) {
      this.published.delete(track.sid);
      track.close();
      this.emit('trackUnpublished', track);
    }
    this.receiving?.close();
    this.receiving = undefined;
    this.publisher?.close();
    this.publisher = undefined;
    this.log.info({ reason }, 'participant left');
    this.emit('closed', reason);
    this.sink = undefined;
    this.removeAllListeners();
  }
}
