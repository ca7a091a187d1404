/**
 * TestClient: a real werift participant for the tests, built on the project's one Node
 * client (src/node-client/signaling-client.ts: the signaling protocol v1 of
 * docs/signaling.md over a real WebSocket, a "publisher" PeerConnection fed by synthetic
 * RTP, a "subscriber" PeerConnection for everyone else). What this layer adds for tests:
 * every received packet is counted and verified (RemoteTrack), every server message is
 * kept, and every wait has a timeout that fails with a description of what was seen.
 *
 *   const c = await TestClient.join({ wsUrl, token, name: 'Alice' });
 *   const cam = await c.publish('video');                  // VP8 by default
 *   const t = await other.waitForTrackFrom('alice', 'video', { minPackets: 50 });
 *   assert.equal(t.corrupt, 0);
 *   await c.close();
 *
 * `close()` is idempotent and leaves no timers, sockets or PeerConnections behind.
 */
import { WebSocket } from 'ws';
import {
  GenericNack,
  RTCPeerConnection,
  RtcpTransportLayerFeedback,
  useAbsSendTime,
  useSdesMid,
  useTransportWideCC,
  type PeerConfig,
  type RTCRtpTransceiver,
  type RtpPacket,
} from 'werift';
import type { LeaveReason, ParticipantInfo, ServerMessage, Target, TrackInfo } from '../../src/signaling/messages.ts';
import { LocalTrack, type Kind, type TrackSource } from '../../src/node-client/local-track.ts';
import { codecName, isKeyframe, verifyPayload } from '../../src/node-client/payload-format.ts';
import { codecParameters, LOOPBACK_ICE } from '../../src/node-client/peer-config.ts';
import { ReceiveStats } from '../../src/node-client/receive-stats.ts';
import { ServerError } from '../../src/node-client/server-error.ts';
import { SignalingClient, type JoinedMessage, type MessageOf, type RequestId } from '../../src/node-client/signaling-client.ts';
import type { OfferedTrack, TrackSink } from '../../src/node-client/subscriber-connection.ts';
import type { SyntheticCodec } from '../../src/node-client/synthetic-media.ts';

// ---- types ------------------------------------------------------------------------------

export type { JoinedMessage, Kind, MessageOf, RequestId, TrackSource };
export { LocalTrack, ServerError };
export type VideoCodec = 'vp8' | 'vp9' | 'h264';

export interface TestClientOptions {
  /** e.g. ws://127.0.0.1:PORT/video/ws */
  wsUrl: string;
  token: string;
  /** Display name sent with `join`. */
  name?: string;
  /** `join.protocol` (default 1). */
  protocol?: number;
  /** The only video codec the publisher PeerConnection offers (default vp8). */
  videoCodec?: VideoCodec;
  /** How many payloads each remote track keeps (default 32). */
  keepPayloads?: number;
  /** Default timeout of requests and waits (default 15000 ms). */
  timeoutMs?: number;
  /** Pass the `iceServers` from `joined` to the PeerConnections (default false: loopback tests need none). */
  useIceServers?: boolean;
  /** Extra werift PeerConnection settings (override the loopback ICE defaults). */
  peerConfig?: Partial<PeerConfig>;
  /** Debug log sink, e.g. `(l) => console.error(l)`. */
  log?: (line: string) => void;
}

export interface PublishOptions {
  /** Video only; must be the client's `videoCodec` (the publisher PC offers just that one). */
  codec?: VideoCodec;
  source?: TrackSource;
  /** Sent in `track_info` (default `${kind}-${mid}`). */
  name?: string;
  /** Send `track_info` before the offer (default true). */
  trackInfo?: boolean;
  /** Id written into every payload (default: a fresh one per track). */
  sourceId?: number;
  fps?: number;
  bitrateKbps?: number;
  /** Default: a keyframe every 3 s. */
  keyframeIntervalFrames?: number;
  /** Start sending RTP once the answer is applied (default true). */
  startMedia?: boolean;
}

export interface RetransmissionObservation {
  seq: number;
  /** True: this sequence number had already arrived (a retransmission of a received packet); false: it filled a gap. */
  duplicate: boolean;
  at: number;
}

