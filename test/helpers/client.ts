/**
 * TestClient: a real werift participant speaking the signaling protocol v1
 * (docs/signaling.md) over a real WebSocket. It publishes synthetic RTP
 * (test/helpers/media.ts) on a "publisher" PeerConnection (client offers) and receives
 * everyone else on a "subscriber" PeerConnection (server offers), counting and verifying
 * every packet it gets.
 *
 *   const c = await TestClient.join({ wsUrl, token, name: 'Alice' });
 *   const cam = await c.publish('video');                  // VP8 by default
 *   const t = await other.waitForTrackFrom('alice', 'video', { minPackets: 50 });
 *   assert.equal(t.corrupt, 0);
 *   await c.close();
 *
 * Every wait has a timeout and fails with a description of what was seen. `close()` is
 * idempotent and leaves no timers, sockets or PeerConnections behind.
 */
import { WebSocket, type RawData } from 'ws';
import {
  GenericNack,
  RTCPeerConnection,
  RtcpTransportLayerFeedback,
  useAbsSendTime,
  useSdesMid,
  useTransportWideCC,
  type MediaStreamTrack,
  type PeerConfig,
  type RTCIceCandidate,
  type RTCRtpTransceiver,
  type RtpPacket,
} from 'werift';
import type { IceCandidateInit, LeaveReason, ParticipantInfo, ServerMessage, Target, TrackInfo } from '../../src/signaling/messages.ts';
import { codecParameters, LOOPBACK_ICE } from '../../src/loadtest/peer-config.ts';
import { SyntheticSource, codecName, isKeyframe, verifyPayload, type SyntheticCodec } from './media.ts';

// ---- types ------------------------------------------------------------------------------

export type MessageOf<T extends ServerMessage['type']> = Extract<ServerMessage, { type: T }>;
export type JoinedMessage = MessageOf<'joined'>;
export type Kind = 'audio' | 'video';
export type VideoCodec = 'vp8' | 'vp9' | 'h264';
export type TrackSource = TrackInfo['source'];
export type RequestId = string | number;

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
  /** Sent in `track_info` (default `${kind}-${mid}`); also used to match our own `track_published`. */
  name?: string;
  /** Send `track_info` before the offer (default true). */
  trackInfo?: boolean;
  /** Id written into every payload (default: a fresh one per track). */
  sourceId?: number;
  fps?: number;
  bitrateKbps?: number;
  keyframeIntervalFrames?: number;
  /** Start sending RTP once the answer is applied (default true). */
  startMedia?: boolean;
}

/** Thrown when the server answers a request with `error`. */
export class ServerError extends Error {
  readonly code: string;
  readonly reply: MessageOf<'error'>;
  constructor(reply: MessageOf<'error'>) {
    super(`${reply.code}: ${reply.message}`);
    this.name = 'ServerError';
    this.code = reply.code;
    this.reply = reply;
  }
}

/** One track this client publishes. */
export class LocalTrack {
  readonly kind: Kind;
  readonly codec: SyntheticCodec;
  readonly transceiver: RTCRtpTransceiver;
  readonly source: SyntheticSource;
  name: string | undefined;
  readonly sourceKind: TrackSource | undefined;
  mid: string | undefined;
  /** From our own `track_published` (the server sends it to the publisher too). */
  trackSid: string | undefined;
  info: TrackInfo | undefined;
  /** PLIs the server sent us for this track (each forces a keyframe). */
  plisReceived = 0;
  /** NACK messages and the sequence numbers they asked for. */
  nacksReceived = 0;
  readonly nackedSeqs: number[] = [];
  unpublished = false;
  muted = false;
  constructor(init: { kind: Kind; codec: SyntheticCodec; transceiver: RTCRtpTransceiver; source: SyntheticSource; name?: string; sourceKind?: TrackSource }) {
    this.kind = init.kind;
    this.codec = init.codec;
    this.transceiver = init.transceiver;
    this.source = init.source;
    this.name = init.name;
    this.sourceKind = init.sourceKind;
  }
  get sourceId(): number {
    return this.source.sourceId;
  }
  get packetsSent(): number {
    return this.source.packetsSent;
  }
}

