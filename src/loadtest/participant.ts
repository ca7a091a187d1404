/**
 * One load-test participant: a WebSocket speaking the signaling protocol v1
 * (docs/signaling.md), a `Subscriber` for what the server sends, and for publishers a
 * `Publisher`. Every wait is bounded; `close()` leaves, closes both PeerConnections and
 * the socket, and is idempotent.
 */
import type { PeerConfig } from 'werift';
import type { IceCandidateInit, ServerMessage, Target } from '../signaling/messages.ts';
import { Publisher, type PublisherOptions } from './publisher.ts';
import { Subscriber, type LatencyRecorder } from './subscriber.ts';

const REQUEST_TIMEOUT_MS = 10_000;
const LEAVE_TIMEOUT_MS = 2_000;
const REPLY_TYPES = new Set(['joined', 'answer', 'ack', 'pong', 'error']);

export interface ParticipantSpec {
  room: string;
  identity: string;
  publisher: boolean;
  /** Remote tracks this participant should end up receiving. */
  expectedTracks: number;
}

export interface ParticipantEnv {
  wsUrl: string;
  /** werift ICE settings (loopback pinning for local servers). */
  ice: Partial<PeerConfig>;
  /** Pass the `iceServers` of `joined` to the PeerConnections (remote servers). */
  useIceServers: boolean;
  publish: PublisherOptions;
  latency: LatencyRecorder;
  /** Counts a problem by its description. */
  problem(what: string): void;
}

type Pending = { resolve: (m: ServerMessage) => void; reject: (e: Error) => void; timer: NodeJS.Timeout };

export class Participant {
  readonly spec: ParticipantSpec;
  state: 'idle' | 'joining' | 'joined' | 'failed' | 'closed' = 'idle';
  failure: string | undefined;
  joinMs: number | undefined;
  /** Set when the server removed us (`left` we did not ask for, or the socket dropped). */
  dropped: string | undefined;
  publisher: Publisher | undefined;
  readonly subscriber: Subscriber;
  private readonly env: ParticipantEnv;
  private ws: WebSocket | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private leaving = false;
  /** Rejects when the socket closes (so a join stops waiting at once). */
  private socketGone: Promise<never> = new Promise<never>(() => {});
  /** Reason of a `left` the server sent. */
  private leftReason: string | undefined;
  private closing: Promise<void> | undefined;

  constructor(spec: ParticipantSpec, env: ParticipantEnv) {
    this.spec = spec;
    this.env = env;
    // Made up front: the server's first offer can arrive in the same read as `joined`, before
    // any continuation of the join request has run.
    this.subscriber = new Subscriber(env.ice, env.latency, {
      answer: async (sdp) => {
        const r = await this.request({ type: 'answer', target: 'subscriber', sdp }).catch((err: Error) => err);
        if (r instanceof Error) return this.closing === undefined ? r.message : undefined;
        return r.type === 'error' ? r.code : undefined;
      },
      candidate: (c) => this.sendCandidate('subscriber', c),
      problem: (what) => this.env.problem(what),
    });
  }