/**
 * One remote track as received on the subscriber connection, with what arrived: the
 * sequence-number counting of ReceiveStats (packets, bytes, gaps, skipped, late,
 * duplicates, highestSeq), every payload verified, late packets and retransmissions listed.
 */
export class RemoteTrack extends ReceiveStats implements TrackSink {
  readonly mid: string;
  readonly trackSid: string;
  readonly identity: string;
  readonly participantSid: string;
  readonly kind: Kind;
  readonly transceiver: RTCRtpTransceiver;
  /** Codec name (vp8, h264, opus, …) from the payload type of the packets. */
  codec: string | undefined;
  ssrc: number | undefined;
  /** Payloads that passed `verifyPayload`. */
  verified = 0;
  /** Payloads that failed it; `lastCorrupt` says why. */
  corrupt = 0;
  lastCorrupt: { seq: number; reason: string | undefined } | undefined;
  /** Keyframes (counted once per RTP timestamp). */
  keyframes = 0;
  /** Packets with the marker bit (video: complete frames). */
  frames = 0;
  /** Packets below the highest sequence number (the last 1000), late or duplicate. */
  readonly retransmissions: RetransmissionObservation[] = [];
  readonly sourceIds = new Set<number>();
  /** The last N payloads (oldest first). */
  readonly lastPayloads: Buffer[] = [];
  lastIndex: number | undefined;
  firstPacketAt: number | undefined;
  lastPacketAt: number | undefined;
  /** The m-line no longer carries this track (a later offer dropped or replaced it). */
  ended = false;
  endedAt: number | undefined;
  private readonly keep: number;
  private readonly changed: () => void;
  private lastKeyframeTs: number | undefined;

  constructor(init: { mid: string; trackSid: string; identity: string; participantSid: string; kind: Kind; transceiver: RTCRtpTransceiver; keep: number; changed?: () => void }) {
    super();
    this.mid = init.mid;
    this.trackSid = init.trackSid;
    this.identity = init.identity;
    this.participantSid = init.participantSid;
    this.kind = init.kind;
    this.transceiver = init.transceiver;
    this.keep = init.keep;
    this.changed = init.changed ?? (() => {});
  }

  /** @internal */
  onPacket(rtp: RtpPacket): void {
    const now = Date.now();
    const { sequenceNumber: seq, timestamp, ssrc, marker, payloadType } = rtp.header;
    const t = this.transceiver;
    const mime = t.codecs.find((c) => c.payloadType === payloadType)?.mimeType ?? t.receiver.tracks[0]?.codec?.mimeType;
    const codec = mime === undefined ? undefined : codecName(mime);
    const arrival = this.record(seq, rtp.payload.length);
    this.ssrc = ssrc;
    this.codec = codec ?? this.codec;
    this.firstPacketAt ??= now;
    this.lastPacketAt = now;
    if (arrival !== 'ahead') {
      this.retransmissions.push({ seq, duplicate: arrival === 'duplicate', at: now });
      if (this.retransmissions.length > 1000) this.retransmissions.splice(0, this.retransmissions.length - 1000);
    }
    if (codec !== undefined) {
      const v = verifyPayload(codec, rtp.payload);
      if (v.ok) {
        this.verified++;
        this.sourceIds.add(v.sourceId!);
        this.lastIndex = v.index;
      } else {
        this.corrupt++;
        this.lastCorrupt = { seq, reason: v.reason };
      }
      if (isKeyframe(codec, rtp.payload) && timestamp !== this.lastKeyframeTs) {
        this.keyframes++;
        this.lastKeyframeTs = timestamp;
      }
    }
    if (marker) this.frames++;
    this.lastPayloads.push(rtp.payload);
    if (this.lastPayloads.length > this.keep) this.lastPayloads.shift();
    this.changed();
  }

  /** @internal */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.endedAt = Date.now();
  }

  summary(): string {
    return (
      `${this.identity}/${this.kind} ${this.trackSid} mid=${this.mid} codec=${this.codec} packets=${this.packets} ` +
      `verified=${this.verified} corrupt=${this.corrupt} keyframes=${this.keyframes} gaps=${this.gaps} ` +
      `skipped=${this.skipped} dup=${this.duplicates} late=${this.late}${this.ended ? ' ended' : ''}`
    );
  }
}

