import type { HostedLoad, HostedRooms, HostedRoomsEvents } from '../cluster/hosted-rooms.ts';
import { TypedEmitter } from '../common/typed-emitter.ts';
import type { WorkerPool } from './worker-pool.ts';

/**
 * The rooms of an edge node (SCV_MEDIA_WORKERS > 0) as its cluster sees them: those its
 * media workers report (every 250 ms when they change), and those assigned to a worker
 * that has not reported them yet. The edge is the cluster node; its workers know nothing
 * of the cluster.
 */
export class PoolRooms extends TypedEmitter<HostedRoomsEvents> implements HostedRooms {
  private readonly pool: WorkerPool;
  /** Rooms some worker reported at the last load report. */
  private reported = new Set<string>();
  /** Those, and rooms that were and are still assigned to a worker (it may report them again): closed once they leave this. */
  private open = new Set<string>();
  private closed = false;

  constructor(pool: WorkerPool) {
    super();
    this.pool = pool;
    pool.on('load', this.onLoad);
  }

  has(room: string): boolean {
    return this.open.has(room) || this.pool.find(room) !== undefined;
  }

  rooms(): string[] {
    return [...this.open];
  }

  moveAway(room: string): void {
    this.pool.moveAway(room, 'room_moved');
  }

  load(): HostedLoad {
    const workers = this.pool.workers();
    let participants = 0;
    let tracks = 0;
    let packetsForwarded = 0;
    let busiest = 0;
    for (const w of workers) {
      participants += w.participants;
      tracks += w.tracks;
      packetsForwarded += w.packetsForwarded;
      busiest = Math.max(busiest, w.utilization);
    }
    return {
      rooms: this.reported.size,
      participants,
      tracks,
      packetsForwarded,
      busiestUtilization: busiest,
      // One shedding worker does not make the node full: new rooms go to its other workers.
      shedding: workers.length > 0 && workers.every((w) => w.shedding),
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.pool.off('load', this.onLoad);
    this.removeAllListeners();
  }

  private readonly onLoad = (): void => {
    const reported = new Set<string>();
    for (const w of this.pool.workers()) for (const room of w.rooms) reported.add(room);
    const before = this.open;
    // A room its worker no longer reports stays open while the pool still assigns it (a report may lag the assignment).
    const open = new Set(reported);
    for (const room of before) if (this.pool.find(room) !== undefined) open.add(room);
    this.reported = reported;
    this.open = open;
    for (const room of open) if (!before.has(room)) this.emit('roomOpened', room);
    for (const room of before) if (!open.has(room)) this.emit('roomClosed', room);
  };
}
