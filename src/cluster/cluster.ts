import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import type { TokenService } from '../auth/tokens.ts';
import { AppError } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import { TypedEmitter } from '../common/typed-emitter.ts';
import type { ClusterConfig, Config } from '../config.ts';
import type { HostedRooms } from './hosted-rooms.ts';
import { NodeAuth } from './node-auth.ts';
import { NodeDrain } from './node-drain.ts';
import { NodeRegistry, type NodeRecord } from './node-registry.ts';
import { rendezvousOrder } from './rendezvous.ts';
import { RecentOwners } from './recent-owners.ts';
import { RoomClaims } from './room-claims.ts';
import { RoomMerge, type RoomMerged } from './room-merge.ts';

/** Heartbeat period: the node's record and its claims are refreshed this often. */
export const HEARTBEAT_MS = 1000;
/**
 * Expiry of a node's record and claims. With the view re-read every heartbeat, a node that
 * stops is gone for everyone within TTL + one heartbeat (4 s, issue 10 asks for 5).
 */
export const NODE_TTL_MS = 3000;
/** A drained room's claim lasts this long on its new node before that node's first join for it refreshes it. */
const HANDOVER_TTL_MS = 10_000;
/** A claim whose room was never created here (the join failed after placement) is let go after this. */
const UNUSED_CLAIM_MS = 5000;

export type Placement = { here: true } | { here: false; node: NodeRecord };

export interface ClusterHealth {
  node: string;
  url: string | undefined;
  redis: 'up' | 'down';
  /** This node's record was written at the last heartbeat and Redis is still up: the others see it. */
  joined: boolean;
  /** Live nodes in the last view, this one included. */
  nodes: number;
  draining: boolean;
}

type ClusterEvents = {
  /** Redis became reachable or unreachable. */
  redis: ['up' | 'down'];
  nodeJoined: [NodeRecord];
  /** A node's record expired or it left: stop routing to it (the relay of the next slice). */
  nodeLeft: [string];
  /** Another node holds the claim of a room hosted here: the room is hosted twice. */
  claimLost: [string];
  /** This node's twin of a room hosted twice moved away into the other's (src/cluster/room-merge.ts). */
  roomMerged: [RoomMerged];
  /** A relay to this node could not connect: it is out of this node's view until it proves alive (`suspect`). */
  nodeSuspected: [string];
};

/**
 * This node in the cluster (SCV_REDIS_URL): its record in the registry, the claims of the
 * rooms it hosts, and the placement of a room's first join. Built before the HTTP port is
 * bound (the routes hold it), started once it is (the default id and URL come from it).
 * Redis trouble is logged and never thrown out of the heartbeat; placement without Redis
 * puts the room here with a warning.
 */
export class Cluster extends TypedEmitter<ClusterEvents> {
  private id: string | undefined;
  private url: string | undefined;
  private readonly config: Config;
  private readonly cluster: ClusterConfig;
  private readonly rooms: HostedRooms;
  private readonly log: Logger;
  private readonly redis: Redis;
  private readonly registry: NodeRegistry;
  private claims: RoomClaims | undefined;
  private nodeAuth: NodeAuth | undefined;
  /** Live nodes by id as of the last heartbeat. */
  private view = new Map<string, NodeRecord>();
  private redisUp = false;
  /** Until then (performance.now() ms) Redis has just come back: see regrouping(). */
  private regroupUntil = 0;
  /** The last heartbeat wrote this node's record. */
  private joined = false;
  /** Published in the record and /healthz: placement on every node skips this one (drain()). */
  private draining = false;
  /** Moving this node's rooms away while it drains; undefined when not draining. */
  private drainer: NodeDrain | undefined;
  /** Signaling connections at this node's edge joining or just joined (countJoining). */
  private joining: () => number = () => 0;
  private readonly startedAt = Date.now();
  private timer: NodeJS.Timeout | undefined;
  private beating: Promise<void> | undefined;
  private lastElu = performance.eventLoopUtilization();
  private lastForwarded = 0;
  private lastBeatAt = performance.now();
  private load = { forwardedPacketsPerSecond: 0, busiestUtilization: 0 };
  /** Releases in flight by room: a new placement of the room waits for its release. */
  private readonly releasing = new Map<string, Promise<void>>();
  /** When each held claim was taken, for claims whose room never came (UNUSED_CLAIM_MS). */
  private readonly claimedAt = new Map<string, number>();
  /**
   * Nodes a relay could not connect to, kept out of the view until they write a record
   * after the suspicion: `after` is the number of view reads started when it was suspected,
   * `writtenAt` the write time of its record in the first read started after that.
   */
  private readonly suspects = new Map<string, { after: number; writtenAt: number | undefined }>();
  private viewReads = 0;
  /** Reconciles rooms hosted twice (claimLost); from start(). */
  private merge: RoomMerge | undefined;
  /** Where rooms placed, relayed or looked up elsewhere were: used while Redis is unreachable. */
  private readonly owners = new RecentOwners();
  private readonly tokens: TokenService;
  private closing: Promise<void> | undefined;

