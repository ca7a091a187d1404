/**
 * Rendezvous hashing of room names over node ids (src/cluster/rendezvous.ts): every node
 * computes the same order, rooms spread evenly, and a node leaving moves only its own rooms.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { rendezvousOrder } from '../src/cluster/rendezvous.ts';

const NODES = ['node-a:7880', 'node-b:7881', 'node-c:7882'];
const ROOMS = Array.from({ length: 3000 }, (_, i) => `room-${i}`);

test('the order is stable and a permutation of the nodes, whatever order the ids come in', () => {
  for (const room of ROOMS.slice(0, 200)) {
    const order = rendezvousOrder(room, NODES);
    assert.deepEqual([...order].sort(), [...NODES].sort());
    assert.deepEqual(rendezvousOrder(room, [...NODES].reverse()), order);
    assert.deepEqual(rendezvousOrder(room, NODES), order);
  }
  assert.deepEqual(rendezvousOrder('room', []), []);
  assert.deepEqual(rendezvousOrder('room', ['only']), ['only']);
});

test('3000 rooms spread over 3 nodes within 10% of an even share', () => {
  const count = new Map<string, number>();
  for (const room of ROOMS) {
    const first = rendezvousOrder(room, NODES)[0]!;
    count.set(first, (count.get(first) ?? 0) + 1);
  }
  for (const node of NODES) {
    const n = count.get(node) ?? 0;
    assert.ok(Math.abs(n - 1000) <= 100, `${node} got ${n} of 3000 rooms`);
  }
});

test('removing a node moves only its rooms, each to its runner-up', () => {
  const before = new Map(ROOMS.map((r) => [r, rendezvousOrder(r, NODES)]));
  const gone = NODES[1]!;
  const rest = NODES.filter((n) => n !== gone);
  let moved = 0;
  for (const room of ROOMS) {
    const was = before.get(room)!;
    const now = rendezvousOrder(room, rest)[0];
    if (was[0] === gone) {
      moved++;
      assert.equal(now, was[1], `${room} goes to its runner-up`);
    } else {
      assert.equal(now, was[0], `${room} stays where it was`);
    }
  }
  assert.ok(moved > 800 && moved < 1200, `${moved} rooms moved`);
});

test('adding a node takes rooms only onto the new node', () => {
  const more = [...NODES, 'node-d:7883'];
  let taken = 0;
  for (const room of ROOMS) {
    const was = rendezvousOrder(room, NODES)[0];
    const now = rendezvousOrder(room, more)[0];
    if (now !== was) {
      assert.equal(now, 'node-d:7883');
      taken++;
    }
  }
  assert.ok(taken > 600 && taken < 900, `${taken} of 3000 rooms moved to the new node (an even share is 750)`);
});