export interface RetransmissionObservation {
  seq: number;
  /** True: this sequence number had already arrived (a retransmission of a received packet); false: it filled a gap. */
  duplicate: boolean;
  at: number;
}

/** One remote track as received on the subscriber connection, with what arrived. */
export class RemoteTrack {
  readonly mid: string;
  readonly trackSid: string;
  readonly identity: string;
  readonly participantSid: string;
  readonly kind: Kind;
  readonly transceiver: RTCRtpTransceiver;
  /** Codec name (vp8, h264, opus, …) from the payload type of the packets. */
  codec: string | undefined;
  ssrc: number | undefined;
  packets = 0;
  bytes = 0;
  /** Payloads that passed `verifyPayload`. */
  verified = 0;
  /** Payloads that failed it; `lastCorrupt` says why. */
  corrupt = 0;
  lastCorrupt: { seq: number; reason: string | undefined } | undefined;
  /** Keyframes (counted once per RTP timestamp). */
  keyframes = 0;
  /** Packets with the marker bit (video: complete frames). */
  frames = 0;
  /** Sequence numbers skipped when the highest sequence number jumped forward. */
  seqGaps = 0;
  /** Packets that arrived below the highest sequence number and filled a gap. */
  late = 0;
  /** Packets whose sequence number had already arrived. */
  duplicates = 0;
  readonly retransmissions: RetransmissionObservation[] = [];
  readonly sourceIds = new Set<number>();
  /** The last N payloads (oldest first). */
  readonly lastPayloads: Buffer[] = [];
  highestSeq: number | undefined;
  lastIndex: number | undefined;
  firstPacketAt: number | undefined;
  lastPacketAt: number | undefined;
  /** The m-line no longer carries this track (a later offer dropped or replaced it). */
  ended = false;
  endedAt: number | undefined;
  private readonly keep: number;
  private lastKeyframeTs: number | undefined;
  private readonly seen = new Uint8Array(65536);

  constructor(init: {
    mid: string;
    trackSid: string;
    identity: string;
    participantSid: string;
    kind: Kind;
    transceiver: RTCRtpTransceiver;
    keep: number;
  }) {
    this.mid = init.mid;
    this.trackSid = init.trackSid;
    this.identity = init.identity;
    this.participantSid = init.participantSid;
    this.kind = init.kind;
    this.transceiver = init.transceiver;
    this.keep = init.keep;
  }

