import { createHash } from 'node:crypto';

/**
 * Rendezvous (highest random weight) hashing: every node gets a weight per key from a hash
 * of (node, key), and the key goes to the heaviest node. Unlike a modulo or a ring, removing
 * a node moves only that node's keys (each to its own runner-up) and adding one takes an
 * even share from everyone, with no ring to keep in Redis: every node computes the same
 * order from the same list of ids. The full order is returned so placement can skip a node
 * that is full or draining and take the next.
 */
export function rendezvousOrder(key: string, nodeIds: readonly string[]): string[] {
  return nodeIds
    .map((id) => ({ id, weight: weight(id, key) }))
    .sort((a, b) => b.weight - a.weight || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    .map((n) => n.id);
}

/** 48 bits of SHA-256 over id NUL key: uniform, exact in a double, and the same in every process. */
function weight(nodeId: string, key: string): number {
  return createHash('sha256').update(nodeId).update('\0').update(key).digest().readUIntBE(0, 6);
}
