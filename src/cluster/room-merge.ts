import type { TokenService } from '../auth/tokens.ts';
import type { Logger } from '../common/logger.ts';
import type { NodeAuth } from './node-auth.ts';
import { NODE_AUTH_HEADER } from './node-auth.ts';
import type { NodeRecord } from './node-registry.ts';
import type { RoomClaims } from './room-claims.ts';

/** How long a count of a room's participants may take before the node counts as not answering. */
const COUNT_TIMEOUT_MS = 5000;
/** A room this node took over is never taken over again within this: the second time it moves (no ping-pong). */
const TAKEOVER_MEMORY_MS = 60_000;
/** Retries of one room's merge are logged at warn on the first and every this many. */
const LOG_EVERY = 10;

/** One merge done here: this node's twin of `room` moved away into `into`'s. */
export interface RoomMerged {
  room: string;
  into: string;
  here: number;
  there: number;
}

export interface RoomMergeDeps {
  node: string;
  url: string;
  claims: RoomClaims;
  /** A claim taken over lasts this long unless this node's heartbeat refreshes it (it does while it hosts the room). */
  claimTtlMs: number;
  auth: NodeAuth;
  tokens: TokenService;
  /** The node by id as of the last view (its URL), if known. */
  nodeOf(id: string): NodeRecord | undefined;
  /** The room is open on this node. */
  hosts(room: string): boolean;
  /** This node is draining: its side always moves (taking the claim would only bounce the room back out). */
  draining(): boolean;
  /** Cluster.moveAway: the room is closed here, its participants told `room_moved`, and they rejoin where the claim is. */
  moveAway(room: string): void;
  merged(event: RoomMerged): void;
  log: Logger;
}

/** A count of a room's participants on one node: a number, the node has no such room, or why it did not answer. */
type Count = number | 'absent' | { failed: string };

/**
 * Reconciles a room hosted on two nodes (issue 10, item 6: each placed it while Redis was
 * away). Started on the side that finds, at a heartbeat, that the other holds the room's
 * claim (`claimLost`): the two sides' participants are counted over HTTP (GET
 * /video/rooms/:room with an admin token and the node credential, on each node's own
 * edge), and the smaller side moves; a tie moves this side, which does not hold the claim.
 * A larger side takes the claim over (compare-and-set) and the other side, at its next
 * heartbeat, loses it, counts again and moves; counts only shift towards the claim holder
 * (every join goes there), and a node that took a room over moves the next time it loses
 * it, so the two never trade the room back and forth. A room whose claim holder stopped
 * answering or no longer has the room is simply kept: it is held again, so the next
 * heartbeat re-takes the claim once free, or takes it over, or tries the merge again.
 */
export class RoomMerge {
  private readonly deps: RoomMergeDeps;
  private readonly log: Logger;
  /** Merges in flight by room: one at a time per room. */
  private readonly running = new Map<string, Promise<void>>();
  /** When this node last took each room's claim over. */
  private readonly tookOver = new Map<string, number>();
  /** Failed attempts by room, for quieter logs while a merge keeps failing. */
  private readonly attempts = new Map<string, number>();
  private readonly abort = new AbortController();
  private closing: Promise<void> | undefined;

  constructor(deps: RoomMergeDeps) {
    this.deps = deps;
    this.log = deps.log.child({ component: 'room-merge' });
  }

  /** The claim of `room`, hosted here, is another node's: merge the two sides. */
  claimLost(room: string): void {
    if (this.closing !== undefined || this.running.has(room)) return;
    if (!this.deps.hosts(room)) return;
    const run = this.merge(room)
      .catch((err: unknown) => this.retry(room, `merge failed: ${(err as Error).message}`))
      .finally(() => this.running.delete(room));
    this.running.set(room, run);
  }

