import type { WebSocket as ClientSocket } from 'ws';
import type { TokenService } from '../auth/tokens.ts';
import { AppError } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import type { Config } from '../config.ts';
import { ClientConnection, POLICY_VIOLATION_CLOSE } from '../signaling/client-connection.ts';
import type { NodeRecord } from '../cluster/node-registry.ts';
import { verifyJoin } from '../signaling/join-token.ts';
import { parseClientMessage, type RequestId } from '../signaling/parse-message.ts';
import { SIGNALING_PATH } from '../signaling/ws-route.ts';
import { MAX_REPLACEMENTS, type NodeHops } from './node-hops.ts';
import type { WorkerPool } from './worker-pool.ts';

export interface EdgeSessionDeps {
  pool: WorkerPool;
  tokens: TokenService;
  config: Config;
  log: Logger;
  /** The cluster's placement and the node credential (src/edge/node-hops.ts). */
  hops: NodeHops;
  /** The socket was relayed here by another node (its upgrade had a valid credential): its room is here. */
  relayed: boolean;
}

type Frame = { data: Buffer; isBinary: boolean };
/** How long after its join a session counts as settling (offers, answers and candidates still flowing). */
const SETTLE_MS = 5000;

/**
 * One client WebSocket at the edge. Until the client joins, the edge answers it itself
 * (with the same validation and errors as a worker's session); a valid `join` picks the
 * room's media worker, and from then on frames are relayed both ways untouched over a
 * WebSocket to that worker, whose session does the real work. If the worker dies, the
 * client is told `left` with reason `media_worker_failed` and its socket is closed, so
 * the SDK joins again (and lands on a live worker). In a cluster, a join for a room another
 * node hosts is relayed the same way to that node's WebSocket, with the hop's credential on
 * the upgrade; that node's edge then relays it to its worker (never further).
 */
export class EdgeSession extends ClientConnection {
  private readonly deps: EdgeSessionDeps;
  private queue: Promise<void> = Promise.resolve();
  private upstream: WebSocket | undefined;
  private upstreamOpen: Promise<void> | undefined;
  private room: string | undefined;
  /** The worker's session accepted our join; every frame is now the worker's business. */
  private joined = false;
  private joinedAt = 0;
  private closed = false;
  /** The upstream socket goes to another node (counted in the cluster gauges while it does). */
  private relayingOut = false;

  constructor(ws: ClientSocket, deps: EdgeSessionDeps) {
    super(ws, deps.log, deps.config.limits);
    this.deps = deps;
    if (deps.relayed) deps.hops.counts.connections.in++;
    ws.on('close', () => this.onClientClose());
  }

  protected onClientFrame(data: Buffer, isBinary: boolean): void {
    const frame = { data, isBinary };
    this.queue = this.queue.then(() => this.onFrame(frame)).catch((err: unknown) => this.log.error({ err }, 'edge relay failed'));
  }

  private async onFrame(frame: Frame): Promise<void> {
    if (this.closed) return;
    if (this.joined) return this.forward(frame);
    const parsed = parseClientMessage(frame.data, frame.isBinary, this.deps.config.limits.maxMessageBytes);
    if (!parsed.ok) return this.sendError(parsed.id, parsed.error);
    const msg = parsed.msg;
    if (msg.type === 'ping') return this.send({ type: 'pong', id: msg.id, t: msg.t });
    if (msg.type !== 'join') {
      // Until the worker has accepted a join, it is the one to answer (it may still be on its way).
      if (this.upstream !== undefined) return this.forward(frame);
      return this.sendError(msg.id, new AppError('NOT_JOINED', 'send "join" first'));
    }
    let room: string;
    let node: NodeRecord | undefined;
    try {
      room = (await verifyJoin(msg, this.deps.tokens)).room;
      node = await this.deps.hops.place(room, this.deps.relayed);
    } catch (err) {
      return this.sendError(msg.id, err);
    }
    if (this.closed || !this.open) return;
    if (room !== this.room) {
      // A join the worker refused, then another for a different room: start over there.
      this.dropUpstream();
      try {
        await this.attach(room, node);
      } catch (err) {
        return this.sendError(msg.id, err);
      }
      if (this.closed) return;
    }
    return this.forward(frame, msg.id);
  }