  /** `rooms`: what hosts this node's rooms (the edge's media workers, PoolRooms); the cluster closes it. */
  /** `tokens`: the node's, for the admin token a merge counts a room's participants with. */
  constructor(config: Config, rooms: HostedRooms, log: Logger, tokens: TokenService) {
    super();
    this.config = config;
    this.tokens = tokens;
    this.cluster = config.cluster!;
    this.rooms = rooms;
    this.log = log.child({ component: 'cluster' });
    this.redis = new Redis(this.cluster.redisUrl, {
      lazyConnect: true,
      // Fail fast while Redis is away instead of queueing: placement then goes local (issue 10, item 6).
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: 1000,
      connectTimeout: 2000,
      retryStrategy: (attempt) => Math.min(attempt * 200, 1000),
    });
    // While Redis is known to be down each reconnect attempt fails again: said once (setRedis), the rest at debug.
    this.redis.on('error', (err: Error) => (this.redisUp ? this.log.warn({ err: err.message }, 'redis error') : this.log.debug({ err: err.message }, 'redis error')));
    this.redis.on('ready', () => this.setRedis('up'));
    this.redis.on('close', () => this.setRedis('down'));
    this.registry = new NodeRegistry(this.redis, this.cluster.keyPrefix, NODE_TTL_MS);
    rooms.on('roomOpened', this.onRoomOpened);
    rooms.on('roomClosed', this.onRoomClosed);
  }