// ---- waiting ----------------------------------------------------------------------------

interface Waiter {
  check: () => boolean;
  fail: (err: Error) => void;
}

function describeMessage(m: ServerMessage): string {
  const { sdp: _sdp, ...rest } = m as ServerMessage & { sdp?: string };
  return JSON.stringify(rest).slice(0, 300);
}

// ---- the client -------------------------------------------------------------------------

export class TestClient {
  readonly opts: TestClientOptions;
  readonly timeoutMs: number;
  readonly videoCodec: VideoCodec;
  /** Every server message, in order. */
  readonly messages: ServerMessage[] = [];
  /** Server messages that are not replies to our requests and not candidates (participant_joined, offer, track_*, left, error, …). */
  readonly events: ServerMessage[] = [];
  /** Remote tracks ever received (ended ones stay, with `ended` set). */
  readonly remoteTracks: RemoteTrack[] = [];
  /** Problems in our own handling (failed negotiation, rejected answers, bad JSON from the server). */
  readonly failures: string[] = [];
  /** The shared Node client underneath. */
  readonly client: SignalingClient<RemoteTrack>;

  private nextSourceId = 1;
  private readonly waiters = new Set<Waiter>();
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(opts: TestClientOptions) {
    this.opts = opts;
    this.timeoutMs = opts.timeoutMs ?? 15_000;
    this.videoCodec = opts.videoCodec ?? 'vp8';
    this.client = new SignalingClient<RemoteTrack>({
      wsUrl: opts.wsUrl,
      timeoutMs: this.timeoutMs,
      useIceServers: opts.useIceServers,
      peerConfig: (target) => this.peerConfig(target),
      sinkFor: (info, mid, transceiver) => this.openRemote(info, mid, transceiver),
      hooks: {
        message: (msg, reply) => this.onServerMessage(msg, reply),
        problem: (what) => {
          this.failures.push(what);
          this.notify();
        },
        changed: () => this.notify(),
        log: (line) => this.log(line),
      },
    });
  }

  /** Connects and joins; throws `ServerError` if the server refuses (the client is closed then). */
  static async join(opts: TestClientOptions): Promise<TestClient> {
    const c = new TestClient(opts);
    try {
      await c.connect();
      await c.join();
    } catch (err) {
      await c.close();
      throw err;
    }
    return c;
  }

  /** The `joined` reply, once joined (replaced by a later `reconnect`). */
  get joined(): JoinedMessage | undefined {
    return this.client.joined;
  }

  get identity(): string | undefined {
    return this.client.identity;
  }

  get participantSid(): string | undefined {
    return this.client.participantSid;
  }

  get socketOpen(): boolean {
    return this.client.socketOpen;
  }

  /** How the current (or last) socket closed. */
  get socketClose(): { code: number; reason: string } | undefined {
    return this.client.socketClose;
  }

  get localTracks(): readonly LocalTrack[] {
    return this.client.localTracks;
  }

  get publisherPc(): RTCPeerConnection | undefined {
    return this.client.publisher?.pc;
  }

  get subscriberPc(): RTCPeerConnection | undefined {
    return this.client.subscriber.pc;
  }

  get subscriberOffers(): number {
    return this.client.subscriber.offers;
  }

  get subscriberAnswers(): number {
    return this.client.subscriber.answers;
  }

  /** Packets on subscriber m-lines that no offer mapped to a track. */
  get unmappedPackets(): number {
    return this.client.subscriber.unmapped;
  }

  private get label(): string {
    return this.opts.name ?? this.identity ?? 'client';
  }

  private log(line: string): void {
    this.opts.log?.(`[${this.label}] ${line}`);
  }

  // ---- signaling -------------------------------------------------------------------------

  /** Opens the WebSocket (without joining). */
  connect(): Promise<void> {
    if (this.closed) return Promise.reject(new Error('client is closed'));
    return this.client.connect();
  }

  /** Sends any JSON value (or a raw string) as it is, no id added. */
  send(msg: object | string): void {
    this.client.send(msg);
  }

  /**
   * Sends a request with a fresh `id` (unless it has one) and resolves with the server's
   * reply to it — `error` replies included; see `call` for throwing on them.
   */
  request(msg: Record<string, unknown>, timeoutMs = this.timeoutMs): Promise<ServerMessage> {
    return this.client.request(msg, timeoutMs);
  }