  /**
   * Opens the socket, joins with `token`, and for a publisher publishes and waits until its
   * connection is up, all within `timeoutMs`. Never throws: failures end in `state: 'failed'`.
   */
  async join(token: string, timeoutMs: number): Promise<void> {
    this.state = 'joining';
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs / 1000} s`)), timeoutMs);
    });
    let step = 'connect';
    try {
      await Promise.race([deadline, this.connect()]);
      const gone = this.socketGone;
      step = 'join';
      const reply = await Promise.race([deadline, gone, this.request({ type: 'join', protocol: 1, token, name: this.spec.identity })]);
      if (reply.type === 'error') throw new Error(`${reply.code}`);
      if (reply.type !== 'joined') throw new Error(`unexpected reply ${reply.type}`);
      const ice = this.env.useIceServers ? { ...this.env.ice, iceServers: reply.iceServers } : this.env.ice;
      if (this.spec.publisher) {
        step = 'publish';
        this.publisher = new Publisher(ice, this.env.publish, {
          request: (msg) => this.request(msg),
          candidate: (c) => this.sendCandidate('publisher', c),
          problem: (what) => this.env.problem(what),
        });
        await Promise.race([deadline, gone, this.publisher.publish()]);
        step = 'connect publisher';
        await Promise.race([deadline, gone, this.publisher.connected()]);
      }
      this.joinMs = performance.now() - started;
      if (this.closing === undefined) this.state = 'joined';
    } catch (err) {
      this.state = 'failed';
      this.failure = `${step}: ${(err as Error).message}`;
      if (step === 'connect publisher' && this.publisher !== undefined) this.failure += ` (${this.publisher.describe()})`;
      // Free what the attempt holds now; the server notices the socket go.
      void this.close();
    } finally {
      clearTimeout(timer);
    }
  }

  private connect(): Promise<void> {
    const ws = new WebSocket(this.env.wsUrl);
    this.ws = ws;
    ws.addEventListener('message', (ev) => this.onMessage(ev.data));
    this.socketGone = new Promise<never>((_, reject) => {
      ws.addEventListener('close', (ev) => {
        const left = this.leftReason === undefined ? 'without "left"' : `after "left" (${this.leftReason})`;
        reject(new Error(`server closed the socket (${ev.code} ${ev.reason || '-'}) ${left}`));
      });
    });
    this.socketGone.catch(() => {});
    ws.addEventListener('close', (ev) => {
      for (const p of this.pending.values()) {
        clearTimeout(p.timer);
        p.reject(new Error(`socket closed (${ev.code})`));
      }
      this.pending.clear();
      if (!this.leaving && this.state === 'joined') {
        this.dropped ??= `socket closed (${ev.code} ${ev.reason || '-'}) without "left"; ${this.connections()}`;
      }
    });
    return new Promise((resolve, reject) => {
      ws.addEventListener('open', () => resolve(), { once: true });
      ws.addEventListener('error', () => reject(new Error(`WebSocket to ${this.env.wsUrl} failed`)), { once: true });
    });
  }

  private send(msg: object): void {
    const ws = this.ws;
    if (ws === undefined || ws.readyState !== WebSocket.OPEN) throw new Error('socket is not open');
    ws.send(JSON.stringify(msg));
  }

  private request(msg: Record<string, unknown> & { type: string }): Promise<ServerMessage> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`no reply to ${msg.type} within ${REQUEST_TIMEOUT_MS / 1000} s`));
      }, REQUEST_TIMEOUT_MS);
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

  private sendCandidate(target: Target, candidate: IceCandidateInit | null): void {
    try {
      this.send({ type: 'candidate', target, candidate });
    } catch {
      // socket gone: nothing to trickle to
    }
  }

  private onMessage(data: unknown): void {
    let msg: ServerMessage;
    try {
      msg = JSON.parse(String(data)) as ServerMessage;
    } catch {
      this.env.problem('server sent invalid JSON');
      return;
    }
    if (msg.type === 'joined' && this.env.useIceServers) this.subscriber.setIceServers(msg.iceServers);
    const id = (msg as { id?: unknown }).id;
    if (typeof id === 'number' && REPLY_TYPES.has(msg.type)) {
      const p = this.pending.get(id);
      if (p !== undefined) {
        this.pending.delete(id);
        clearTimeout(p.timer);
        p.resolve(msg);
        return;
      }
    }
    switch (msg.type) {
      case 'offer':
        this.subscriber.handleOffer(msg);
        break;
      case 'candidate':
        if (msg.target === 'publisher') this.publisher?.addRemoteCandidate(msg.candidate);
        else this.subscriber.addRemoteCandidate(msg.candidate);
        break;
      case 'left':
        this.leftReason = msg.reason;
        if (!this.leaving) this.dropped ??= `left: ${msg.reason}; ${this.connections()}`;
        break;
      case 'error':
        this.env.problem(`server error ${msg.code}`);
        break;
      default:
        break;
    }
  }

  /** Our side's view of the two PeerConnections, for drop reports. */
  private connections(): string {
    return `our publisher connection ${this.publisher?.connectionState ?? 'none'}, subscriber connection ${this.subscriber.connectionState}`;
  }

  /** Stops sending (first step of a clean end, so teardown does not race new packets). */
  stopMedia(): void {
    this.publisher?.stopMedia();
  }

  /** Leaves (bounded wait for `left`), closes the PeerConnections and the socket. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.leaving = true;
      this.stopMedia();
      const ws = this.ws;
      if (ws !== undefined && ws.readyState === WebSocket.OPEN && this.state === 'joined') {
        const left = new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, LEAVE_TIMEOUT_MS);
          ws.addEventListener('close', () => {
            clearTimeout(timer);
            resolve();
          });
        });
        this.request({ type: 'leave' }).catch(() => {});
        await left;
      }
      if (this.state !== 'failed') this.state = 'closed';
      await Promise.all([this.publisher?.close(), this.subscriber.close()]);
      for (const p of this.pending.values()) {
        clearTimeout(p.timer);
        p.reject(new Error('closed'));
      }
      this.pending.clear();
      if (ws !== undefined && ws.readyState !== WebSocket.CLOSED) ws.close();
    })();
    return this.closing;
  }
}
