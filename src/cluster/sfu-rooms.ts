import { TypedEmitter } from '../common/typed-emitter.ts';
import type { Room } from '../sfu/room.ts';
import type { Sfu } from '../sfu/sfu.ts';
import type { HostedLoad, HostedRooms, HostedRoomsEvents } from './hosted-rooms.ts';

/** The rooms of a node whose media runs in its own process (SCV_MEDIA_WORKERS=0): its Sfu's. */
export class SfuRooms extends TypedEmitter<HostedRoomsEvents> implements HostedRooms {
  private readonly sfu: Sfu;
  private closed = false;

  constructor(sfu: Sfu) {
    super();
    this.sfu = sfu;
    sfu.on('roomCreated', this.onRoomCreated);
  }

  has(room: string): boolean {
    return this.sfu.findRoom(room) !== undefined;
  }

  moveAway(room: string): void {
    this.sfu.findRoom(room)?.close('room_moved');
  }

  load(): HostedLoad {
    return {
      rooms: this.sfu.roomCount,
      participants: this.sfu.participantCount(),
      tracks: this.sfu.publishedTrackCount(),
      packetsForwarded: this.sfu.stats.packetsForwarded,
      busiestUtilization: undefined,
      shedding: this.sfu.overload.shedRatio > 0,
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.sfu.off('roomCreated', this.onRoomCreated);
    this.removeAllListeners();
  }

  private readonly onRoomCreated = (room: Room): void => {
    this.emit('roomOpened', room.name);
    room.once('closed', () => {
      // The same name may already be a new room here (closed, then joined again): that one is still open.
      if (!this.closed && this.sfu.findRoom(room.name) === undefined) this.emit('roomClosed', room.name);
    });
  };
}