  /** `request`, but an `error` reply throws `ServerError`. */
  call(msg: Record<string, unknown>, timeoutMs = this.timeoutMs): Promise<ServerMessage> {
    return this.client.call(msg, timeoutMs);
  }

  /** Sends `join`; resolves with `joined`, throws `ServerError` on `error`. */
  join(opts: { token?: string; name?: string; protocol?: number } = {}): Promise<JoinedMessage> {
    return this.client.join({ token: opts.token ?? this.opts.token, name: opts.name ?? this.opts.name, protocol: opts.protocol ?? this.opts.protocol });
  }

  /** After `dropWebSocket()`: a new socket and `join` (same token by default); PeerConnections are kept. */
  async reconnect(opts: { token?: string } = {}): Promise<JoinedMessage> {
    this.dropWebSocket();
    await this.connect();
    return this.join(opts);
  }

  private onServerMessage(msg: ServerMessage, reply: boolean): void {
    this.messages.push(msg);
    if (!reply && msg.type !== 'candidate') {
      this.events.push(msg);
      this.log(`event ${describeMessage(msg)}`);
      if (msg.type === 'error') this.log(`server error ${msg.code}: ${msg.message}`);
    }
  }

  // ---- waits -----------------------------------------------------------------------------

  private notify(): void {
    for (const w of [...this.waiters]) {
      let done: boolean;
      try {
        done = w.check();
      } catch (err) {
        this.waiters.delete(w);
        w.fail(err as Error);
        continue;
      }
      if (done) this.waiters.delete(w);
    }
  }

