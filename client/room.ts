import type { IceCandidateInit, ParticipantInfo, ServerMessage } from '../src/signaling/messages.ts';
import { E2eeSession, type E2eeKey, type E2eeOptions, e2eeApi, type E2eeErrorInfo, e2eeVideoCodecs, validKeyIndex } from './e2ee/e2ee.ts';
import { type ConnectionState, E2eeError, Emitter, RoomError, type RoomEvents } from './events.ts';
import { type LocalTrack, RemoteParticipant, type TrackKind } from './participant.ts';
import { type ServerPush, SignalClient } from './signal-client.ts';
import type { ParticipantStats } from './stats.ts';
import { collectStats, StatsSampler } from './stats-collector.ts';

export interface ConnectOptions {
  /** Display name shown to the others (defaults to the token's name, then its identity). */
  name?: string;
  /** Attempts to get back in after the connection is lost, before giving up (default 9: about 32 s). */
  maxReconnectAttempts?: number;
  /**
   * The key of an end-to-end encrypted room (docs/e2ee.md): `{ passphrase }` shared out of
   * band, or `{ key }` (16, 24 or 32 bytes of AES key material). Never sent to the server.
   * Used only if the room turns out to be E2EE (`joined.room.e2ee`); without it such a
   * room can be joined but not published to, and nothing received decrypts.
   */
  e2ee?: E2eeOptions;
}

export interface VideoOptions {
  deviceId?: string;
  width?: number;
  height?: number;
  frameRate?: number;
}

export interface PublishOptions {
  audio?: boolean | { deviceId?: string };
  video?: boolean | VideoOptions;
}

type OfferMessage = Extract<ServerMessage, { type: 'offer' }>;
type OfferTrack = OfferMessage['tracks'][string];

/** Server refusals that no retry can fix: recovery stops at once. */
const FATAL_CODES = new Set(['UNAUTHORIZED', 'TOKEN_EXPIRED', 'FORBIDDEN', 'ROOM_FULL', 'TOO_MANY_ROOMS', 'UNSUPPORTED_PROTOCOL', 'E2EE_MODE_MISMATCH']);
/** `left` reasons after which the socket closes and the SDK joins again on its own. */
const REJOIN_REASONS = new Set(['client_left', 'connection_failed', 'media_worker_failed', 'room_moved']);
/** How long an ICE restart of the publisher may take before we rejoin instead. */
const ICE_RESTART_TIMEOUT_MS = 10_000;
/** How long `leave` waits for the server to confirm before closing anyway. */
const LEAVE_TIMEOUT_MS = 2_000;

/**
 * The service's base URL (`http(s)://host:port`) or its WebSocket URL: the WebSocket URL.
 * A bare host URL gets the documented path `/video/ws`.
 */
export function signalingUrl(url: string): string {
  const u = new URL(url, globalThis.location?.href);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.pathname === '/' || u.pathname === '') u.pathname = '/video/ws';
  return u.toString();
}

/**
 * One participant's presence in one room: the signaling socket, the publisher
 * PeerConnection (we offer) and the subscriber PeerConnection (the server offers), the
 * other participants, and recovery when any of these breaks. Protocol: docs/signaling.md.
 */
export class Room extends Emitter<RoomEvents> {
  readonly url: string;
  /** The others in the room, by participant sid. */
  readonly participants = new Map<string, RemoteParticipant>();
  /** What we publish; kept across rebuilds so it can be published again. */
  readonly localTracks: LocalTrack[] = [];
  /** Us, as the server knows us; the sid changes when the room is rebuilt after a rejoin. */
  localParticipant: { sid: string; identity: string; name: string } = { sid: '', identity: '', name: '' };
  /** Why the room ended, once `state` is `disconnected`. */
  disconnectReason: RoomError | undefined;
  /** The room's name, as the server knows it (from `joined`). */
  roomName = '';