  private async merge(room: string): Promise<void> {
    const { claims, node: me } = this.deps;
    const holder = await claims.owner(room);
    if (holder === me) {
      claims.held.add(room);
      return;
    }
    if (holder === undefined) return this.keep(room, 'the claim lapsed: taken again at the next heartbeat');
    const other = this.deps.nodeOf(holder);
    if (other === undefined) return this.retry(room, `claim holder "${holder}" is not in this node's view`);
    const token = await this.deps.tokens.mint({ identity: 'cluster-merge', grants: ['admin'], ttlSeconds: 60 });
    const [here, there] = await Promise.all([this.count(room, this.deps.url, token), this.count(room, other.url, token)]);
    if (this.closing !== undefined) return;
    if (typeof here !== 'number') {
      // The twin here closed meanwhile (or the own worker is not answering): nothing to merge now.
      if (here !== 'absent') this.retry(room, `the room here could not be counted: ${here.failed}`);
      return;
    }
    if (typeof there === 'object') return this.retry(room, `claim holder "${holder}" does not answer: ${there.failed}`);
    const sides = { room, here: me, there: holder, hereCount: here, thereCount: there === 'absent' ? 0 : there };
    const recent = (this.tookOver.get(room) ?? 0) > Date.now() - TAKEOVER_MEMORY_MS;
    if (there !== 'absent' && (here <= there || recent || this.deps.draining())) {
      this.attempts.delete(room);
      this.tookOver.delete(room);
      const why =
        here <= there
          ? 'this side is the smaller (or tied, without the claim)'
          : recent
            ? 'this node took the room over a moment ago and lost it again'
            : 'this node is draining';
      this.log.warn({ ...sides, moved: me, why }, 'room hosted twice: moving this side into the claim holder');
      this.deps.moveAway(room);
      this.deps.merged({ room, into: holder, here, there });
      return;
    }
    if (!(await claims.transfer(room, holder, me, this.deps.claimTtlMs))) return this.retry(room, 'the claim changed hands during the merge');
    this.attempts.delete(room);
    this.pruneTakeovers();
    this.tookOver.set(room, Date.now());
    this.log.warn(
      { ...sides, moved: there === 'absent' ? undefined : holder },
      there === 'absent' ? 'room claimed by a node that does not have it: claim taken over' : 'room hosted twice: this side is the larger; claim taken over, the other side moves at its next heartbeat',
    );
  }

  /** Participants of `room` at the node at `url`, asked as a hop (the node answers from its own media worker, never relaying). */
  private async count(room: string, url: string, token: string): Promise<Count> {
    const path = `/video/rooms/${encodeURIComponent(room)}`;
    let res: Response;
    try {
      res = await fetch(`${url}${path}`, {
        headers: { authorization: `Bearer ${token}`, [NODE_AUTH_HEADER]: this.deps.auth.sign('GET', path) },
        signal: AbortSignal.any([this.abort.signal, AbortSignal.timeout(COUNT_TIMEOUT_MS)]),
      });
    } catch (err) {
      return { failed: (err as Error).message };
    }
    if (res.status === 404) {
      await res.body?.cancel();
      return 'absent';
    }
    if (!res.ok) return { failed: `${res.status} ${await res.text()}` };
    const body = (await res.json()) as { participants?: unknown };
    return Array.isArray(body.participants) ? body.participants.length : { failed: 'no participants in the answer' };
  }

  /** Keeps the room here and holds its claim again: the next heartbeat re-takes it if free, or reports it lost and the merge runs again. */
  private keep(room: string, why: string): void {
    if (!this.deps.hosts(room)) return;
    this.deps.claims.held.add(room);
    this.log.info({ room, node: this.deps.node, why }, 'room kept here');
  }

  private retry(room: string, why: string): void {
    if (this.closing !== undefined || !this.deps.hosts(room)) return;
    const n = (this.attempts.get(room) ?? 0) + 1;
    this.attempts.set(room, n);
    this.deps.claims.held.add(room);
    const fields = { room, node: this.deps.node, attempt: n, why };
    if (n % LOG_EVERY === 1) this.log.warn(fields, 'room hosted twice: merge not settled; tried again at the next heartbeat');
    else this.log.debug(fields, 'room merge tried again');
  }

  /** The room closed here: nothing left to merge. */
  forget(room: string): void {
    this.attempts.delete(room);
  }

  private pruneTakeovers(): void {
    const old = Date.now() - TAKEOVER_MEMORY_MS;
    for (const [room, at] of this.tookOver) if (at < old) this.tookOver.delete(room);
  }

  /** Idempotent: aborts the counts in flight and waits for the merges to end. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.abort.abort();
      await Promise.all(this.running.values());
    })();
    return this.closing;
  }
}