  /**
   * Resolves with the first non-undefined value of `probe`, re-evaluated whenever a
   * message or packet arrives (and every 100 ms). Rejects after `timeoutMs` with `what()`.
   */
  waitUntil<T>(probe: () => T | undefined | false, timeoutMs: number = this.timeoutMs, what: () => string = () => 'condition'): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.closed) return reject(new Error(`client closed while waiting for ${what()}`));
      const first = probe();
      if (first !== undefined && first !== false) return resolve(first);
      const finish = () => {
        clearTimeout(timer);
        clearInterval(poll);
      };
      const waiter: Waiter = {
        check: () => {
          const v = probe();
          if (v === undefined || v === false) return false;
          finish();
          resolve(v);
          return true;
        },
        fail: (err) => {
          finish();
          reject(err);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        finish();
        reject(new Error(`[${this.label}] timed out after ${timeoutMs} ms waiting for ${what()}\n${this.describe()}`));
      }, timeoutMs);
      const poll = setInterval(() => {
        if (waiter.check()) this.waiters.delete(waiter);
      }, 100);
      this.waiters.add(waiter);
    });
  }

  /**
   * The first recorded event of `type` matching `predicate` — including ones that already
   * arrived (pass `since: client.events.length` to only consider later ones).
   */
  waitForEvent<T extends ServerMessage['type']>(
    type: T,
    predicate: (e: MessageOf<T>) => boolean = () => true,
    timeoutMs: number = this.timeoutMs,
    opts: { since?: number } = {},
  ): Promise<MessageOf<T>> {
    return this.waitUntil(
      () => this.events.slice(opts.since ?? 0).find((e): e is MessageOf<T> => e.type === type && predicate(e as MessageOf<T>)),
      timeoutMs,
      () => `event "${type}"${opts.since ? ` after #${opts.since}` : ''}`,
    );
  }

  eventsOf<T extends ServerMessage['type']>(type: T): MessageOf<T>[] {
    return this.events.filter((e): e is MessageOf<T> => e.type === type);
  }

  /** A readable state dump for failure messages. */
  describe(): string {
    const lines = [
      `  identity=${this.identity} sid=${this.participantSid} socket=${this.socketOpen ? 'open' : `closed ${JSON.stringify(this.socketClose)}`}`,
      `  publisher=${this.publisherPc?.connectionState ?? '-'} subscriber=${this.subscriberPc?.connectionState ?? '-'} offers=${this.subscriberOffers} answers=${this.subscriberAnswers} unmapped=${this.unmappedPackets}`,
      ...this.localTracks.map(
        (t) => `  local ${t.kind} mid=${t.mid} sid=${t.trackSid} sent=${t.packetsSent} keyframes=${t.source.keyframesSent} plis=${t.plisReceived} nacks=${t.nacksReceived}`,
      ),
      ...this.remoteTracks.map((t) => `  remote ${t.summary()}`),
      `  events: ${this.events.slice(-12).map((e) => e.type).join(', ')}`,
      ...(this.failures.length > 0 ? [`  failures: ${this.failures.slice(-5).join(' | ')}`] : []),
    ];
    return lines.join('\n');
  }

  // ---- PeerConnections -------------------------------------------------------------------

  private peerConfig(target: Target): Partial<PeerConfig> {
    const codecs =
      target === 'publisher'
        ? { audio: [codecParameters('opus')], video: [codecParameters(this.videoCodec)] }
        : { audio: [codecParameters('opus')], video: [codecParameters('vp8'), codecParameters('vp9'), codecParameters('h264')] };
    return {
      codecs,
      headerExtensions: {
        audio: [useSdesMid(), useTransportWideCC()],
        video: target === 'publisher' ? [useSdesMid(), useTransportWideCC()] : [useSdesMid(), useAbsSendTime(), useTransportWideCC()],
      },
      iceServers: [],
      // max-compat would gather a transport per m-line of a first offer and, once the answer
      // bundles them, never close the extra ones (their UDP sockets leak past pc.close()).
      bundlePolicy: 'max-bundle',
      ...LOOPBACK_ICE,
      ...this.opts.peerConfig,
    };
  }

  /** Resolves when the PeerConnection for `target` reaches `state` (default connected). */
  waitForConnectionState(target: Target, state: RTCPeerConnection['connectionState'] = 'connected', timeoutMs = this.timeoutMs): Promise<void> {
    return this.waitUntil(
      () => ((target === 'publisher' ? this.publisherPc : this.subscriberPc)?.connectionState === state ? (true as const) : undefined),
      timeoutMs,
      () => `${target} connection ${state}`,
    ).then(() => undefined);
  }

  // ---- publishing ------------------------------------------------------------------------

  /** Adds one track (its own offer/answer). */
  async publish(kind: Kind, opts: PublishOptions = {}): Promise<LocalTrack> {
    const [t] = await this.publishTracks([{ kind, ...opts }]);
    return t!;
  }

  /**
   * Adds tracks to the publisher connection (created on first use) in one offer, waits for
   * the answer, and starts the synthetic sources. Throws `ServerError` if the server refuses.
   */
  publishTracks(specs: (PublishOptions & { kind: Kind })[]): Promise<LocalTrack[]> {
    if (this.closed) return Promise.reject(new Error('client is closed'));
    for (const spec of specs) {
      if (spec.kind === 'video' && spec.codec !== undefined && spec.codec !== this.videoCodec) {
        return Promise.reject(new Error(`this client publishes ${this.videoCodec}; create one with videoCodec: '${spec.codec}'`));
      }
      if (spec.kind === 'video' && this.videoCodec === 'vp9') return Promise.reject(new Error('no synthetic VP9 source; publish vp8 or h264'));
    }
    return this.client.publish(
      specs.map(({ codec: _codec, ...spec }) => {
        const codec: SyntheticCodec = spec.kind === 'audio' ? 'opus' : this.videoCodec === 'h264' ? 'h264' : 'vp8';
        const fps = spec.fps ?? 30;
        return { ...spec, codec, sourceId: spec.sourceId ?? this.nextSourceId++, keyframeIntervalFrames: spec.keyframeIntervalFrames ?? Math.round(fps * 3) };
      }),
    );
  }

  /** Starts (or resumes) feeding a local track's synthetic source into its sender. */
  startMedia(local: LocalTrack): void {
    this.client.publisher?.startMedia(local);
  }

  /** Pauses a local track's source (nothing is sent until `startMedia`). */
  stopMedia(local: LocalTrack): void {
    local.source.stop();
  }

  /** Stops sending on a track: direction inactive and a new offer (the server unpublishes it). */
  async unpublish(local: LocalTrack): Promise<void> {
    await this.client.publisher?.unpublish(local);
  }

  /** Waits for our own `track_published` for `local` and returns its sid. */
  waitForTrackSid(local: LocalTrack, timeoutMs = this.timeoutMs): Promise<string> {
    return this.waitUntil(() => local.trackSid, timeoutMs, () => `track_published for our ${local.kind} mid=${local.mid}`);
  }

  /** `mute` request; with `stopSending` (default true) our source pauses/resumes too. */
  async mute(trackSid: string, muted: boolean, opts: { stopSending?: boolean } = {}): Promise<ServerMessage> {
    const reply = await this.call({ type: 'mute', trackSid, muted });
    const local = this.localTracks.find((t) => t.trackSid === trackSid);
    if (local !== undefined) {
      local.muted = muted;
      if (opts.stopSending !== false) {
        if (muted) local.source.stop();
        else this.startMedia(local);
      }
    }
    return reply;
  }

  // ---- subscribing -----------------------------------------------------------------------

  private openRemote(info: OfferedTrack, mid: string, transceiver: RTCRtpTransceiver): RemoteTrack {
    const rec = new RemoteTrack({
      mid,
      trackSid: info.trackSid,
      identity: info.identity,
      participantSid: info.participantSid,
      kind: info.kind,
      transceiver,
      keep: this.opts.keepPayloads ?? 32,
      changed: () => this.notify(),
    });
    this.remoteTracks.push(rec);
    return rec;
  }

  /** The live (not ended) remote track with this sid, else the latest ended one. */
  remoteTrack(trackSid: string): RemoteTrack | undefined {
    const all = this.remoteTracks.filter((t) => t.trackSid === trackSid);
    return all.find((t) => !t.ended) ?? all[all.length - 1];
  }

  /** Live remote tracks of a participant (by identity), optionally of one kind. */
  tracksFrom(identity: string, kind?: Kind): RemoteTrack[] {
    return this.remoteTracks.filter((t) => !t.ended && t.identity === identity && (kind === undefined || t.kind === kind));
  }

  /**
   * Waits until a live track of `identity` and `kind` has received `minPackets` packets
   * (default 1), and optionally `minVerified` intact payloads and `minKeyframes` keyframes.
   */
  waitForTrackFrom(
    identity: string,
    kind: Kind,
    opts: { minPackets?: number; minVerified?: number; minKeyframes?: number; timeoutMs?: number } = {},
  ): Promise<RemoteTrack> {
    const minPackets = opts.minPackets ?? 1;
    return this.waitUntil(
      () =>
        this.tracksFrom(identity, kind).find(
          (t) => t.packets >= minPackets && t.verified >= (opts.minVerified ?? 0) && t.keyframes >= (opts.minKeyframes ?? 0),
        ),
      opts.timeoutMs ?? this.timeoutMs,
      () => `${kind} from ${identity} with ${minPackets} packets${opts.minVerified ? `, ${opts.minVerified} verified` : ''}${opts.minKeyframes ? `, ${opts.minKeyframes} keyframes` : ''}`,
    );
  }

  /** Waits until no live track of `identity` (and `kind`) is left on the subscriber connection. */
  waitForNoTrackFrom(identity: string, kind?: Kind, timeoutMs = this.timeoutMs): Promise<void> {
    return this.waitUntil(
      () => (this.tracksFrom(identity, kind).length === 0 ? (true as const) : undefined),
      timeoutMs,
      () => `no ${kind ?? ''} track from ${identity}`,
    ).then(() => undefined);
  }

  /** Resolves once `rec` has received `count` more packets than it has now. */
  waitForMorePackets(rec: RemoteTrack, count: number, timeoutMs = this.timeoutMs): Promise<RemoteTrack> {
    const target = rec.packets + count;
    return this.waitUntil(() => (rec.packets >= target ? rec : undefined), timeoutMs, () => `${count} more packets on ${rec.summary()}`);
  }

  /** Resolves with the first retransmission of `seq` (any, if omitted) seen on the track. */
  waitForRetransmission(trackSid: string, seq?: number, timeoutMs = this.timeoutMs, opts: { since?: number } = {}): Promise<RetransmissionObservation> {
    return this.waitUntil(
      () => this.remoteTrack(trackSid)?.retransmissions.slice(opts.since ?? 0).find((r) => seq === undefined || r.seq === seq),
      timeoutMs,
      () => `retransmission of ${seq ?? 'any packet'} on ${trackSid}`,
    );
  }

  private liveRemote(trackSid: string): RemoteTrack & { ssrc: number } {
    const rec = this.remoteTrack(trackSid);
    if (rec === undefined) throw new Error(`no remote track ${trackSid}`);
    const ssrc = rec.ssrc ?? rec.transceiver.receiver.tracks[0]?.ssrc;
    if (ssrc === undefined) throw new Error(`remote track ${trackSid} has no SSRC yet (no packets)`);
    rec.ssrc = ssrc;
    return rec as RemoteTrack & { ssrc: number };
  }

  /** Sends a PLI for a remote track to the server. */
  async sendPli(trackSid: string): Promise<void> {
    const rec = this.liveRemote(trackSid);
    await rec.transceiver.receiver.sendRtcpPLI(rec.ssrc);
  }

  /** Sends a generic NACK for `seqs` of a remote track to the server. */
  async sendNack(trackSid: string, seqs: number[]): Promise<void> {
    const rec = this.liveRemote(trackSid);
    const receiver = rec.transceiver.receiver;
    const nack = new GenericNack({ senderSsrc: receiver.rtcpSsrc, mediaSourceSsrc: rec.ssrc, lost: seqs.map((s) => s & 0xffff) });
    const dtls = receiver.dtlsTransport ?? this.subscriberPc?.dtlsTransports[0];
    if (dtls === undefined) throw new Error('subscriber connection has no DTLS transport');
    await dtls.sendRtcp([new RtcpTransportLayerFeedback({ feedback: nack })]);
  }

  // ---- other requests --------------------------------------------------------------------

  ping(): Promise<ServerMessage> {
    return this.call({ type: 'ping', t: Date.now() });
  }

  /** Sends `leave`, waits for `left` and the socket to close, stops our sources. */
  async leave(timeoutMs = this.timeoutMs): Promise<MessageOf<'left'>> {
    const since = this.events.length;
    this.send({ type: 'leave', id: `leave-${since}` });
    const left = await this.waitForEvent('left', () => true, timeoutMs, { since });
    this.client.publisher?.stopMedia();
    await this.waitForSocketClose(timeoutMs).catch(() => {});
    return left;
  }

  /** Resolves when the current socket has closed, with its close code and reason. */
  waitForSocketClose(timeoutMs = this.timeoutMs): Promise<{ code: number; reason: string }> {
    return this.waitUntil(() => (this.socketOpen ? undefined : (this.socketClose ?? { code: 0, reason: '' })), timeoutMs, () => 'socket close');
  }

  /** Drops the socket without `leave`; PeerConnections and media keep going. */
  dropWebSocket(): void {
    this.client.dropSocket('dropped by test');
  }

  /** Closes both PeerConnections and stops media (the socket stays). Later offers are ignored. */
  closePeerConnections(): Promise<void> {
    return this.client.closePeerConnections();
  }

  /**
   * Closes everything: sources, socket (without `leave` unless `{ leave: true }`),
   * PeerConnections, pending requests and waits. Idempotent.
   */
  close(opts: { leave?: boolean } = {}): Promise<void> {
    this.closing ??= (async () => {
      if (opts.leave && this.socketOpen && this.joined !== undefined) await this.leave(3000).catch(() => {});
      this.closed = true;
      await this.client.close();
      for (const w of [...this.waiters]) {
        this.waiters.delete(w);
        w.fail(new Error(`[${this.label}] client closed during a wait`));
      }
    })();
    return this.closing;
  }
}