  /** @internal */
  onPacket(rtp: RtpPacket, codec: string | undefined): void {
    const now = Date.now();
    const { sequenceNumber: seq, timestamp, ssrc, marker } = rtp.header;
    this.packets++;
    this.bytes += rtp.payload.length;
    this.ssrc = ssrc;
    this.codec = codec ?? this.codec;
    this.firstPacketAt ??= now;
    this.lastPacketAt = now;
    if (this.highestSeq === undefined) {
      this.highestSeq = seq;
      this.seen[seq] = 1;
    } else {
      const diff = ((seq - this.highestSeq + 0x8000) & 0xffff) - 0x8000;
      if (diff > 0) {
        if (diff > 1) this.seqGaps += diff - 1;
        for (let k = 1; k <= Math.min(diff, 0x8000); k++) {
          this.seen[(this.highestSeq + k) & 0xffff] = 0;
          this.seen[(this.highestSeq + k + 0x8000) & 0xffff] = 0;
        }
        this.highestSeq = seq;
        this.seen[seq] = 1;
      } else {
        const duplicate = this.seen[seq] === 1;
        if (duplicate) this.duplicates++;
        else this.late++;
        this.seen[seq] = 1;
        this.retransmissions.push({ seq, duplicate, at: now });
        if (this.retransmissions.length > 1000) this.retransmissions.splice(0, this.retransmissions.length - 1000);
      }
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
  }

  summary(): string {
    return (
      `${this.identity}/${this.kind} ${this.trackSid} mid=${this.mid} codec=${this.codec} packets=${this.packets} ` +
      `verified=${this.verified} corrupt=${this.corrupt} keyframes=${this.keyframes} gaps=${this.seqGaps} ` +
      `dup=${this.duplicates} late=${this.late}${this.ended ? ' ended' : ''}`
    );
  }
}

// ---- codecs -----------------------------------------------------------------------------

// ---- waiting ----------------------------------------------------------------------------

interface Waiter {
  check: () => boolean;
  fail: (err: Error) => void;
}

const REPLY_TYPES = new Set(['joined', 'answer', 'ack', 'pong', 'error']);

function describeMessage(m: ServerMessage): string {
  const { sdp: _sdp, ...rest } = m as ServerMessage & { sdp?: string };
  return JSON.stringify(rest).slice(0, 300);
}

// ---- the client -------------------------------------------------------------------------

export class TestClient {
  readonly opts: TestClientOptions;
  readonly timeoutMs: number;
  readonly videoCodec: VideoCodec;
  /** The `joined` reply, once joined (replaced by a later `reconnect`). */
  joined: JoinedMessage | undefined;
  /** Every server message, in order. */
  readonly messages: ServerMessage[] = [];
  /** Server messages that are not replies to our requests and not candidates (participant_joined, offer, track_*, left, error, …). */
  readonly events: ServerMessage[] = [];
  readonly localTracks: LocalTrack[] = [];
  /** Remote tracks ever received (ended ones stay, with `ended` set). */
  readonly remoteTracks: RemoteTrack[] = [];
  /** Problems in our own handling (failed negotiation, rejected answers, bad JSON from the server). */
  readonly failures: string[] = [];
  publisherPc: RTCPeerConnection | undefined;
  subscriberPc: RTCPeerConnection | undefined;
  subscriberOffers = 0;
  subscriberAnswers = 0;
  /** Packets on subscriber m-lines that no offer mapped to a track. */
  unmappedPackets = 0;
  /** How the current (or last) socket closed. */
  socketClose: { code: number; reason: string } | undefined;

  private ws: WebSocket | undefined;
  private nextId = 1;
  private nextSourceId = 1;
  private readonly pending = new Map<RequestId, { resolve: (m: ServerMessage) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private readonly waiters = new Set<Waiter>();
  private pubQueue: Promise<unknown> = Promise.resolve();
  private subQueue: Promise<unknown> = Promise.resolve();
  private readonly canTrickle: Record<Target, boolean> = { publisher: false, subscriber: false };
  private readonly localCandidates: Record<Target, (IceCandidateInit | null)[]> = { publisher: [], subscriber: [] };
  /** Server candidates that arrived before their connection had a remote description. */
  private readonly remoteCandidates: Record<Target, IceCandidateInit[]> = { publisher: [], subscriber: [] };
  private latestOfferTracks: MessageOf<'offer'>['tracks'] = {};
  private readonly slots = new Map<RTCRtpTransceiver, { transceiver: RTCRtpTransceiver; current: RemoteTrack | undefined }>();
  private readonly attachedTracks = new WeakSet<MediaStreamTrack>();
  private pcsClosed = false;
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(opts: TestClientOptions) {
    this.opts = opts;
    this.timeoutMs = opts.timeoutMs ?? 15_000;
    this.videoCodec = opts.videoCodec ?? 'vp8';
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

  get identity(): string | undefined {
    return this.joined?.participant.identity;
  }

  get participantSid(): string | undefined {
    return this.joined?.participant.sid;
  }

  get socketOpen(): boolean {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  private get label(): string {
    return this.opts.name ?? this.identity ?? 'client';
  }

  private log(line: string): void {
    this.opts.log?.(`[${this.label}] ${line}`);
  }

  // ---- WebSocket -------------------------------------------------------------------------

  /** Opens the WebSocket (without joining). */
  async connect(): Promise<void> {
    if (this.closed) throw new Error('client is closed');
    const ws = new WebSocket(this.opts.wsUrl);
    this.ws = ws;
    this.socketClose = undefined;
    ws.on('message', (data, isBinary) => {
      if (this.ws === ws) this.onSocketMessage(data, isBinary);
    });
    ws.on('close', (code, reason) => {
      if (this.ws !== ws) return;
      this.socketClose = { code, reason: reason.toString('utf8') };
      this.log(`socket closed ${code} ${this.socketClose.reason}`);
      this.rejectPending(new Error(`socket closed (${code} ${this.socketClose.reason})`));
      this.notify();
    });
    ws.on('error', (err) => this.log(`socket error: ${err.message}`));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new Error(`WebSocket connect to ${this.opts.wsUrl} timed out`));
      }, this.timeoutMs);
      ws.once('open', () => {
        clearTimeout(timer);
        resolve();
      });
      ws.once('unexpected-response', (_req, res) => {
        clearTimeout(timer);
        reject(new Error(`WebSocket upgrade refused: HTTP ${res.statusCode}`));
        ws.terminate();
      });
      ws.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  /** Sends any JSON value (or a raw string) as it is, no id added. */
  send(msg: object | string): void {
    const ws = this.ws;
    if (ws === undefined || ws.readyState !== WebSocket.OPEN) throw new Error('socket is not open');
    ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg));
  }