  /** Connects (or keeps trying in the background), writes this node's record and starts the heartbeat. */
  async start(httpUrl: string): Promise<void> {
    const listen = new URL(httpUrl);
    this.id = this.cluster.nodeId ?? `${hostname()}:${listen.port}`;
    this.url = this.cluster.publicUrl ?? httpUrl.replace(/\/+$/, '');
    this.claims = new RoomClaims(this.redis, this.cluster.keyPrefix, this.id, NODE_TTL_MS);
    this.nodeAuth = new NodeAuth(this.cluster.secret, this.id);
    this.merge = new RoomMerge({
      node: this.id,
      url: this.url,
      claims: this.claims,
      claimTtlMs: NODE_TTL_MS,
      auth: this.nodeAuth,
      tokens: this.tokens,
      nodeOf: (id) => this.view.get(id),
      hosts: (room) => this.rooms.has(room),
      draining: () => this.draining,
      moveAway: (room) => this.moveAway(room),
      merged: (event) => this.emit('roomMerged', event),
      log: this.log,
    });
    this.log.info({ node: this.id, url: this.url }, 'joining the cluster');
    // Load is measured from here: start-up work is not the node's load.
    this.lastElu = performance.eventLoopUtilization();
    this.lastBeatAt = performance.now();
    this.lastForwarded = this.rooms.load().packetsForwarded;
    try {
      await this.redis.connect();
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'redis unreachable at start: rooms are placed here until it answers');
    }
    await this.beat();
    this.timer = setInterval(() => void this.beat(), HEARTBEAT_MS);
    this.timer.unref();
  }

  get node(): string {
    return this.id ?? '';
  }

  /** Signs this node's hops and checks other nodes' (src/cluster/node-auth.ts); undefined until start() knows the node's id. */
  get auth(): NodeAuth | undefined {
    return this.nodeAuth;
  }

  health(): ClusterHealth {
    return { node: this.node, url: this.url, redis: this.redisUp ? 'up' : 'down', joined: this.redisUp && this.joined, nodes: this.view.size, draining: this.draining };
  }

  /** Live nodes as of the last heartbeat. */
  nodes(): NodeRecord[] {
    return [...this.view.values()];
  }

  /**
   * Where a room that is not here goes: its claim's owner if it has one, else the first
   * node in its rendezvous order over the live, non-draining nodes under their limits;
   * this node claims it only if it is that node, so both nodes of a simultaneous first join
   * compute the same answer, and if their views differ SET NX still lets only one win.
   * A `relayed` first join was sent here by a node whose view chose this one (it may know
   * better: it just found the winner dead): this node takes it if it may host rooms at all.
   */
  async place(room: string, relayed = false): Promise<Placement> {
    await this.releasing.get(room);
    const claims = this.claims!;
    if (!this.redisUp) return this.placeWithoutRedis(room, 'redis is unreachable');
    try {
      let owner = await claims.owner(room);
      for (let attempt = 0; attempt < 3; attempt++) {
        if (owner === this.id) {
          this.owners.forget(room);
          this.heldNow(room);
          return { here: true };
        }
        if (owner !== undefined) {
          const node = this.view.get(owner) ?? (this.suspects.has(owner) ? undefined : (await this.refreshView(), this.view.get(owner)));
          if (node !== undefined) {
            this.owners.remember(room, owner);
            return { here: false, node };
          }
          // Its node is suspect or its record expired: the claim is stale (and expires within the TTL anyway).
          const dropped = await claims.releaseStale(room, owner);
          this.log.warn({ room, node: owner, suspect: this.suspects.has(owner), dropped }, 'claim of a dead node: placing the room again');
        }
        // Just after Redis came back (empty, if it restarted) a room's node may not have claimed it again yet.
        const known = owner === undefined && this.regrouping() ? this.lastKnownNode(room) : undefined;
        if (known !== undefined) return { here: false, node: known };
        const order = this.order(room);
        const target = relayed && order.includes(this.id!) ? this.id : order[0];
        if (target === undefined) throw new AppError('TOO_MANY_ROOMS', 'every node of the cluster is at its limits or draining');
        if (target !== this.id) {
          this.owners.remember(room, target);
          return { here: false, node: this.view.get(target)! };
        }
        owner = await claims.claim(room);
      }
      throw new AppError('CONFLICT', `room "${room}" changed hands while it was being placed; try again`);
    } catch (err) {
      if (err instanceof AppError) throw err;
      return this.placeWithoutRedis(room, (err as Error).message);
    }
  }

  /**
   * Placement for a request that may create its room: undefined when the room is here
   * (claimed), else the node to relay it to. A request that was relayed here already
   * (`relayed`) is never relayed again: if the views disagree it is refused naming the host.
   */
  async relayTarget(room: string, relayed: boolean): Promise<NodeRecord | undefined> {
    const placed = await this.place(room, relayed);
    if (placed.here) return undefined;
    if (relayed) throw onOtherNode(room, placed.node);
    return placed.node;
  }

  /**
   * The live node other than this one that holds the room's claim, for a request that
   * does not create its room; undefined if none: answered here. While Redis cannot say,
   * the room's last known node if it is still in the view.
   */
  async locate(room: string): Promise<NodeRecord | undefined> {
    if (!this.redisUp) return this.lastKnownNode(room);
    try {
      const owner = await this.claims!.owner(room);
      if (owner === undefined || owner === this.id) return undefined;
      const node = this.view.get(owner);
      if (node !== undefined) this.owners.remember(room, owner);
      return node;
    } catch {
      return this.lastKnownNode(room);
    }
  }

  /**
   * Gives the room up here: it is no longer claimed or refreshed by this node, and it is
   * closed with its participants told `room_moved`, so they join again and are placed by
   * the claim (the drain hands it to the next node first; a merge leaves it to the twin).
   */
  moveAway(room: string): void {
    this.claims?.held.delete(room);
    this.claimedAt.delete(room);
    this.rooms.moveAway(room);
  }

  /**
   * A relay to node `id` could not connect (src/edge/node-hops.ts): it leaves this node's
   * view at once, so placement skips it and treats its claims as stale, and comes back
   * only with a record written after now. Another node that still reaches it keeps it; if
   * it is alive but cut off from here only, its rooms may be placed again elsewhere and so
   * be hosted twice, which its heartbeat reports (`claimLost`) and the merge resolves.
   */
  suspect(id: string): void {
    if (id === this.id || this.suspects.has(id)) return;
    this.suspects.set(id, { after: this.viewReads, writtenAt: undefined });
    this.log.warn({ suspect: id, url: this.view.get(id)?.url }, 'node unreachable: out of the view until it writes a heartbeat after now');
    this.emit('nodeSuspected', id);
    if (this.view.delete(id)) this.emit('nodeLeft', id);
  }

  /**
   * Puts this node in draining (issue 10, item 5; idempotent): its record says so at once
   * (not at the next heartbeat), so every node's placement skips it, then its rooms are
   * handed on (src/cluster/node-drain.ts). It stays draining until cancelDrain() or close().
   * `stopping`: the process exits once it is drained (SIGTERM), so it cannot be cancelled.
   */
  async drain(stopping = false): Promise<NodeDrain> {
    if (this.drainer !== undefined) {
      this.drainer.stopping ||= stopping;
      return this.drainer;
    }
    const drainer = new NodeDrain(
      {
        id: this.node,
        order: (room) => this.order(room),
        hostedRooms: () => [...new Set([...this.rooms.rooms(), ...(this.claims?.held ?? [])])],
        participants: () => this.rooms.load().participants + this.joining(),
        handOver: (room, to) => this.handOver(room, to),
        moveAway: (room) => this.moveAway(room),
      },
      this.log,
    );
    drainer.stopping = stopping;
    this.drainer = drainer;
    this.draining = true;
    await this.publishNow();
    drainer.start();
    return drainer;
  }

  /**
   * How many signaling connections at this node's edge are joining or just joined: a
   * rejoin relayed through here is one, and a drain is not over while any is settling.
   */
  countJoining(count: () => number): void {
    this.joining = count;
  }

  /** Ends a drain: the node takes rooms again (the rooms it moved stay where they went). False if it was not draining. */
  async cancelDrain(): Promise<boolean> {
    const drainer = this.drainer;
    if (drainer === undefined) return false;
    if (drainer.stopping) throw new AppError('CONFLICT', 'this node is shutting down: its drain cannot be cancelled');
    this.drainer = undefined;
    drainer.close();
    this.draining = false;
    this.log.info('drain cancelled: this node takes rooms again');
    await this.publishNow();
    return true;
  }

  /** Writes this node's record and reads the view now, after any heartbeat in flight. */
  private async publishNow(): Promise<void> {
    await this.beating;
    if (this.closing === undefined && this.timer !== undefined) await this.beat();
  }

  /**
   * The drain's handoff: the claim passes to `to` for HANDOVER_TTL_MS, long enough for the
   * participants' rejoins to reach it; from its first join it holds the claim (place()
   * finds it the owner) and its heartbeat refreshes it.
   */
  private async handOver(room: string, to: string): Promise<boolean> {
    if (!this.redisUp) throw new Error('redis is unreachable');
    return this.claims!.transfer(room, this.id!, to, HANDOVER_TTL_MS);
  }

  /** Node ids in the room's rendezvous order, skipping draining and full nodes. */
  order(room: string): string[] {
    const eligible = [...this.view.values()].filter((n) => !n.draining && !overLimits(n)).map((n) => n.id);
    return rendezvousOrder(room, eligible);
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.drainer?.close();
      this.rooms.off('roomOpened', this.onRoomOpened);
      this.rooms.off('roomClosed', this.onRoomClosed);
      this.rooms.close();
      clearInterval(this.timer);
      await this.beating;
      await this.merge?.close();
      await Promise.all(this.releasing.values());
      const claims = this.claims;
      if (claims !== undefined && this.redisUp) {
        try {
          await Promise.all([...claims.held].map((room) => claims.release(room)));
          await this.registry.remove(this.id!);
        } catch (err) {
          this.log.warn({ err: (err as Error).message }, 'leaving the cluster: redis failed; the record and claims expire by themselves');
        }
      }
      this.redis.disconnect();
      this.removeAllListeners();
    })();
    return this.closing;
  }

  /**
   * Redis cannot say where the room is: a room last seen on another node still in the view
   * is relayed there (no twin; if that relay cannot connect the node is suspected, leaves
   * the view, and the room is placed again, here); any other room is placed here.
   */
  private placeWithoutRedis(room: string, why: string): Placement {
    const node = this.lastKnownNode(room);
    if (node === undefined) return this.placeLocally(room, why);
    this.log.warn({ room, node: node.id, why }, 'room placed without the cluster on the node last known to host it');
    return { here: false, node };
  }

  /**
   * Redis answered again less than a node expiry ago: every node re-registers and re-claims
   * its rooms within one heartbeat, so until then a node missing from the registry or a
   * room without a claim is not yet news (a restarted Redis comes back empty).
   */
  private regrouping(): boolean {
    return performance.now() < this.regroupUntil;
  }

  private lastKnownNode(room: string): NodeRecord | undefined {
    const owner = this.owners.get(room);
    return owner === undefined || owner === this.id ? undefined : this.view.get(owner);
  }

  private placeLocally(room: string, why: string): Placement {
    this.log.warn({ room, why }, 'room placed here without the cluster: its claim is taken when redis answers');
    this.heldNow(room);
    return { here: true };
  }

  private heldNow(room: string): void {
    this.claims!.held.add(room);
    this.claimedAt.set(room, Date.now());
  }

  /** A room opened here (placed or not) holds its claim until it closes. */
  private readonly onRoomOpened = (room: string): void => {
    if (this.claims !== undefined && !this.claims.held.has(room)) this.heldNow(room);
  };

  private readonly onRoomClosed = (room: string): void => {
    const claims = this.claims;
    if (claims === undefined) return;
    this.claimedAt.delete(room);
    this.merge?.forget(room);
    const released = claims
      .release(room)
      .catch((err: unknown) => this.log.warn({ room, err: (err as Error).message }, 'claim not released: it expires with the node'))
      .finally(() => this.releasing.delete(room));
    this.releasing.set(room, released);
  };

  private setRedis(state: 'up' | 'down'): void {
    if (this.redisUp === (state === 'up') || this.closing !== undefined) return;
    this.redisUp = state === 'up';
    if (state === 'up') this.regroupUntil = performance.now() + NODE_TTL_MS;
    if (state === 'up') this.log.info('redis reachable');
    else this.log.warn('redis unreachable: running rooms keep running; new rooms are placed here');
    this.emit('redis', state);
  }

  private beat(): Promise<void> {
    this.beating ??= this.heartbeat().finally(() => (this.beating = undefined));
    return this.beating;
  }

  private async heartbeat(): Promise<void> {
    this.measure();
    const record = this.record();
    if (!this.redisUp) {
      this.joined = false;
      // The last view is kept (no record expires while nobody can read them): rooms known
      // to live on another node are still relayed there (placeWithoutRedis).
      this.view.set(record.id, record);
      return;
    }
    this.joined = await this.registry.write(record).then(
      () => true,
      (err: unknown) => {
        this.log.warn({ err: (err as Error).message }, "heartbeat failed: this node's record was not written");
        return false;
      },
    );
    if (!this.joined) return;
    try {
      this.sweepUnusedClaims();
      for (const room of await this.claims!.refresh()) {
        this.emit('claimLost', room);
        this.merge!.claimLost(room);
      }
      await this.refreshView();
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'heartbeat failed');
    }
  }

  private async refreshView(): Promise<void> {
    const read = ++this.viewReads;
    const live = await this.registry.readLive();
    const next = new Map(live.map((n) => [n.id, n]));
    this.applySuspicions(next, read);
    // Just after Redis came back the others may not have written their records again: the last view holds meanwhile.
    if (this.regrouping()) for (const [id, n] of this.view) if (!next.has(id)) next.set(id, n);
    // This node's own figures are newer than what it wrote a heartbeat ago.
    next.set(this.id!, this.record());
    for (const [id, n] of next) if (!this.view.has(id) && id !== this.id) this.emit('nodeJoined', n);
    for (const id of this.view.keys()) if (!next.has(id)) this.emit('nodeLeft', id);
    this.view = next;
  }

  /** Takes the suspects out of a fresh view (`read`: its number), and back those that wrote since. */
  private applySuspicions(next: Map<string, NodeRecord>, read: number): void {
    for (const [id, s] of this.suspects) {
      const n = next.get(id);
      if (read <= s.after) next.delete(id);
      else if (n === undefined) this.suspects.delete(id); // its record expired: gone, for good or until it writes again
      else if (s.writtenAt === undefined) {
        s.writtenAt = n.writtenAt;
        next.delete(id);
      } else if (n.writtenAt === s.writtenAt) next.delete(id);
      else {
        this.suspects.delete(id);
        this.log.info({ node: id }, 'suspect node wrote a heartbeat since: back in the view');
      }
    }
  }

  private sweepUnusedClaims(): void {
    const now = Date.now();
    for (const room of this.claims!.held) {
      const at = this.claimedAt.get(room);
      if (this.rooms.has(room) || (at !== undefined && now - at < UNUSED_CLAIM_MS)) continue;
      this.claimedAt.delete(room);
      void this.claims!.release(room).catch(() => {});
    }
  }

  private measure(): void {
    const now = performance.now();
    const elu = performance.eventLoopUtilization();
    const seconds = Math.max((now - this.lastBeatAt) / 1000, 0.001);
    const hosted = this.rooms.load();
    const forwarded = hosted.packetsForwarded;
    this.load = {
      // A media worker that restarted counts from 0 again: no negative rate.
      forwardedPacketsPerSecond: Math.max(0, Math.round((forwarded - this.lastForwarded) / seconds)),
      // Unless the host measures its media processes, this process's own loop is the media's.
      busiestUtilization: hosted.busiestUtilization ?? Math.round(performance.eventLoopUtilization(elu, this.lastElu).utilization * 1000) / 1000,
    };
    this.lastElu = elu;
    this.lastForwarded = forwarded;
    this.lastBeatAt = now;
  }

  private record(): NodeRecord {
    const rtc = this.config.rtc;
    const hosted = this.rooms.load();
    return {
      id: this.id!,
      url: this.url!,
      media: { address: rtc.announcedIp ?? rtc.interfaces[0] ?? new URL(this.url!).hostname, portRange: rtc.portRange },
      mediaWorkers: this.config.mediaWorkers,
      draining: this.draining,
      limits: { maxRooms: this.config.limits.maxRooms },
      load: {
        rooms: hosted.rooms,
        participants: hosted.participants,
        tracks: hosted.tracks,
        ...this.load,
        shedding: hosted.shedding,
      },
      startedAt: this.startedAt,
      writtenAt: Date.now(),
    };
  }
}

function onOtherNode(room: string, node: NodeRecord): AppError {
  return new AppError('ROOM_ON_OTHER_NODE', `room "${room}" is on node "${node.id}" at ${node.url}`, { node: node.id, url: node.url });
}

function overLimits(n: NodeRecord): boolean {
  return n.load.rooms >= n.limits.maxRooms || n.load.shedding;
}