  private readonly token: string;
  private readonly name: string | undefined;
  private readonly maxReconnectAttempts: number;
  private _state: ConnectionState = 'connecting';
  private signal: SignalClient | undefined;
  private iceServers: RTCIceServer[] = [];
  private publisher: RTCPeerConnection | undefined;
  private subscriber: RTCPeerConnection | undefined;
  /** The publisher transceiver that sends each local track. */
  private readonly senders = new Map<LocalTrack, RTCRtpTransceiver>();
  /** What each subscriber m-line carries, from the server's latest offer. */
  private offerTracks: Record<string, OfferTrack> = {};
  /** Subscriber m-lines whose media we have handed out with `trackSubscribed`. */
  private readonly subscribed = new Map<string, OfferTrack>();
  /** Remote candidates that came before the remote description they belong to. */
  private readonly pendingCandidates = { publisher: [] as RTCIceCandidateInit[], subscriber: [] as RTCIceCandidateInit[] };
  /** Publisher negotiations and subscriber offers each run one at a time, in order. */
  private publisherQueue: Promise<void> = Promise.resolve();
  private subscriberQueue: Promise<void> = Promise.resolve();
  private readonly sampler = new StatsSampler();
  private recovering = false;
  private iceRestartTimer: ReturnType<typeof setTimeout> | undefined;
  private retry: { timer: ReturnType<typeof setTimeout>; wake: () => void } | undefined;
  private leaving: Promise<void> | undefined;
  private readonly e2eeOptions: E2eeOptions | undefined;
  /** The room's mode, fixed by the first join; a later join that says otherwise ends the room. */
  private _e2ee: boolean | undefined;
  private e2eeSession: E2eeSession | undefined;
  /** Settles when the first key is installed; undefined while we have none. */
  private keyReady: Promise<void> | undefined;
  private keyFailed = false;
  private _recording = false;

  private constructor(url: string, token: string, opts: ConnectOptions) {
    super();
    this.url = signalingUrl(url);
    this.token = token;
    this.name = opts.name;
    this.maxReconnectAttempts = opts.maxReconnectAttempts ?? 9;
    this.e2eeOptions = opts.e2ee;
  }

  /** Joins the room; rejects with a RoomError (e.g. `UNAUTHORIZED`, `CONNECT_FAILED`). */
  static async connect(url: string, token: string, opts: ConnectOptions = {}): Promise<Room> {
    const room = new Room(url, token, opts);
    try {
      await room.join();
    } catch (err) {
      room.teardown(asRoomError(err));
      throw err;
    }
    return room;
  }

  get state(): ConnectionState {
    return this._state;
  }

  /** True when the room is end-to-end encrypted (known once joined; fixed for the room's life). */
  get e2ee(): boolean {
    return this._e2ee === true;
  }

  /** Which browser API encrypts and decrypts frames here, in an E2EE room; undefined otherwise. */
  get e2eeApi(): string | undefined {
    return this.e2eeSession?.api;
  }

  /** The key slot our senders encrypt with (E2EE rooms). */
  get e2eeKeyIndex(): number | undefined {
    return this.e2eeSession?.keyIndex;
  }

  /** True while the room is being recorded (the server tells everyone: `recordingStatusChanged`). */
  get recording(): boolean {
    return this._recording;
  }

  /** Left, refused or given up: nothing may start any more. */
  private get ended(): boolean {
    return this._state === 'disconnected';
  }

  // ---- publishing -----------------------------------------------------------------------

