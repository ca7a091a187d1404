/**
 * SignalingClient: a Node participant speaking the signaling protocol v1
 * (docs/signaling.md) over a WebSocket, with werift PeerConnections for publishing
 * (PublisherConnection: we offer) and receiving (SubscriberConnection: the server offers).
 * The tests (test/helpers/client.ts) and the load tool (src/loadtest) are both built on it.
 *
 * What it takes care of: request ids and replies (every request is bounded by a timeout,
 * and fails at once when the socket closes), trickling local candidates once the offer
 * or answer they belong to is out and the socket is joined, holding remote candidates
 * that arrive before their description, tying our own `track_published` to its
 * transceiver, answering only the newest subscriber offer, and `leave`. `close()` is
 * idempotent and leaves no socket, timer or PeerConnection behind.
 */
import type { PeerConfig } from 'werift';
import type { IceCandidateInit, ServerMessage, Target } from '../signaling/messages.ts';
import type { LocalTrack } from './local-track.ts';
import { PublisherConnection, type PublishSpec } from './publisher-connection.ts';
import { ServerError } from './server-error.ts';
import { SubscriberConnection, type SinkFactory, type TrackSink } from './subscriber-connection.ts';

export type MessageOf<T extends ServerMessage['type']> = Extract<ServerMessage, { type: T }>;
export type JoinedMessage = MessageOf<'joined'>;
export type RequestId = string | number;

export interface SignalingClientHooks {
  /** Every server message, in order; `reply`: it answered one of our requests. */
  message?(msg: ServerMessage, reply: boolean): void;
  /** Something went wrong on our side: a refused answer, a failed negotiation, bad JSON from the server. */
  problem?(what: string): void;
  /** Something observable changed (a message, a connection state, a PLI): re-check waits. */
  changed?(): void;
  /** The socket closed by itself or by the server (not by dropSocket()). */
  socketClosed?(code: number, reason: string): void;
  log?(line: string): void;
}

export interface SignalingClientOptions<S extends TrackSink> {
  /** e.g. ws://127.0.0.1:PORT/video/ws */
  wsUrl: string;
  /** werift settings of each connection; `pendingRtp` is forced off (SyntheticSource reuses its packet object). */
  peerConfig(target: Target): Partial<PeerConfig>;
  /** Pass the `iceServers` of `joined` to the PeerConnections (default false: loopback needs none). */
  useIceServers?: boolean;
  /** Timeout of connecting and of requests (default 10000 ms). */
  timeoutMs?: number;
  /** Where each subscribed track's packets go. */
  sinkFor: SinkFactory<S>;
  hooks?: SignalingClientHooks;
}

interface Pending {
  resolve: (m: ServerMessage) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

const REPLY_TYPES = new Set(['joined', 'answer', 'ack', 'pong', 'error']);
const CLOSE_WAIT_MS = 1000;

export class SignalingClient<S extends TrackSink = TrackSink> {
  readonly wsUrl: string;
  readonly timeoutMs: number;
  /** The `joined` reply (replaced by a later join on a new socket). */
  joined: JoinedMessage | undefined;
  /** Made by the first `publish`. */
  publisher: PublisherConnection | undefined;
  readonly subscriber: SubscriberConnection<S>;
  /** How the current (or last) socket closed. */
  socketClose: { code: number; reason: string } | undefined;
  /** The reason of a `left` the server sent. */
  leftReason: string | undefined;
  private readonly opts: SignalingClientOptions<S>;
  private readonly hooks: SignalingClientHooks;
  private ws: WebSocket | undefined;
  private nextId = 1;
  private readonly pending = new Map<RequestId, Pending>();
  private readonly canTrickle: Record<Target, boolean> = { publisher: false, subscriber: false };
  private readonly localCandidates: Record<Target, (IceCandidateInit | null)[]> = { publisher: [], subscriber: [] };
  /** `leave()` calls waiting for `left` (undefined: the socket went first). */
  private readonly leaveWaiters = new Set<(left: MessageOf<'left'> | undefined) => void>();
  private pcsClosed = false;
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(opts: SignalingClientOptions<S>) {
    this.opts = opts;
    this.wsUrl = opts.wsUrl;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.hooks = opts.hooks ?? {};
    this.subscriber = new SubscriberConnection<S>(
      () => this.peerConfig('subscriber'),
      {
        answer: (sdp) => this.request({ type: 'answer', id: `sa${this.nextId++}`, target: 'subscriber', sdp }),
        candidate: (c) => this.localCandidate('subscriber', c),
        startTrickle: () => this.startTrickle('subscriber'),
        problem: (what) => this.problem(what),
        changed: () => this.changed(),
      },
      opts.sinkFor,
    );
  }