// ---- raw sockets ------------------------------------------------------------------------

export interface RawMessage {
  data: string | Buffer;
  isBinary: boolean;
  /** Parsed JSON of a text frame, if it is JSON. */
  json: unknown;
}

/** A minimal promise-based WebSocket for tests that send garbage. */
export interface RawSocket {
  readonly ws: WebSocket;
  /** Strings go as text frames, Buffers as binary frames, anything else as JSON text. */
  send(data: string | Buffer | object): void;
  /** The next message (buffered ones first). Rejects on timeout or if the socket closes first. */
  next(timeoutMs?: number): Promise<RawMessage>;
  /** `next()`'s parsed JSON (rejects if the frame is not JSON). */
  nextJson<T = Record<string, unknown>>(timeoutMs?: number): Promise<T>;
  /** Resolves when the socket closes (at once if it has). */
  waitClose(timeoutMs?: number): Promise<{ code: number; reason: string }>;
  readonly closed: boolean;
  close(code?: number, reason?: string): void;
  terminate(): void;
}

export function rawSocket(wsUrl: string, opts: { timeoutMs?: number; maxPayload?: number } = {}): Promise<RawSocket> {
  const defaultTimeout = opts.timeoutMs ?? 10_000;
  const ws = new WebSocket(wsUrl, { maxPayload: opts.maxPayload });
  const queue: RawMessage[] = [];
  let closeInfo: { code: number; reason: string } | undefined;
  const listeners = new Set<() => void>();
  const wake = () => {
    for (const l of [...listeners]) l();
  };
  ws.on('message', (data, isBinary) => {
    const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as Buffer);
    const text = isBinary ? undefined : buf.toString('utf8');
    let json: unknown;
    if (text !== undefined) {
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
    }
    queue.push({ data: text ?? buf, isBinary, json });
    wake();
  });
  ws.on('close', (code, reason) => {
    closeInfo = { code, reason: reason.toString('utf8') };
    wake();
  });
  ws.on('error', () => {});

  const waitFor = <T>(probe: () => T | undefined, timeoutMs: number, what: string): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const attempt = (): boolean => {
        let v: T | undefined;
        try {
          v = probe();
        } catch (err) {
          done();
          reject(err as Error);
          return true;
        }
        if (v === undefined) return false;
        done();
        resolve(v);
        return true;
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`raw socket: timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const listener = () => {
        attempt();
      };
      const done = () => {
        clearTimeout(timer);
        listeners.delete(listener);
      };
      listeners.add(listener);
      attempt();
    });

  const sock: RawSocket = {
    ws,
    send(data) {
      if (typeof data === 'string') ws.send(data);
      else if (Buffer.isBuffer(data)) ws.send(data, { binary: true });
      else ws.send(JSON.stringify(data));
    },
    next(timeoutMs = defaultTimeout) {
      return waitFor(
        () => {
          const m = queue.shift();
          if (m !== undefined) return m;
          if (closeInfo !== undefined) throw new Error(`raw socket closed (${closeInfo.code} ${closeInfo.reason}) before a message arrived`);
          return undefined;
        },
        timeoutMs,
        'a message',
      );
    },
    async nextJson<T>(timeoutMs = defaultTimeout) {
      const m = await sock.next(timeoutMs);
      if (m.json === undefined) throw new Error(`raw socket: frame is not JSON: ${String(m.data).slice(0, 100)}`);
      return m.json as T;
    },
    waitClose(timeoutMs = defaultTimeout) {
      return waitFor(() => closeInfo, timeoutMs, 'close');
    },
    get closed() {
      return closeInfo !== undefined;
    },
    close(code, reason) {
      ws.close(code, reason);
    },
    terminate() {
      ws.terminate();
    },
  };

  return new Promise<RawSocket>((resolve, reject) => {
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`raw socket: connect to ${wsUrl} timed out`));
    }, defaultTimeout);
    ws.once('open', () => {
      clearTimeout(timer);
      resolve(sock);
    });
    ws.once('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      ws.terminate();
      reject(new Error(`raw socket: upgrade refused, HTTP ${res.statusCode}`));
    });
    ws.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

export type { LeaveReason, ParticipantInfo, TrackInfo };

/** A real offer from a throwaway werift PeerConnection. */
export async function someOffer(direction: 'sendonly' | 'recvonly' = 'sendonly'): Promise<string> {
  const pc = new RTCPeerConnection({ codecs: { audio: [codecParameters('opus')], video: [codecParameters('vp8')] }, bundlePolicy: 'max-bundle', iceServers: [], ...LOOPBACK_ICE });
  try {
    pc.addTransceiver('video', { direction });
    await pc.setLocalDescription(await pc.createOffer());
    return pc.localDescription!.sdp;
  } finally {
    await pc.close().catch(() => {});
  }
}