  /**
   * Captures camera and/or microphone and publishes them. Rejects with `MEDIA_DENIED` or
   * `MEDIA_UNAVAILABLE` when capture fails; the room stays joined (as a viewer).
   */
  async publish(opts: PublishOptions = { audio: true, video: true }): Promise<LocalTrack[]> {
    if (this.ended) throw new RoomError('SIGNALING_CLOSED', 'the room is disconnected');
    if (this._e2ee === true) await this.requireEncryption();
    const video = opts.video === undefined || opts.video === false ? false : opts.video === true ? {} : opts.video;
    const audio = opts.audio === undefined || opts.audio === false ? false : opts.audio === true ? {} : opts.audio;
    let stream: MediaStream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: audio === false ? false : { deviceId: audio.deviceId === undefined ? undefined : { exact: audio.deviceId } },
        video:
          video === false
            ? false
            : {
                deviceId: video.deviceId === undefined ? undefined : { exact: video.deviceId },
                width: { ideal: video.width ?? 640 },
                height: { ideal: video.height ?? 480 },
                frameRate: video.frameRate === undefined ? undefined : { ideal: video.frameRate },
              },
      });
    } catch (err) {
      throw mediaError(err);
    }
    const added: LocalTrack[] = stream.getTracks().map((mediaTrack) => ({
      sid: undefined,
      kind: mediaTrack.kind as TrackKind,
      source: mediaTrack.kind === 'video' ? 'camera' : 'microphone',
      mediaTrack,
      muted: false,
    }));
    if (this.ended) {
      for (const t of added) t.mediaTrack.stop();
      throw new RoomError('SIGNALING_CLOSED', 'the room disconnected while the camera started');
    }
    this.localTracks.push(...added);
    // While recovering, the rejoin (or the resumed connection's next offer) publishes them.
    if (this.signal?.isOpen) await this.negotiatePublisher(false);
    return added;
  }

  setMicrophoneMuted(muted: boolean): Promise<void> {
    return this.setSourceMuted('microphone', muted);
  }

  setCameraMuted(muted: boolean): Promise<void> {
    return this.setSourceMuted('camera', muted);
  }

  /**
   * Stops sending (the sender's track is replaced by none, so not even black frames or
   * silence go out) and tells the server, which tells the others.
   */
  private async setSourceMuted(source: LocalTrack['source'], muted: boolean): Promise<void> {
    for (const t of this.localTracks) {
      if (t.source !== source || t.muted === muted) continue;
      t.muted = muted;
      t.mediaTrack.enabled = !muted;
      await this.senders.get(t)?.sender.replaceTrack(muted ? null : t.mediaTrack);
      if (t.sid !== undefined && this.signal?.isOpen) await this.signal.request({ type: 'mute', trackSid: t.sid, muted }, 'ack');
      this.emit('trackMuted', t, undefined);
    }
  }

  /** The PeerConnection settings: in an E2EE room, what the frame transform API needs. */
  private peerConnectionConfig(): RTCConfiguration {
    return { iceServers: this.iceServers, bundlePolicy: 'max-bundle', ...this.e2eeSession?.peerConnectionConfig } as RTCConfiguration;
  }

  private createPublisher(): RTCPeerConnection {
    const pc = new RTCPeerConnection(this.peerConnectionConfig());
    pc.onicecandidate = (e) => this.signal?.send({ type: 'candidate', target: 'publisher', candidate: candidateToWire(e.candidate) });
    pc.onconnectionstatechange = () => this.onPeerConnectionState(pc);
    this.publisher = pc;
    return pc;
  }

  /**
   * One publisher offer/answer round: adds a transceiver for each local track that has
   * none yet, tells the server each new m-line's source, and applies the answer.
   */
  private negotiatePublisher(iceRestart: boolean): Promise<void> {
    const run = async () => {
      const signal = this.signal;
      if (signal === undefined || !signal.isOpen) return;
      // Never let a frame out unencrypted in an E2EE room.
      if (this._e2ee === true && this.e2eeSession === undefined) throw new RoomError('E2EE_UNSUPPORTED', 'this browser cannot encrypt media frames');
      const pc = this.publisher ?? this.createPublisher();
      const fresh: LocalTrack[] = [];
      for (const t of this.localTracks) {
        if (this.senders.has(t)) continue;
        const transceiver = pc.addTransceiver(t.mediaTrack, { direction: 'sendonly' });
        if (this.e2eeSession !== undefined) {
          this.e2eeSession.attachSender(transceiver.sender, t.kind);
          if (t.kind === 'video') preferE2eeCodecs(transceiver);
        }
        if (t.muted) await transceiver.sender.replaceTrack(null);
        this.senders.set(t, transceiver);
        fresh.push(t);
      }
      if (this.senders.size === 0) return;
      await pc.setLocalDescription(await pc.createOffer({ iceRestart }));
      for (const t of fresh) {
        const mid = this.senders.get(t)?.mid;
        if (mid !== null && mid !== undefined) signal.send({ type: 'track_info', mid, source: t.source });
      }
      const answer = await signal.request({ type: 'offer', target: 'publisher', sdp: pc.localDescription!.sdp }, 'answer');
      if (pc !== this.publisher) return; // rebuilt meanwhile
      await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
      await this.flushCandidates('publisher', pc);
    };
    const next = this.publisherQueue.then(run);
    this.publisherQueue = next.catch(() => {});
    return next;
  }

  // ---- subscribing ----------------------------------------------------------------------

  private createSubscriber(): RTCPeerConnection {
    const pc = new RTCPeerConnection(this.peerConnectionConfig());
    pc.onicecandidate = (e) => this.signal?.send({ type: 'candidate', target: 'subscriber', candidate: candidateToWire(e.candidate) });
    pc.onconnectionstatechange = () => this.onPeerConnectionState(pc);
    // Fires inside setRemoteDescription, after `offerTracks` was set for that offer.
    pc.ontrack = (e) => this.onRemoteTrack(e);
    this.subscriber = pc;
    return pc;
  }

  private onSubscriberOffer(msg: OfferMessage): void {
    const run = async () => {
      const pc = this.subscriber ?? this.createSubscriber();
      this.offerTracks = msg.tracks;
      await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      if (pc !== this.subscriber) return;
      this.signal?.send({ type: 'answer', target: 'subscriber', sdp: pc.localDescription!.sdp });
      await this.flushCandidates('subscriber', pc);
      // m-lines the offer no longer lists carry nothing any more.
      for (const [mid, t] of [...this.subscribed]) if (msg.tracks[mid]?.trackSid !== t.trackSid) this.endSubscription(mid);
    };
    this.subscriberQueue = this.subscriberQueue.then(run).catch((err: unknown) => this.emit('error', asRoomError(err)));
  }

  private onRemoteTrack(e: RTCTrackEvent): void {
    const mid = e.transceiver.mid;
    // Every receiver, at once (insertable streams must be taken inside this event).
    this.e2eeSession?.attachReceiver(e.receiver, e.track.kind === 'audio' ? 'audio' : 'video', mid);
    const info = mid === null ? undefined : this.offerTracks[mid];
    if (mid === null || info === undefined) return;
    let participant = this.participants.get(info.participantSid);
    if (participant === undefined) {
      // The offer can name someone we have not been told about yet (e.g. after a resume).
      participant = new RemoteParticipant({ sid: info.participantSid, identity: info.identity, name: info.identity, tracks: [] });
      this.participants.set(participant.sid, participant);
      this.emit('participantJoined', participant);
    }
    const track =
      participant.tracks.get(info.trackSid) ??
      participant.addTrack({ sid: info.trackSid, kind: info.kind, source: info.source, name: info.name, codec: '', muted: false, mid: '' });
    if (this.subscribed.has(mid)) this.endSubscription(mid);
    track.mediaTrack = e.track;
    this.subscribed.set(mid, info);
    this.emit('trackSubscribed', e.track, track, participant);
  }

  private endSubscription(mid: string): void {
    const info = this.subscribed.get(mid);
    if (info === undefined) return;
    this.subscribed.delete(mid);
    const participant = this.participants.get(info.participantSid);
    const track = participant?.tracks.get(info.trackSid);
    if (participant === undefined || track?.mediaTrack === undefined) return;
    const media = track.mediaTrack;
    track.mediaTrack = undefined;
    this.emit('trackUnsubscribed', media, track, participant);
  }

  private endSubscriptionsOf(participantSid: string, trackSid?: string): void {
    for (const [mid, t] of [...this.subscribed]) {
      if (t.participantSid === participantSid && (trackSid === undefined || t.trackSid === trackSid)) this.endSubscription(mid);
    }
  }

  // ---- server messages ------------------------------------------------------------------

  private onServerMessage(msg: ServerPush): void {
    switch (msg.type) {
      case 'offer':
        return this.onSubscriberOffer(msg);
      case 'candidate':
        return void this.addRemoteCandidate(msg.target, msg.candidate);
      case 'participant_joined':
        return this.addParticipant(msg.participant);
      case 'participant_left':
        return this.removeParticipant(msg.participantSid);
      case 'track_published':
        if (msg.participantSid === this.localParticipant.sid) return this.onOwnTrackPublished(msg.track);
        this.participants.get(msg.participantSid)?.addTrack(msg.track);
        return;
      case 'track_unpublished': {
        this.endSubscriptionsOf(msg.participantSid, msg.trackSid);
        this.participants.get(msg.participantSid)?.tracks.delete(msg.trackSid);
        return;
      }
      case 'track_muted': {
        if (msg.participantSid === this.localParticipant.sid) return;
        const participant = this.participants.get(msg.participantSid);
        const track = participant?.tracks.get(msg.trackSid);
        if (track === undefined || track.muted === msg.muted) return;
        track.muted = msg.muted;
        this.emit('trackMuted', track, participant);
        return;
      }
      case 'left':
        // Our own leave is handled by `leave()`; connection_failed, media_worker_failed and
        // room_moved close the socket next, which starts a rejoin (the room comes back on a
        // live worker, or on the node it moved to); the rest end the room.
        if (REJOIN_REASONS.has(msg.reason)) return;
        this.teardown(new RoomError('LEFT', leftMessage(msg.reason)));
        return;
      case 'recording_status':
        return this.setRecordingState(msg.active);
      default:
        // Anything newer: not part of what this SDK speaks.
        return;
    }
  }

  /** The server confirmed one of our tracks: learn its sid, and restore a mute it missed. */
  /** Ties the server's sid to our track by the m-line it names (tracks of one kind and source are told apart so). */
  private onOwnTrackPublished(info: { sid: string; kind: TrackKind; source: string; mid?: string }): void {
    const t =
      this.localTracks.find((x) => x.sid === undefined && info.mid !== undefined && this.senders.get(x)?.mid === info.mid) ??
      this.localTracks.find((x) => x.sid === undefined && x.source === info.source) ??
      this.localTracks.find((x) => x.sid === undefined && x.kind === info.kind);
    if (t === undefined) return;
    t.sid = info.sid;
    if (t.muted) this.signal?.send({ type: 'mute', trackSid: info.sid, muted: true });
  }

  private addParticipant(info: ParticipantInfo): void {
    const existing = this.participants.get(info.sid);
    if (existing !== undefined) {
      for (const t of info.tracks) existing.addTrack(t);
      return;
    }
    const p = new RemoteParticipant(info);
    this.participants.set(p.sid, p);
    this.emit('participantJoined', p);
  }

  private removeParticipant(sid: string): void {
    const p = this.participants.get(sid);
    if (p === undefined) return;
    this.endSubscriptionsOf(sid);
    this.participants.delete(sid);
    this.emit('participantLeft', p);
  }

  private async addRemoteCandidate(target: 'publisher' | 'subscriber', candidate: IceCandidateInit | null): Promise<void> {
    // null / "" only say the server finished gathering: nothing to apply.
    if (candidate === null || candidate.candidate === '') return;
    const init: RTCIceCandidateInit = {
      candidate: candidate.candidate,
      sdpMid: candidate.sdpMid ?? null,
      sdpMLineIndex: candidate.sdpMLineIndex ?? null,
      usernameFragment: candidate.usernameFragment ?? null,
    };
    const pc = target === 'publisher' ? this.publisher : this.subscriber;
    if (pc === undefined || pc.remoteDescription === null) {
      this.pendingCandidates[target].push(init);
      return;
    }
    await pc.addIceCandidate(init).catch((err: unknown) => this.emit('error', new RoomError('INVALID_CANDIDATE', String(err))));
  }

  private async flushCandidates(target: 'publisher' | 'subscriber', pc: RTCPeerConnection): Promise<void> {
    const pending = this.pendingCandidates[target].splice(0);
    for (const c of pending) await pc.addIceCandidate(c).catch(() => {});
  }

  // ---- joining, recovery ----------------------------------------------------------------

  /**
   * Opens a socket and joins. Within the server's reconnect grace the server resumes our
   * participant (`resumed: true`) and the PeerConnections carry on; otherwise everything
   * media-related is rebuilt and the local tracks are published again.
   */
  private async join(): Promise<void> {
    const signal = await SignalClient.open(this.url);
    if (this.ended) {
      signal.close();
      return;
    }
    signal.on('message', (m) => this.onServerMessage(m));
    signal.on('error', (e) => this.emit('error', e));
    signal.on('close', () => this.onSignalLost(signal));
    let joined: Extract<ServerMessage, { type: 'joined' }>;
    try {
      joined = await signal.request({ type: 'join', protocol: 1, token: this.token, name: this.name }, 'joined');
    } catch (err) {
      signal.close();
      throw err;
    }
    if (this.ended) {
      signal.close();
      return;
    }
    const hasMedia = this.publisher !== undefined || this.subscriber !== undefined;
    if (joined.resumed && !hasMedia) {
      // The server kept a participant whose PeerConnections we already closed: end it and
      // come back as a new one.
      signal.send({ type: 'leave' });
      signal.close();
      throw new RoomError('RESUME_MISMATCH', 'the server resumed a participant whose media is gone; rejoining');
    }
    if (this._e2ee !== undefined && joined.room.e2ee !== this._e2ee) {
      // The room was closed and created again in the other mode: never carry on in it.
      signal.send({ type: 'leave' });
      signal.close();
      throw new RoomError('E2EE_MODE_MISMATCH', `the room is ${joined.room.e2ee ? 'now' : 'no longer'} end-to-end encrypted`);
    }
    this.signal = signal;
    this.roomName = joined.room.name;
    if (this._e2ee === undefined) {
      this._e2ee = joined.room.e2ee;
      // Before any PeerConnection exists: they are created with what the transforms need.
      if (this._e2ee) this.startE2ee();
    }
    this.setRecordingState(joined.room.recording);
    this.iceServers = joined.iceServers.map((s) => ({ urls: s.urls, username: s.username, credential: s.credential }));
    this.localParticipant = { sid: joined.participant.sid, identity: joined.participant.identity, name: joined.participant.name };
    if (joined.resumed) {
      this.reconcile(joined.room.participants, joined.participant.tracks);
    } else {
      this.closeMedia();
      for (const p of joined.room.participants) this.addParticipant(p);
    }
    // After a rebuild: everything we published before; after a resume: what `publish()`
    // captured while the socket was down. Nothing on the first join.
    if (this.localTracks.some((t) => !this.senders.has(t))) await this.negotiatePublisher(false);
    this.setState('connected');
  }

  /** After a resume: catch up with the joins, leaves and mutes we missed while away. */
  private reconcile(others: ParticipantInfo[], ownTracks: ParticipantInfo['tracks']): void {
    const present = new Set(others.map((p) => p.sid));
    for (const sid of [...this.participants.keys()]) if (!present.has(sid)) this.removeParticipant(sid);
    for (const info of others) {
      const known = this.participants.get(info.sid);
      if (known === undefined) {
        this.addParticipant(info);
        continue;
      }
      for (const t of info.tracks) {
        const track = known.tracks.get(t.sid);
        if (track !== undefined && track.muted !== t.muted) {
          track.muted = t.muted;
          this.emit('trackMuted', track, known);
        }
        known.addTrack(t);
      }
    }
    // Mutes we changed while the socket was down.
    for (const t of this.localTracks) {
      const server = ownTracks.find((x) => x.sid === t.sid);
      if (t.sid !== undefined && server !== undefined && server.muted !== t.muted) {
        this.signal?.send({ type: 'mute', trackSid: t.sid, muted: t.muted });
      }
    }
  }

  private onSignalLost(signal: SignalClient): void {
    if (signal !== this.signal || this.ended) return;
    this.signal = undefined;
    void this.recover();
  }

  /** A PeerConnection failed: ICE-restart the publisher; rejoin for the subscriber. */
  private onPeerConnectionState(pc: RTCPeerConnection): void {
    if (this.ended) return;
    if (pc === this.publisher && pc.connectionState === 'connected' && this.iceRestartTimer !== undefined) {
      clearTimeout(this.iceRestartTimer);
      this.iceRestartTimer = undefined;
      if (!this.recovering) this.setState('connected');
      return;
    }
    if (pc.connectionState !== 'failed') return;
    if (pc === this.publisher && this.signal?.isOpen && this.iceRestartTimer === undefined && !this.recovering) {
      this.setState('reconnecting');
      this.iceRestartTimer = setTimeout(() => {
        this.iceRestartTimer = undefined;
        void this.rejoin();
      }, ICE_RESTART_TIMEOUT_MS);
      this.negotiatePublisher(true).catch(() => void this.rejoin());
    } else if (pc === this.publisher || pc === this.subscriber) {
      void this.rejoin();
    }
  }

  /** Leaves on the server (so it cannot resume a broken participant) and joins afresh. */
  private async rejoin(): Promise<void> {
    if (this.recovering || this.ended) return;
    clearTimeout(this.iceRestartTimer);
    this.iceRestartTimer = undefined;
    const old = this.signal;
    this.signal = undefined;
    this.closeMedia();
    if (old !== undefined) await leaveAndClose(old);
    await this.recover();
  }

  /** Joins again with exponential backoff until it works, a refusal is final, or we give up. */
  private async recover(): Promise<void> {
    if (this.recovering || this.ended) return;
    this.recovering = true;
    this.setState('reconnecting');
    let last: RoomError | undefined;
    for (let attempt = 0; attempt < this.maxReconnectAttempts; attempt++) {
      // At once, then 0.25, 0.5, 1, 2, 4, 8, 8… s: a node that died is routed around within
      // a second or two (docs/cluster.md), so the first retries land well inside 10 s.
      if (attempt > 0) await this.sleep(Math.min(250 * 2 ** (attempt - 1), 8000));
      if (this.ended) return;
      try {
        await this.join();
        this.recovering = false;
        // A PeerConnection that failed while the socket was down was left alone until now.
        for (const pc of [this.publisher, this.subscriber]) if (pc?.connectionState === 'failed') this.onPeerConnectionState(pc);
        return;
      } catch (err) {
        last = asRoomError(err);
        if (FATAL_CODES.has(last.code)) break;
      }
    }
    this.recovering = false;
    const reason =
      last !== undefined && FATAL_CODES.has(last.code)
        ? last
        : new RoomError('RECONNECT_FAILED', `lost the connection and could not get back in (${last?.message ?? 'no attempt'})`);
    this.teardown(reason);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.retry = undefined;
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.retry = { timer, wake };
    });
  }

  /** Closes both PeerConnections and forgets everything learnt through them. */
  private closeMedia(): void {
    for (const sid of [...this.participants.keys()]) this.removeParticipant(sid);
    this.publisher?.close();
    this.subscriber?.close();
    this.publisher = undefined;
    this.subscriber = undefined;
    this.senders.clear();
    this.subscribed.clear();
    this.offerTracks = {};
    this.pendingCandidates.publisher.length = 0;
    this.pendingCandidates.subscriber.length = 0;
    for (const t of this.localTracks) t.sid = undefined;
  }

  // ---- end-to-end encryption ------------------------------------------------------------

  /** Starts the transform worker of an E2EE room and installs the key given to `connect`. */
  private startE2ee(): void {
    const api = e2eeApi(this.e2eeOptions?.api);
    if (api === undefined) {
      this.emit('error', new RoomError('E2EE_UNSUPPORTED', 'this room is end-to-end encrypted, and this browser cannot encrypt media frames'));
      return;
    }
    this.e2eeSession = new E2eeSession({
      api,
      roomName: this.roomName,
      workerUrl: this.e2eeOptions?.workerUrl,
      onDecryptError: (info) => this.onDecryptError(info),
    });
    const opts = this.e2eeOptions;
    if (opts === undefined) return;
    const key: E2eeKey | undefined =
      opts.key !== undefined ? { key: opts.key } : opts.passphrase !== undefined && opts.passphrase !== '' ? { passphrase: opts.passphrase } : undefined;
    if (key === undefined) return;
    this.setE2eeKey(key, opts.keyIndex ?? 0).catch((err: unknown) => this.emit('error', asRoomError(err)));
  }

  private onDecryptError(info: E2eeErrorInfo): void {
    const sub = info.mid === undefined ? undefined : this.subscribed.get(info.mid);
    const participant = sub === undefined ? undefined : this.participants.get(sub.participantSid);
    const track = sub === undefined ? undefined : participant?.tracks.get(sub.trackSid);
    this.emit('e2eeError', new E2eeError(info, participant, track));
  }

  /**
   * Installs a key in slot `index` (0–15) of this E2EE room: a passphrase (string or
   * `{ passphrase }`) or raw key material (`Uint8Array` or `{ key }`). Resolves once it can
   * be used. The first key installed is also the one we encrypt with; to rotate, install
   * the new key on every participant, then `useE2eeKey(index)` (docs/e2ee.md).
   */
  async setE2eeKey(key: string | Uint8Array | E2eeKey, index = 0): Promise<void> {
    const session = this.requireSession();
    const k: E2eeKey = typeof key === 'string' ? { passphrase: key } : key instanceof Uint8Array ? { key } : key;
    // The first key (or the first after one that failed) is also the one we encrypt with.
    const first = this.keyReady === undefined || this.keyFailed;
    const installed = session.setKey(k, index).catch((err: unknown) => {
      if (first) this.keyFailed = true;
      throw new RoomError('E2EE_KEY_INVALID', `the end-to-end encryption key could not be installed: ${err instanceof Error ? err.message : String(err)}`);
    });
    if (first) {
      this.keyFailed = false;
      session.useKey(index);
      this.keyReady = installed;
    }
    await installed;
  }

  /** Our senders encrypt with the key in slot `index` from now on (install it everywhere first). */
  useE2eeKey(index: number): void {
    const session = this.requireSession();
    if (!validKeyIndex(index)) throw new RoomError('E2EE_KEY_INVALID', 'key index must be an integer 0…15');
    session.useKey(index);
  }

  private requireSession(): E2eeSession {
    if (this._e2ee !== true) throw new RoomError('E2EE_NOT_ENABLED', 'this room is not end-to-end encrypted');
    if (this.e2eeSession === undefined) throw new RoomError('E2EE_UNSUPPORTED', 'this browser cannot encrypt media frames');
    return this.e2eeSession;
  }

  /** Publishing into an E2EE room needs a key in the slot we encrypt with. */
  private async requireEncryption(): Promise<void> {
    const session = this.requireSession();
    if (this.keyReady === undefined) {
      throw new RoomError(
        'E2EE_KEY_REQUIRED',
        'this room is end-to-end encrypted: give its passphrase or key (Room.connect(…, { e2ee }) or room.setE2eeKey) before publishing',
      );
    }
    await this.keyReady;
    if (!session.canEncrypt) throw new RoomError('E2EE_KEY_REQUIRED', `no key in slot ${session.keyIndex}, the one we encrypt with`);
  }

  // ---- recording ------------------------------------------------------------------------

  /**
   * Starts or stops recording the room (needs the `record` grant). Rejects with the server's
   * code: `FORBIDDEN`, `E2EE_RECORDING_FORBIDDEN` (E2EE rooms are never recorded), `CONFLICT`
   * (already in that state). Everyone, us included, gets `recordingStatusChanged`.
   */
  async setRecording(active: boolean): Promise<void> {
    if (this.signal === undefined || !this.signal.isOpen) throw new RoomError('SIGNALING_CLOSED', 'not connected to the room');
    await this.signal.request({ type: 'recording', active }, 'ack');
    this.setRecordingState(active);
  }

  private setRecordingState(active: boolean): void {
    if (this._recording === active) return;
    this._recording = active;
    this.emit('recordingStatusChanged', active);
  }

  // ---- stats ----------------------------------------------------------------------------

  /**
   * Per participant: what we receive from each other participant, and what we send
   * (bitrate over the last second, packet loss, round trip time, video size and frames).
   */
  async getStats(): Promise<ParticipantStats[]> {
    const [pub, sub] = await Promise.all([this.publisher?.getStats(), this.subscriber?.getStats()]);
    const localByMid = new Map<string, LocalTrack>();
    for (const [t, transceiver] of this.senders) if (transceiver.mid !== null) localByMid.set(transceiver.mid, t);
    return collectStats(this.sampler, {
      local: this.localParticipant,
      publisher: pub,
      subscriber: sub,
      localByMid,
      remoteByMid: this.subscribed,
      participants: this.participants,
    });
  }

  // ---- state, leaving -------------------------------------------------------------------

  private setState(state: ConnectionState): void {
    if (this._state === state || this.ended) return;
    this._state = state;
    this.emit('connectionStateChanged', state);
  }

  /** Leaves the room and stops the camera and microphone. Idempotent. */
  leave(): Promise<void> {
    this.leaving ??= (async () => {
      const signal = this.signal;
      this.signal = undefined;
      if (signal !== undefined) await leaveAndClose(signal);
      this.teardown(undefined);
    })();
    return this.leaving;
  }

  /** Ends the room for good: every resource is released, state becomes `disconnected`. */
  private teardown(reason: RoomError | undefined): void {
    if (this.ended) return;
    clearTimeout(this.iceRestartTimer);
    this.iceRestartTimer = undefined;
    this.retry?.wake();
    this.signal?.close();
    this.signal = undefined;
    this.closeMedia();
    this.e2eeSession?.close();
    this.e2eeSession = undefined;
    for (const t of this.localTracks) t.mediaTrack.stop();
    this.disconnectReason = reason;
    if (reason !== undefined) this.emit('error', reason);
    this.setState('disconnected');
    this.removeAllListeners();
  }
}

