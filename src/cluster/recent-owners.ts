/** Rooms remembered at most: a few hundred bytes each, far more than the rooms a node relays at once. */
const LIMIT = 10_000;

/**
 * The node last seen holding each room's claim, for the rooms this node placed, relayed or
 * looked up elsewhere: while Redis is unreachable a join for such a room is still relayed
 * to that node instead of opening a twin here (src/cluster/cluster.ts). Bounded: the
 * least recently used room is forgotten first.
 */
export class RecentOwners {
  private readonly owners = new Map<string, string>();

  remember(room: string, node: string): void {
    this.owners.delete(room);
    this.owners.set(room, node);
    if (this.owners.size > LIMIT) this.owners.delete(this.owners.keys().next().value!);
  }

  /** The room's last known owner; the lookup makes it the most recently used. */
  get(room: string): string | undefined {
    const node = this.owners.get(room);
    if (node !== undefined) this.remember(room, node);
    return node;
  }

  forget(room: string): void {
    this.owners.delete(room);
  }
}