  /**
   * Opens the upstream socket for the room. If its node cannot be reached at all, that node
   * is suspect (src/edge/node-hops.ts) and the room is placed again, at most
   * MAX_REPLACEMENTS times; a failure that remains is the join's to report (`forward`).
   */
  private async attach(room: string, node: NodeRecord | undefined): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      this.connect(room, node);
      if (node === undefined || attempt === MAX_REPLACEMENTS) return;
      const opened = await this.upstreamOpen!.then(
        () => true,
        () => false,
      );
      if (opened || this.closed || !(await this.deps.hops.unreachable(node))) return;
      this.dropUpstream();
      node = await this.deps.hops.place(room, this.deps.relayed);
      if (this.closed) return;
    }
  }

  /** Opens the upstream socket: to the room's worker here, or to the hosting node `node`. */
  private connect(room: string, node: NodeRecord | undefined): void {
    let up: WebSocket;
    let unavailable: string;
    if (node === undefined) {
      const worker = this.deps.pool.assign(room);
      const url = worker.wsUrl;
      if (worker.state !== 'ready' || url === '') throw new AppError('MEDIA_UNAVAILABLE', 'the media worker for this room is not available');
      up = new WebSocket(url);
      unavailable = 'the media worker for this room is not available';
      this.log = this.deps.log.child({ room, worker: worker.index });
    } else {
      const url = `${node.url.replace(/^http/, 'ws')}${SIGNALING_PATH}`;
      up = new WebSocket(url, { headers: this.deps.hops.credential('GET', SIGNALING_PATH) });
      this.countOut(true);
      unavailable = `node "${node.id}" hosting this room is not answering`;
      this.log = this.deps.log.child({ room, node: node.id });
    }
    up.binaryType = 'arraybuffer';
    this.upstream = up;
    this.room = room;
    let opened = false;
    this.upstreamOpen = new Promise((resolve, reject) => {
      up.addEventListener(
        'open',
        () => {
          opened = true;
          resolve();
        },
        { once: true },
      );
      up.addEventListener('error', () => reject(new AppError('MEDIA_UNAVAILABLE', unavailable)), { once: true });
    });
    // Settled either way; the rejection is read by whoever forwards next.
    this.upstreamOpen.catch(() => {});
    up.addEventListener('message', (ev) => this.onUpstreamMessage(ev.data as string | ArrayBuffer));
    // One that never opened is the join's failure to report (forward), or to place elsewhere (attach): the client is not told `left`.
    up.addEventListener('close', (ev) => opened && this.onUpstreamClose(up, ev.code, ev.reason));
  }

  private async forward(frame: Frame, joinId?: RequestId): Promise<void> {
    const up = this.upstream;
    if (up === undefined) return;
    try {
      await this.upstreamOpen;
    } catch (err) {
      if (joinId !== undefined || !this.joined) {
        this.dropUpstream();
        return this.sendError(joinId, err);
      }
      return;
    }
    if (up.readyState === WebSocket.OPEN) up.send(frame.isBinary ? frame.data : frame.data.toString('utf8'));
  }

  private onUpstreamMessage(data: string | ArrayBuffer): void {
    const text = typeof data === 'string' ? data : Buffer.from(data).toString('utf8');
    if (!this.joined && text.includes('"joined"')) {
      try {
        if ((JSON.parse(text) as { type?: unknown }).type === 'joined') {
          this.joined = true;
          this.joinedAt = Date.now();
          this.joinedRoom();
        }
      } catch {
        // a worker only sends JSON; nothing to learn from anything else
      }
    }
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(text);
  }

  private onUpstreamClose(up: WebSocket, code: number, reason: string): void {
    if (up !== this.upstream || this.closed) return;
    this.upstream = undefined;
    this.countOut(false);
    // The worker's session closes with 1000 (left), 1001 (shutdown) or 1008 (a limit);
    // anything else is a worker that went away under us.
    if (code === 1000 || code === 1001 || code === POLICY_VIOLATION_CLOSE) {
      this.ws.close(code, reason);
      return;
    }
    this.log.warn({ code }, 'media worker connection lost; telling the client');
    this.send({ type: 'left', reason: 'media_worker_failed' });
    this.ws.close(1011, 'media worker failed');
  }

  private dropUpstream(): void {
    const up = this.upstream;
    this.upstream = undefined;
    this.upstreamOpen = undefined;
    this.room = undefined;
    this.joined = false;
    this.countOut(false);
    if (up !== undefined && up.readyState <= WebSocket.OPEN) up.close(1000);
  }

  private onClientClose(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.deps.relayed) this.deps.hops.counts.connections.in--;
    // The worker's session sees a dropped socket and keeps the participant for the reconnect grace.
    this.dropUpstream();
  }

  private countOut(relaying: boolean): void {
    if (this.relayingOut === relaying) return;
    this.relayingOut = relaying;
    this.deps.hops.counts.connections.out += relaying ? 1 : -1;
  }

  /**
   * Not in a room yet (maybe a rejoin on its way through here), or joined so recently that
   * its media may still be negotiated over this socket: a draining node waits for it.
   */
  get settling(): boolean {
    return !this.closed && (!this.joined || Date.now() - this.joinedAt < SETTLE_MS);
  }
}
