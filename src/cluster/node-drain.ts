import type { Logger } from '../common/logger.ts';

/**
 * Rooms handed on per step, and the step: 8 every 250 ms (32 rooms a second), so a node
 * with many rooms does not send every participant's rejoin to its neighbours at once.
 */
const MOVE_BURST = 8;
const DRAIN_STEP_MS = 250;
/** Empty for this long (no room, no participant, no join settling) before the drain is over: a rejoin may be a moment away. */
const EMPTY_FOR_MS = 500;
/**
 * And this long after the last room with participants moved: a participant that reaches the cluster through
 * this node rejoins through it (relayed to the room's new node), and a busy client may
 * take a few seconds to come back; one still on its way when the node exits rejoins
 * elsewhere after its reconnect backoff.
 */
const REJOIN_WINDOW_MS = 5000;

/** What a drain needs of its node (the Cluster builds it). */
export interface DrainNode {
  /** This node's id. */
  readonly id: string;
  /** The nodes that may take the room (live, not draining, under their limits), in its rendezvous order. */
  order(room: string): string[];
  /** Rooms hosted here, or claimed here and on their way. */
  hostedRooms(): string[];
  /** Participants in the rooms hosted here, and connections joining (or just joined) through here. */
  participants(): number;
  /** Passes the room's claim to `to`; false if this node no longer held it. Throws when Redis cannot be asked. */
  handOver(room: string, to: string): Promise<boolean>;
  /** Closes the room here with `room_moved`: its participants join again, where its claim now is. */
  moveAway(room: string): void;
}

export interface DrainOutcome {
  /** `empty`: nothing hosted here any more; `deadline`: time ran out; `cancelled`: the drain was stopped. */
  ended: 'empty' | 'deadline' | 'cancelled';
  moved: number;
  /** Rooms still hosted here. */
  left: number;
  ms: number;
}

type Waiter = (ended: DrainOutcome['ended']) => void;

/**
 * A node emptying itself (issue 10, item 5): every step, up to MOVE_BURST of the rooms it
 * hosts are handed to the next node of their rendezvous order (the claim first, so each
 * rejoin is placed there whatever the nodes' views say), then closed here with `room_moved`,
 * which the SDK follows at once. A room no other node can take stays and is tried again
 * every step. The node is empty once its workers report no room and no participant. The
 * Cluster owns it (it publishes the draining flag); `close()` stops it and is idempotent.
 */
export class NodeDrain {
  private readonly node: DrainNode;
  private readonly log: Logger;
  private readonly startedAt = Date.now();
  /** Rooms handed on that are still closing here (their workers report them until their participants are gone). */
  private readonly moving = new Set<string>();
  private moved = 0;
  private readonly waiters = new Set<Waiter>();
  /** The process exits once drained (SIGTERM): no one may cancel it. */
  stopping = false;
  private timer: NodeJS.Timeout | undefined;
  private started = false;
  private closed = false;
  private emptyLogged = false;
  private emptySince: number | undefined;
  private lastMoveAt = 0;

  constructor(node: DrainNode, log: Logger) {
    this.node = node;
    this.log = log.child({ node: node.id });
  }

  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    this.log.info({ rooms: this.toMove() }, 'draining: moving this node\'s rooms to other nodes');
    void this.step();
  }

  /** Rooms hosted here that are not handed on yet. */
  toMove(): number {
    return this.node.hostedRooms().filter((r) => !this.moving.has(r)).length;
  }

  /** Resolves once the node hosts nothing, or after `timeoutMs`, or when the drain is closed. */
  settled(timeoutMs: number): Promise<DrainOutcome> {
    if (this.closed) return Promise.resolve(this.outcome('cancelled'));
    if (this.emptyLogged && this.isEmpty()) return Promise.resolve(this.outcome('empty'));
    return new Promise((resolve) => {
      const waiter: Waiter = (ended) => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
        resolve(this.outcome(ended));
      };
      // Past the deadline nothing more is moved: what is left is closed as a shutdown.
      const timer = setTimeout(() => {
        this.log.warn(this.outcome('deadline'), 'drain deadline: the rooms left here are closed as a shutdown');
        this.end('deadline');
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }

  close(): void {
    this.end('cancelled');
  }

  private end(ended: DrainOutcome['ended']): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    for (const w of [...this.waiters]) w(ended);
  }

  private async step(): Promise<void> {
    if (this.closed) return;
    const hosted = this.node.hostedRooms();
    for (const room of this.moving) if (!hosted.includes(room)) this.moving.delete(room);
    const pending = hosted.filter((r) => !this.moving.has(r));
    const batch: { room: string; to: string }[] = [];
    for (const room of pending) {
      if (batch.length === MOVE_BURST) break;
      const to = this.node.order(room).find((id) => id !== this.node.id);
      if (to !== undefined) batch.push({ room, to });
    }
    await Promise.all(batch.map(({ room, to }) => this.move(room, to)));
    if (this.closed) return;
    const now = Date.now();
    this.emptySince = this.isEmpty() ? (this.emptySince ?? now) : undefined;
    if (this.emptySince !== undefined && now - this.emptySince >= EMPTY_FOR_MS && now - this.lastMoveAt >= REJOIN_WINDOW_MS) {
      if (!this.emptyLogged) {
        this.emptyLogged = true;
        this.log.info(this.outcome('empty'), 'drain finished: this node hosts nothing');
      }
      for (const w of [...this.waiters]) w('empty');
    }
    this.timer = setTimeout(() => void this.step(), DRAIN_STEP_MS);
  }

  private async move(room: string, to: string): Promise<void> {
    // Only a move with someone to rejoin keeps the node up for the rejoin window.
    const rejoins = this.node.participants() > 0;
    let claim: boolean;
    try {
      claim = await this.node.handOver(room, to);
    } catch (err) {
      this.log.warn({ room, to, err: (err as Error).message }, 'room not moved yet: its claim could not be handed on');
      return;
    }
    // Handed on, the room must leave even if the drain was cancelled meanwhile: its claim is the other node's now.
    // Not handed on (another node holds it, or it lapsed): placement skips this node, so its rejoins still go elsewhere.
    this.node.moveAway(room);
    this.moving.add(room);
    this.moved++;
    if (rejoins) this.lastMoveAt = Date.now();
    this.log.info({ room, from: this.node.id, to, claim }, 'room moved');
  }

  private isEmpty(): boolean {
    return this.node.hostedRooms().length === 0 && this.node.participants() === 0;
  }

  private outcome(ended: DrainOutcome['ended']): DrainOutcome {
    return { ended, moved: this.moved, left: this.node.hostedRooms().length, ms: Date.now() - this.startedAt };
  }
}
