import type { TypedEmitter } from '../common/typed-emitter.ts';

export type HostedRoomsEvents = {
  roomOpened: [string];
  /** The room is gone from this node (not merely closed and open again under the same name). */
  roomClosed: [string];
};

/** What the node's media is doing now, for its record in the registry. */
export interface HostedLoad {
  rooms: number;
  participants: number;
  tracks: number;
  /** Packets forwarded since the start, cumulative: the cluster turns it into a rate. */
  packetsForwarded: number;
  /** Busiest media process's event-loop utilization, when the host measures it; undefined: the node's own loop is the media's. */
  busiestUtilization: number | undefined;
  /** Some media process sheds video (src/sfu/overload-guard.ts). */
  shedding: boolean;
}

/**
 * What the cluster needs of whatever hosts this node's rooms: the media workers behind the
 * edge (PoolRooms, from their load reports; a cluster node is always an edge). The cluster
 * owns it and closes it.
 */
export interface HostedRooms extends Pick<TypedEmitter<HostedRoomsEvents>, 'on' | 'off'> {
  has(room: string): boolean;
  /** The rooms hosted here (a drain moves them). */
  rooms(): string[];
  load(): HostedLoad;
  /** Closes the room here for good, its participants told `room_moved`; their joins go where the cluster places the room. */
  moveAway(room: string): void;
  close(): void;
}