  get socketOpen(): boolean {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  get identity(): string | undefined {
    return this.joined?.participant.identity;
  }

  get participantSid(): string | undefined {
    return this.joined?.participant.sid;
  }

  get localTracks(): readonly LocalTrack[] {
    return this.publisher?.tracks ?? [];
  }

  // ---- socket ------------------------------------------------------------------------------

  /** Opens a WebSocket (without joining). */
  async connect(): Promise<void> {
    if (this.closed) throw new Error('client is closed');
    const ws = new WebSocket(this.wsUrl);
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    this.socketClose = undefined;
    ws.addEventListener('message', (ev) => {
      if (this.ws === ws) this.onFrame(ev.data);
    });
    ws.addEventListener('close', (ev) => {
      if (this.ws !== ws) return;
      this.socketClose = { code: ev.code, reason: ev.reason };
      this.log(`socket closed ${ev.code} ${ev.reason}`);
      this.rejectPending(new Error(`socket closed (${ev.code} ${ev.reason || '-'})`));
      for (const w of [...this.leaveWaiters]) w(undefined);
      this.hooks.socketClosed?.(ev.code, ev.reason);
      this.changed();
    });
    ws.addEventListener('error', () => this.log('socket error'));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        ws.close();
        reject(new Error(`WebSocket connect to ${this.wsUrl} timed out`));
      }, this.timeoutMs);
      ws.addEventListener('open', () => {
        clearTimeout(timer);
        resolve();
      }, { once: true });
      ws.addEventListener('error', () => {
        clearTimeout(timer);
        reject(new Error(`WebSocket to ${this.wsUrl} failed`));
      }, { once: true });
    });
  }

  /** Sends any JSON value (or a raw string) as it is. */
  send(msg: object | string): void {
    const ws = this.ws;
    if (ws === undefined || ws.readyState !== WebSocket.OPEN) throw new Error('socket is not open');
    ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg));
  }

  /** Sends a request with a fresh `id` (unless it has one); resolves with the reply, `error` included. */
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
  async join(opts: { token: string; name?: string; protocol?: number }, timeoutMs = this.timeoutMs): Promise<JoinedMessage> {
    const reply = await this.call({ type: 'join', protocol: opts.protocol ?? 1, token: opts.token, ...(opts.name !== undefined ? { name: opts.name } : {}) }, timeoutMs);
    if (reply.type !== 'joined') throw new Error(`unexpected reply to join: ${reply.type}`);
    this.flushCandidates('publisher');
    this.flushCandidates('subscriber');
    this.log(`joined as ${reply.participant.identity} (${reply.participant.sid}) resumed=${reply.resumed}`);
    return reply;
  }

  /**
   * Sends `leave` and waits (at most `timeoutMs`) for the server's `left` — it may echo our
   * id or not — or the socket closing. Resolves with `left`, if it came.
   */
  leave(timeoutMs = this.timeoutMs): Promise<MessageOf<'left'> | undefined> {
    if (!this.socketOpen) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const done = (left: MessageOf<'left'> | undefined) => {
        clearTimeout(timer);
        this.leaveWaiters.delete(done);
        resolve(left);
      };
      const timer = setTimeout(() => done(undefined), timeoutMs);
      this.leaveWaiters.add(done);
      try {
        this.send({ type: 'leave', id: `l${this.nextId++}` });
      } catch {
        done(undefined);
      }
    });
  }

  /** Drops the socket without `leave` (the server sees it go); PeerConnections and media keep going. */
  dropSocket(reason = 'dropped'): void {
    const ws = this.ws;
    if (ws === undefined) return;
    this.ws = undefined;
    this.socketClose = { code: 1006, reason };
    ws.close();
    this.rejectPending(new Error(`socket ${reason}`));
    for (const w of [...this.leaveWaiters]) w(undefined);
    this.changed();
  }

  // ---- media -------------------------------------------------------------------------------

  /** Publishes tracks in one offer (the publisher connection is made on first use). Throws `ServerError` if refused. */
  publish(specs: PublishSpec[]): Promise<LocalTrack[]> {
    if (this.closed || this.pcsClosed) return Promise.reject(new Error('client is closed'));
    this.publisher ??= new PublisherConnection(this.peerConfig('publisher'), {
      request: (msg) => this.request(msg),
      candidate: (c) => this.localCandidate('publisher', c),
      startTrickle: () => this.startTrickle('publisher'),
      problem: (what) => this.problem(what),
      changed: () => this.changed(),
    });
    return this.publisher.publish(specs);
  }

  /** Closes both PeerConnections and stops media (the socket stays); later offers are ignored. */
  async closePeerConnections(): Promise<void> {
    this.pcsClosed = true;
    await Promise.allSettled([this.publisher?.close(), this.subscriber.close()]);
    this.changed();
  }

  /** Closes everything: socket (after a bounded `leave` if asked), PeerConnections, pending requests. Idempotent. */
  close(opts: { leave?: boolean; leaveTimeoutMs?: number } = {}): Promise<void> {
    this.closing ??= (async () => {
      this.publisher?.stopMedia();
      if (opts.leave && this.socketOpen && this.joined !== undefined) await this.leave(opts.leaveTimeoutMs ?? 3000);
      this.closed = true;
      const ws = this.ws;
      if (ws !== undefined && ws.readyState !== WebSocket.CLOSED) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, CLOSE_WAIT_MS);
          ws.addEventListener('close', () => {
            clearTimeout(timer);
            resolve();
          });
          ws.close(1000, 'client closed');
        });
      }
      this.rejectPending(new Error('client closed'));
      await this.closePeerConnections();
    })();
    return this.closing;
  }

  // ---- internals ---------------------------------------------------------------------------

  private peerConfig(target: Target): Partial<PeerConfig> {
    const base = this.opts.peerConfig(target);
    const iceServers = this.opts.useIceServers && this.joined !== undefined ? { iceServers: this.joined.iceServers } : {};
    return { ...base, ...iceServers, pendingRtp: false };
  }

  private onFrame(data: unknown): void {
    if (typeof data !== 'string') {
      this.problem('server sent a binary frame');
      return;
    }
    let msg: ServerMessage;
    try {
      msg = JSON.parse(data) as ServerMessage;
    } catch {
      this.problem(`server sent invalid JSON: ${data.slice(0, 100)}`);
      return;
    }
    const id = (msg as { id?: RequestId }).id;
    const pending = id !== undefined && REPLY_TYPES.has(msg.type) ? this.pending.get(id) : undefined;
    if (msg.type === 'joined' && pending !== undefined) this.joined = msg;
    this.hooks.message?.(msg, pending !== undefined);
    if (pending !== undefined) {
      this.pending.delete(id!);
      clearTimeout(pending.timer);
      pending.resolve(msg);
      this.changed();
      return;
    }
    switch (msg.type) {
      case 'offer':
        this.subscriber.handleOffer(msg);
        break;
      case 'candidate':
        if (msg.target === 'publisher') this.publisher?.addRemoteCandidate(msg.candidate);
        else this.subscriber.addRemoteCandidate(msg.candidate);
        break;
      case 'track_published':
        if (msg.participantSid === this.participantSid) this.publisher?.onOwnTrackPublished(msg.track);
        break;
      case 'left':
        this.leftReason = msg.reason;
        for (const w of [...this.leaveWaiters]) w(msg);
        break;
      default:
        break;
    }
    this.changed();
  }

  private localCandidate(target: Target, c: IceCandidateInit | null): void {
    this.localCandidates[target].push(c);
    this.flushCandidates(target);
  }

  private startTrickle(target: Target): void {
    this.canTrickle[target] = true;
    this.flushCandidates(target);
  }

  private flushCandidates(target: Target): void {
    if (!this.canTrickle[target] || !this.socketOpen || this.joined === undefined) return;
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

  private rejectPending(err: Error): void {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(err);
      this.pending.delete(id);
    }
  }

  private problem(what: string): void {
    this.log(what);
    this.hooks.problem?.(what);
  }

  private changed(): void {
    this.hooks.changed?.();
  }

  private log(line: string): void {
    this.hooks.log?.(line);
  }
}