  /**
   * Sends a request with a fresh `id` (unless it has one) and resolves with the server's
   * reply to it — `error` replies included; see `call` for throwing on them.
   */
  request(msg: Record<string, unknown>, timeoutMs = this.timeoutMs): Promise<ServerMessage> {
    const id: RequestId = (msg.id as RequestId | undefined) ?? `c${this.nextId++}`;
    return new Promise<ServerMessage>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`no reply to ${String(msg.type)} (id ${id}) within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      try {
        this.send({ ...msg, id });
      } catch (err) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(err as Error);
      }
    });
  }

  /** `request`, but an `error` reply throws `ServerError`. */
  async call(msg: Record<string, unknown>, timeoutMs = this.timeoutMs): Promise<ServerMessage> {
    const reply = await this.request(msg, timeoutMs);
    if (reply.type === 'error') throw new ServerError(reply);
    return reply;
  }

  /** Sends `join`; resolves with `joined`, throws `ServerError` on `error`. */
  async join(opts: { token?: string; name?: string; protocol?: number } = {}): Promise<JoinedMessage> {
    const reply = await this.call({
      type: 'join',
      protocol: opts.protocol ?? this.opts.protocol ?? 1,
      token: opts.token ?? this.opts.token,
      ...((opts.name ?? this.opts.name) !== undefined ? { name: opts.name ?? this.opts.name } : {}),
    });
    if (reply.type !== 'joined') throw new Error(`unexpected reply to join: ${reply.type}`);
    this.joined = reply;
    this.flushCandidates('publisher');
    this.flushCandidates('subscriber');
    this.log(`joined as ${reply.participant.identity} (${reply.participant.sid}) resumed=${reply.resumed}`);
    return reply;
  }

  /** After `dropWebSocket()`: a new socket and `join` (same token by default); PeerConnections are kept. */
  async reconnect(opts: { token?: string } = {}): Promise<JoinedMessage> {
    this.dropWebSocket();
    await this.connect();
    return this.join(opts);
  }

  private onSocketMessage(data: RawData, isBinary: boolean): void {
    if (isBinary) {
      this.failures.push('server sent a binary frame');
      return;
    }
    let msg: ServerMessage;
    try {
      msg = JSON.parse(data.toString()) as ServerMessage;
    } catch {
      this.failures.push(`server sent invalid JSON: ${data.toString().slice(0, 100)}`);
      return;
    }
    this.messages.push(msg);
    const id = (msg as { id?: RequestId }).id;
    if (id !== undefined && REPLY_TYPES.has(msg.type)) {
      const p = this.pending.get(id);
      if (p !== undefined) {
        this.pending.delete(id);
        clearTimeout(p.timer);
        p.resolve(msg);
        this.notify();
        return;
      }
    }
    if (msg.type !== 'candidate') {
      this.events.push(msg);
      this.log(`event ${describeMessage(msg)}`);
    }
    switch (msg.type) {
      case 'offer':
        this.enqueueSub(() => this.onSubscriberOffer(msg));
        break;
      case 'candidate':
        if (msg.target === 'publisher') this.enqueuePub(() => this.addRemoteCandidate('publisher', msg.candidate));
        else this.enqueueSub(() => this.addRemoteCandidate('subscriber', msg.candidate));
        break;
      case 'track_published':
        if (msg.participantSid === this.participantSid) this.onOwnTrackPublished(msg.track);
        break;
      case 'error':
        this.log(`server error ${msg.code}: ${msg.message}`);
        break;
      default:
        break;
    }
    this.notify();
  }

  private rejectPending(err: Error): void {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(err);
      this.pending.delete(id);
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
    const iceServers = this.opts.useIceServers && this.joined !== undefined ? this.joined.iceServers : [];
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
      iceServers,
      // max-compat would gather a transport per m-line of a first offer and, once the answer
      // bundles them, never close the extra ones (their UDP sockets leak past pc.close()).
      bundlePolicy: 'max-bundle',
      ...LOOPBACK_ICE,
      ...this.opts.peerConfig,
    };
  }

  private createPc(target: Target): RTCPeerConnection {
    const pc = new RTCPeerConnection(this.peerConfig(target));
    pc.onIceCandidate.subscribe((c: RTCIceCandidate | undefined) => {
      const init: IceCandidateInit | null = c === undefined ? null : { candidate: c.candidate, sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null };
      this.localCandidates[target].push(init);
      this.flushCandidates(target);
    });
    pc.connectionStateChange.subscribe((state) => {
      this.log(`${target} ${state}`);
      if (target === 'publisher' && state === 'connected') {
        // Packets sent before DTLS completed were dropped: start clean with a keyframe.
        for (const t of this.localTracks) t.source.forceKeyframe();
      }
      this.notify();
    });
    return pc;
  }

  private flushCandidates(target: Target): void {
    if (!this.canTrickle[target] || !this.socketOpen) return;
    const list = this.localCandidates[target];
    while (list.length > 0) {
      try {
        this.send({ type: 'candidate', target, candidate: list[0] });
      } catch {
        return;
      }
      list.shift();
    }
  }

  private async addRemoteCandidate(target: Target, c: IceCandidateInit | null): Promise<void> {
    const pc = target === 'publisher' ? this.publisherPc : this.subscriberPc;
    if (this.pcsClosed || c === null || c.candidate === '') return;
    if (pc === undefined || pc.remoteDescription === null) {
      if (this.remoteCandidates[target].length < 100) this.remoteCandidates[target].push(c);
      return;
    }
    try {
      await pc.addIceCandidate({
        candidate: c.candidate.replace(/^a=/, ''),
        sdpMid: c.sdpMid ?? undefined,
        sdpMLineIndex: c.sdpMLineIndex ?? undefined,
      });
    } catch (err) {
      this.failures.push(`${target} addIceCandidate: ${(err as Error).message}`);
    }
  }

  private async drainRemoteCandidates(target: Target): Promise<void> {
    const list = this.remoteCandidates[target];
    this.remoteCandidates[target] = [];
    for (const c of list) await this.addRemoteCandidate(target, c);
  }

  private enqueuePub<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.pubQueue.then(fn);
    this.pubQueue = run.catch(() => {});
    return run;
  }

  private enqueueSub(fn: () => Promise<void>): void {
    this.subQueue = this.subQueue.then(fn).catch((err: unknown) => {
      this.failures.push(`subscriber: ${(err as Error).message}`);
      this.notify();
    });
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
    return this.enqueuePub(async () => {
      if (this.closed || this.pcsClosed) throw new Error('client is closed');
      const pc = (this.publisherPc ??= this.createPc('publisher'));
      const locals = specs.map((spec) => {
        if (spec.kind === 'video' && spec.codec !== undefined && spec.codec !== this.videoCodec) {
          throw new Error(`this client publishes ${this.videoCodec}; create one with videoCodec: '${spec.codec}'`);
        }
        const codec: SyntheticCodec = spec.kind === 'audio' ? 'opus' : this.videoCodec === 'h264' ? 'h264' : 'vp8';
        if (spec.kind === 'video' && this.videoCodec === 'vp9') throw new Error('no synthetic VP9 source; publish vp8 or h264');
        const transceiver = pc.addTransceiver(spec.kind, { direction: 'sendonly' });
        const source = new SyntheticSource({
          codec,
          sourceId: spec.sourceId ?? this.nextSourceId++,
          fps: spec.fps,
          bitrateKbps: spec.bitrateKbps,
          keyframeIntervalFrames: spec.keyframeIntervalFrames,
        });
        const local = new LocalTrack({ kind: spec.kind, codec, transceiver, source, name: spec.name, sourceKind: spec.source });
        transceiver.sender.onPictureLossIndication.subscribe(() => {
          local.plisReceived++;
          source.forceKeyframe();
          this.notify();
        });
        transceiver.sender.onGenericNack.subscribe((nack) => {
          local.nacksReceived++;
          local.nackedSeqs.push(...nack.lost);
          this.notify();
        });
        this.localTracks.push(local);
        return { local, spec };
      });
      await pc.setLocalDescription(await pc.createOffer());
      for (const { local, spec } of locals) {
        local.mid = local.transceiver.mid ?? undefined;
        local.name ??= `${local.kind}-${local.mid}`;
        if (spec.trackInfo !== false && local.mid !== undefined) {
          // Sent before the offer (the server applies messages in order); not awaited.
          this.request({
            type: 'track_info',
            mid: local.mid,
            name: local.name,
            ...(spec.source !== undefined ? { source: spec.source } : {}),
          }).then(
            (reply) => {
              if (reply.type === 'error') this.failures.push(`track_info for mid ${local.mid}: ${reply.code} ${reply.message}`);
            },
            () => {},
          );
        }
      }
      let reply: ServerMessage;
      try {
        reply = await this.negotiatePublisher(pc);
      } catch (err) {
        for (const { local } of locals) local.unpublished = true;
        throw err;
      }
      if (reply.type !== 'answer') throw new Error(`unexpected reply to offer: ${reply.type}`);
      for (const { local, spec } of locals) {
        if (spec.startMedia !== false) this.startMedia(local);
      }
      return locals.map((l) => l.local);
    });
  }

  /** Sends the current local offer, applies the answer. */
  private async negotiatePublisher(pc: RTCPeerConnection): Promise<ServerMessage> {
    if (pc.signalingState !== 'have-local-offer') await pc.setLocalDescription(await pc.createOffer());
    const p = this.call({ type: 'offer', target: 'publisher', sdp: pc.localDescription!.sdp });
    this.canTrickle.publisher = true;
    this.flushCandidates('publisher');
    let reply: ServerMessage;
    try {
      reply = await p;
    } catch (err) {
      await pc.setLocalDescription({ type: 'rollback' }).catch(() => {});
      throw err;
    }
    if (reply.type === 'answer') {
      await pc.setRemoteDescription({ type: 'answer', sdp: reply.sdp });
      await this.drainRemoteCandidates('publisher');
    }
    return reply;
  }

  /** Starts (or resumes) feeding a local track's synthetic source into its sender. */
  startMedia(local: LocalTrack): void {
    const sender = local.transceiver.sender;
    local.source.start((packet) => sender.sendRtp(packet));
  }

  /** Pauses a local track's source (nothing is sent until `startMedia`). */
  stopMedia(local: LocalTrack): void {
    local.source.stop();
  }

  /** Stops sending on a track: direction inactive and a new offer (the server unpublishes it). */
  unpublish(local: LocalTrack): Promise<void> {
    return this.enqueuePub(async () => {
      local.source.stop();
      local.unpublished = true;
      const pc = this.publisherPc;
      if (pc === undefined || this.pcsClosed) return;
      local.transceiver.setDirection('inactive');
      await this.negotiatePublisher(pc);
    });
  }

  /** Waits for our own `track_published` for `local` and returns its sid. */
  waitForTrackSid(local: LocalTrack, timeoutMs = this.timeoutMs): Promise<string> {
    return this.waitUntil(() => local.trackSid, timeoutMs, () => `track_published for our ${local.kind} mid=${local.mid}`);
  }

  private onOwnTrackPublished(track: TrackInfo): void {
    if (this.localTracks.some((t) => t.trackSid === track.sid)) return;
    const unassigned = this.localTracks.filter((t) => t.trackSid === undefined && t.kind === track.kind && !t.unpublished);
    const local = unassigned.find((t) => t.name !== undefined && t.name === track.name) ?? unassigned[0];
    if (local === undefined) return;
    local.trackSid = track.sid;
    local.info = track;
  }

  /** `mute` request; with `stopSending` (default true) our source pauses/resumes too. */
  async mute(trackSid: string, muted: boolean, opts: { stopSending?: boolean } = {}): Promise<ServerMessage> {
    const reply = await this.call({ type: 'mute', trackSid, muted });
    const local = this.localTracks.find((t) => t.trackSid === trackSid);
    if (local !== undefined) {
      local.muted = muted;
      if (opts.stopSending !== false) {
        if (muted) local.source.stop();
        else if (!local.unpublished) this.startMedia(local);
      }
    }
    return reply;
  }

  // ---- subscribing -----------------------------------------------------------------------

  private async onSubscriberOffer(msg: MessageOf<'offer'>): Promise<void> {
    this.subscriberOffers++;
    if (this.closed || this.pcsClosed) return;
    this.latestOfferTracks = msg.tracks;
    const pc = (this.subscriberPc ??= this.createSubscriberPc());
    await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
    for (const t of pc.getTransceivers()) this.hookTransceiver(t);
    await this.drainRemoteCandidates('subscriber');
    await pc.setLocalDescription(await pc.createAnswer());
    this.applyTrackMapping(msg.tracks);
    const id = `sa${this.nextId++}`;
    const acked = this.request({ type: 'answer', id, target: 'subscriber', sdp: pc.localDescription!.sdp });
    this.canTrickle.subscriber = true;
    this.flushCandidates('subscriber');
    this.subscriberAnswers++;
    this.notify();
    acked.then(
      (reply) => {
        if (reply.type === 'error') {
          this.failures.push(`subscriber answer rejected: ${reply.code} ${reply.message}`);
          this.events.push(reply);
          this.notify();
        }
      },
      () => {},
    );
  }

  private createSubscriberPc(): RTCPeerConnection {
    const pc = this.createPc('subscriber');
    pc.onRemoteTransceiverAdded.subscribe((t) => this.hookTransceiver(t));
    return pc;
  }

  private hookTransceiver(t: RTCRtpTransceiver): void {
    if (!this.slots.has(t)) {
      this.slots.set(t, { transceiver: t, current: undefined });
      t.onTrack.subscribe((track) => this.attachTrack(t, track));
    }
    for (const track of t.receiver.tracks) this.attachTrack(t, track);
  }

  private attachTrack(t: RTCRtpTransceiver, track: MediaStreamTrack): void {
    if (this.attachedTracks.has(track)) return;
    this.attachedTracks.add(track);
    const slot = this.slots.get(t);
    if (slot === undefined) return;
    track.onReceiveRtp.subscribe((rtp) => {
      const rec = slot.current;
      if (rec === undefined || rec.ended) {
        this.unmappedPackets++;
        return;
      }
      const pt = rtp.header.payloadType;
      const mime = t.codecs.find((c) => c.payloadType === pt)?.mimeType ?? track.codec?.mimeType;
      rec.onPacket(rtp, mime === undefined ? undefined : codecName(mime));
      this.notify();
    });
    this.applyTrackMapping(this.latestOfferTracks);
  }

  /** Points each subscriber m-line at the track the latest offer says it carries. */
  private applyTrackMapping(tracks: MessageOf<'offer'>['tracks']): void {
    const pc = this.subscriberPc;
    if (pc === undefined) return;
    for (const t of pc.getTransceivers()) {
      if (!this.slots.has(t)) this.hookTransceiver(t);
      const slot = this.slots.get(t)!;
      const mid = t.mid ?? undefined;
      const info = mid === undefined ? undefined : tracks[mid];
      const cur = slot.current;
      if (info !== undefined && (cur === undefined || cur.trackSid !== info.trackSid)) {
        if (cur !== undefined) this.endRemote(cur);
        const rec = new RemoteTrack({
          mid: mid!,
          trackSid: info.trackSid,
          identity: info.identity,
          participantSid: info.participantSid,
          kind: info.kind,
          transceiver: t,
          keep: this.opts.keepPayloads ?? 32,
        });
        slot.current = rec;
        this.remoteTracks.push(rec);
      } else if (info === undefined && cur !== undefined) {
        this.endRemote(cur);
        slot.current = undefined;
      }
    }
    this.notify();
  }

  private endRemote(rec: RemoteTrack): void {
    if (rec.ended) return;
    rec.ended = true;
    rec.endedAt = Date.now();
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
    this.send({ type: 'leave' });
    const left = await this.waitForEvent('left', () => true, timeoutMs, { since });
    for (const t of this.localTracks) t.source.stop();
    await this.waitForSocketClose(timeoutMs).catch(() => {});
    return left;
  }

  /** Resolves when the current socket has closed, with its close code and reason. */
  waitForSocketClose(timeoutMs = this.timeoutMs): Promise<{ code: number; reason: string }> {
    return this.waitUntil(() => (this.socketOpen ? undefined : (this.socketClose ?? (this.ws === undefined ? { code: 0, reason: '' } : undefined))), timeoutMs, () => 'socket close');
  }

  /** Kills the socket without `leave` (no close frame); PeerConnections and media keep going. */
  dropWebSocket(): void {
    const ws = this.ws;
    if (ws === undefined) return;
    this.ws = undefined;
    this.socketClose = { code: 1006, reason: 'dropped by test' };
    ws.terminate();
    this.rejectPending(new Error('socket dropped'));
    this.notify();
  }

  /** Closes both PeerConnections and stops media (the socket stays). Later offers are ignored. */
  async closePeerConnections(): Promise<void> {
    this.pcsClosed = true;
    for (const t of this.localTracks) t.source.stop();
    const pcs = [this.publisherPc, this.subscriberPc].filter((p): p is RTCPeerConnection => p !== undefined);
    await Promise.allSettled(pcs.map((p) => p.close()));
    this.notify();
  }

  /**
   * Closes everything: sources, socket (without `leave` unless `{ leave: true }`),
   * PeerConnections, pending requests and waits. Idempotent.
   */
  close(opts: { leave?: boolean } = {}): Promise<void> {
    this.closing ??= (async () => {
      if (opts.leave && this.socketOpen && this.joined !== undefined) {
        await this.leave(3000).catch(() => {});
      }
      this.closed = true;
      for (const t of this.localTracks) t.source.stop();
      const ws = this.ws;
      if (ws !== undefined && ws.readyState !== WebSocket.CLOSED) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            ws.terminate();
            resolve();
          }, 1000);
          ws.once('close', () => {
            clearTimeout(timer);
            resolve();
          });
          if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
          else ws.close(1000, 'test client closed');
        });
      }
      this.rejectPending(new Error('client closed'));
      for (const w of [...this.waiters]) {
        this.waiters.delete(w);
        w.fail(new Error(`[${this.label}] client closed during a wait`));
      }
      await this.closePeerConnections();
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
