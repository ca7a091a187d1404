import type { Redis } from 'ioredis';

/** SET NX, and the owner either way, in one step: the loser learns the winner without a second race. */
const CLAIM = `
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return ARGV[1] end
return redis.call('GET', KEYS[1])`;

/** Compare-and-delete: a node releases only its own claim, never one another node has taken since. */
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

/** Compare-and-set: the claim passes from one node to another only if the first still holds it. */
const TRANSFER = `
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end
return 0`;

/**
 * Extends each claim this node holds; a claim that expired (Redis was away, or this process
 * stalled past the expiry) is taken again if still free. Returns the indexes of the claims
 * another node holds now: those rooms are hosted twice and must be reconciled.
 */
const REFRESH = `
local lost = {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner == ARGV[1] then redis.call('PEXPIRE', key, ARGV[2])
  elseif not owner then redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
  else table.insert(lost, i - 1) end
end
return lost`;

/**
 * Which node hosts a room: `<prefix>room:<name>` holds the node id, with the node's own
 * expiry, refreshed by its heartbeat, so a claim lives exactly as long as its node does and
 * a dead node's rooms are free again within the expiry. Claiming is SET NX: of two nodes
 * claiming one room in the same millisecond Redis serializes the two, and one wins.
 */
export class RoomClaims {
  /** Rooms this node holds a claim on. */
  readonly held = new Set<string>();
  private readonly redis: Redis;
  private readonly prefix: string;
  private readonly nodeId: string;
  private readonly ttlMs: number;

  constructor(redis: Redis, prefix: string, nodeId: string, ttlMs: number) {
    this.redis = redis;
    this.prefix = prefix;
    this.nodeId = nodeId;
    this.ttlMs = ttlMs;
  }

  private key(room: string): string {
    return `${this.prefix}room:${room}`;
  }

  /** Claims the room if free; returns its owner afterwards (this node's id when it won). */
  async claim(room: string): Promise<string> {
    const owner = (await this.redis.eval(CLAIM, 1, this.key(room), this.nodeId, this.ttlMs)) as string;
    if (owner === this.nodeId) this.held.add(room);
    return owner;
  }

  async owner(room: string): Promise<string | undefined> {
    return (await this.redis.get(this.key(room))) ?? undefined;
  }

  /** Extends every held claim; returns the rooms another node holds now (they are no longer held here). */
  async refresh(): Promise<string[]> {
    const rooms = [...this.held];
    if (rooms.length === 0) return [];
    const lost = (await this.redis.eval(REFRESH, rooms.length, ...rooms.map((r) => this.key(r)), this.nodeId, this.ttlMs)) as number[];
    const lostRooms = lost.map((i) => rooms[i]!);
    for (const room of lostRooms) this.held.delete(room);
    return lostRooms;
  }

  /**
   * Moves the room's claim from node `from` to node `to` if `from` still holds it (a drain
   * hands its rooms on; a merge takes a twin's claim over). The claim lasts `ttlMs` unless
   * its new owner refreshes it, which it does once it hosts the room. True if it moved.
   */
  async transfer(room: string, from: string, to: string, ttlMs: number): Promise<boolean> {
    const moved = (await this.redis.eval(TRANSFER, 1, this.key(room), from, to, ttlMs)) === 1;
    if (moved && from === this.nodeId) this.held.delete(room);
    if (moved && to === this.nodeId) this.held.add(room);
    return moved;
  }

  /**
   * Deletes the claim of a node found dead (suspect or vanished, src/cluster/cluster.ts) if
   * that node still holds it; a claim another node has taken since stays. True if deleted.
   */
  async releaseStale(room: string, owner: string): Promise<boolean> {
    return (await this.redis.eval(RELEASE, 1, this.key(room), owner)) === 1;
  }

  /** Forgets the room here at once, then deletes its claim if it is still this node's. */
  async release(room: string): Promise<void> {
    this.held.delete(room);
    await this.redis.eval(RELEASE, 1, this.key(room), this.nodeId);
  }
}
