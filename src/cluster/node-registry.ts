import type { Redis } from 'ioredis';

/** What a node says about itself in Redis, refreshed every heartbeat. */
export interface NodeRecord {
  id: string;
  /** HTTP and WebSocket base URL other nodes and clients reach it at. */
  url: string;
  /** Where its media is: the address in its ICE candidates and its UDP port range. */
  media: { address: string; portRange: [number, number] | undefined };
  mediaWorkers: number;
  /** A draining node takes no new rooms (issue 10, item 5). */
  draining: boolean;
  limits: { maxRooms: number };
  load: NodeLoad;
  startedAt: number;
  /**
   * When the node wrote this record (its own clock, ms). Compared only with the same node's
   * earlier records: a record with another write time proves the node wrote after a
   * reader suspected it (src/cluster/cluster.ts).
   */
  writtenAt: number;
}

export interface NodeLoad {
  rooms: number;
  participants: number;
  tracks: number;
  forwardedPacketsPerSecond: number;
  /** Event-loop utilization (0-1) of its busiest media process over the last heartbeat. */
  busiestUtilization: number;
  /**
   * It sheds video (src/sfu/overload-guard.ts): overloaded for seconds in a row, so it takes
   * no new rooms. A momentary peak of utilization (start-up, a wave of joins) does not count.
   */
  shedding: boolean;
}

/**
 * The cluster's node list in Redis. Each node's record is its own key with a short expiry
 * (`<prefix>node:<id>`, PX ttlMs), so a node that stops refreshing disappears by Redis's
 * clock alone: no node judges another's liveness from its own clock, and a killed node
 * needs no one to clean up after it. A set (`<prefix>nodes`) indexes the ids, so reading
 * the live nodes is SMEMBERS + MGET, proportional to the nodes; SCAN would walk every key
 * of the database, room claims included (thousands), on each node every second. A member
 * whose record has expired is dead and is pruned by whoever reads it.
 */
export class NodeRegistry {
  private readonly redis: Redis;
  private readonly setKey: string;
  private readonly prefix: string;
  private readonly ttlMs: number;

  constructor(redis: Redis, prefix: string, ttlMs: number) {
    this.redis = redis;
    this.prefix = prefix;
    this.setKey = `${prefix}nodes`;
    this.ttlMs = ttlMs;
  }

  private recordKey(id: string): string {
    return `${this.prefix}node:${id}`;
  }

  async write(record: NodeRecord): Promise<void> {
    await this.redis
      .multi()
      .set(this.recordKey(record.id), JSON.stringify(record), 'PX', this.ttlMs)
      .sadd(this.setKey, record.id)
      .exec();
  }

  /** Every node whose record has not expired. */
  async readLive(): Promise<NodeRecord[]> {
    const ids = await this.redis.smembers(this.setKey);
    if (ids.length === 0) return [];
    const values = await this.redis.mget(ids.map((id) => this.recordKey(id)));
    const live: NodeRecord[] = [];
    const dead: string[] = [];
    values.forEach((v, i) => {
      if (v === null) dead.push(ids[i]!);
      else live.push(JSON.parse(v) as NodeRecord);
    });
    if (dead.length > 0) await this.redis.srem(this.setKey, ...dead);
    return live;
  }

  /** A node leaving on purpose is gone for everyone at once, not after its expiry. */
  async remove(id: string): Promise<void> {
    await this.redis.multi().del(this.recordKey(id)).srem(this.setKey, id).exec();
  }
}
