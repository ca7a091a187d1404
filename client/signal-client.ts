import type { ClientMessage, ServerMessage } from '../src/signaling/messages.ts';
import { Emitter, RoomError } from './events.ts';

/** Replies the server sends to a request that carried an `id`. */
type Reply = Extract<ServerMessage, { type: 'joined' | 'answer' | 'ack' | 'pong' }>;
/** Everything else the server sends: pushes that are not a reply to us. */
export type ServerPush = Exclude<ServerMessage, Reply | { type: 'error' }>;

interface SignalClientEvents {
  message: [ServerPush];
  /** An `error` that answers no request of ours (e.g. a refused candidate). */
  error: [RoomError];
  /** The socket is gone (only when we did not close it ourselves). */
  close: [code: number, reason: string];
}

const OPEN_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 15_000;

interface Pending {
  resolve: (msg: Reply) => void;
  reject: (err: RoomError) => void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * One WebSocket to the server's `/video/ws`, speaking protocol v1 (docs/signaling.md).
 * Requests get an `id` and a promise of their reply; everything else arrives as `message`.
 * A SignalClient is single use: after `close` a new one is opened.
 */
export class SignalClient extends Emitter<SignalClientEvents> {
  private readonly ws: WebSocket;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;

  private constructor(ws: WebSocket) {
    super();
    this.ws = ws;
    ws.onmessage = (ev) => this.onMessage(ev.data);
    ws.onclose = (ev) => this.onClose(ev.code, ev.reason);
  }

  /** Opens the socket; rejects with `CONNECT_FAILED` if it cannot. */
  static open(url: string): Promise<SignalClient> {
    return new Promise((resolve, reject) => {
      let ws: WebSocket;
      try {
        ws = new WebSocket(url);
      } catch (err) {
        reject(new RoomError('CONNECT_FAILED', `bad signaling URL ${url}: ${(err as Error).message}`));
        return;
      }
      const fail = (why: string) => {
        clearTimeout(timer);
        ws.onopen = ws.onerror = ws.onclose = null;
        ws.close();
        reject(new RoomError('CONNECT_FAILED', `cannot reach the server at ${url} (${why})`));
      };
      const timer = setTimeout(() => fail('timed out'), OPEN_TIMEOUT_MS);
      ws.onerror = () => fail('connection refused or closed');
      ws.onclose = () => fail('connection refused or closed');
      ws.onopen = () => {
        clearTimeout(timer);
        ws.onopen = ws.onerror = null;
        resolve(new SignalClient(ws));
      };
    });
  }

  get isOpen(): boolean {
    return !this.closed && this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends a message and waits for the reply that echoes its id (or its `error`). */
  request<T extends Reply['type']>(msg: ClientMessage, expect: T): Promise<Extract<Reply, { type: T }>> {
    if (!this.isOpen) return Promise.reject(new RoomError('SIGNALING_CLOSED', 'the signaling connection is closed'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RoomError('TIMEOUT', `no reply to "${msg.type}" within ${REQUEST_TIMEOUT_MS / 1000} s`));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(id, {
        resolve: (reply) => {
          if (reply.type === expect) resolve(reply as Extract<Reply, { type: T }>);
          else reject(new RoomError('INTERNAL', `expected "${expect}" in reply to "${msg.type}", got "${reply.type}"`));
        },
        reject,
        timer,
      });
      this.ws.send(JSON.stringify({ ...msg, id }));
    });
  }

  /** Fire and forget: failures still come back, as an `error` event. */
  send(msg: ClientMessage): void {
    if (this.isOpen) this.ws.send(JSON.stringify(msg));
  }

  private onMessage(data: unknown): void {
    if (typeof data !== 'string') return;
    let msg: ServerMessage;
    try {
      msg = JSON.parse(data) as ServerMessage;
    } catch {
      return;
    }
    const id = 'id' in msg ? msg.id : undefined;
    const pending = typeof id === 'number' ? this.pending.get(id) : undefined;
    if (pending !== undefined && typeof id === 'number') {
      this.pending.delete(id);
      clearTimeout(pending.timer);
      if (msg.type === 'error') pending.reject(new RoomError(msg.code, msg.message));
      else pending.resolve(msg as Reply);
      return;
    }
    if (msg.type === 'error') this.emit('error', new RoomError(msg.code, msg.message));
    else if (msg.type !== 'joined' && msg.type !== 'answer' && msg.type !== 'ack' && msg.type !== 'pong') this.emit('message', msg);
  }

  private onClose(code: number, reason: string): void {
    const wasOpen = !this.closed;
    this.shutDown();
    if (wasOpen) this.emit('close', code, reason);
  }

  private shutDown(): void {
    this.closed = true;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new RoomError('SIGNALING_CLOSED', 'the signaling connection closed before the reply'));
    }
    this.pending.clear();
  }

  /** Idempotent; emits no `close` event (the caller knows). */
  close(): void {
    if (this.closed) return;
    this.shutDown();
    this.removeAllListeners();
    this.ws.onmessage = this.ws.onclose = null;
    this.ws.close(1000, 'client closed');
  }
}