/** Sends `leave` and waits (briefly) for the server's `left` and the socket's close. */
async function leaveAndClose(signal: SignalClient): Promise<void> {
  if (signal.isOpen) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, LEAVE_TIMEOUT_MS);
      signal.on('close', () => {
        clearTimeout(timer);
        resolve();
      });
      signal.send({ type: 'leave' });
    });
  }
  signal.close();
}

/** E2EE rooms send VP8 (docs/e2ee.md): put it first, and drop codecs whose packetizer parses the frame. */
function preferE2eeCodecs(transceiver: RTCRtpTransceiver): void {
  if (typeof transceiver.setCodecPreferences !== 'function') return;
  for (const caps of [RTCRtpReceiver.getCapabilities?.('video'), RTCRtpSender.getCapabilities?.('video')]) {
    const codecs = e2eeVideoCodecs(caps ?? null);
    if (codecs === undefined) continue;
    try {
      transceiver.setCodecPreferences(codecs);
      return;
    } catch {
      // Not acceptable to this browser in this form; try the other capability list.
    }
  }
}

function candidateToWire(c: RTCIceCandidate | null): IceCandidateInit | null {
  if (c === null) return null;
  return { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex, usernameFragment: c.usernameFragment };
}

function asRoomError(err: unknown): RoomError {
  return err instanceof RoomError ? err : new RoomError('INTERNAL', err instanceof Error ? err.message : String(err));
}

function mediaError(err: unknown): RoomError {
  const name = (err as { name?: string } | null)?.name;
  const message = (err as Error | null)?.message ?? String(err);
  if (name === 'NotAllowedError' || name === 'SecurityError') {
    return new RoomError('MEDIA_DENIED', `camera or microphone permission was refused (${message})`);
  }
  return new RoomError('MEDIA_UNAVAILABLE', `camera or microphone unavailable (${name ?? 'error'}: ${message})`);
}

function leftMessage(reason: string): string {
  switch (reason) {
    case 'replaced':
      return 'you joined this room from another tab or device';
    case 'room_closed':
      return 'the room was closed';
    case 'server_shutdown':
      return 'the server is shutting down';
    default:
      return `removed from the room (${reason})`;
  }
}
