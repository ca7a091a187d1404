import type { Grant } from '../auth/tokens.ts';
import { AppError } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import { TypedEmitter } from '../common/typed-emitter.ts';
import type { Config } from '../config.ts';
import { MediaStats } from './media-stats.ts';
import { OverloadGuard } from './overload-guard.ts';
import { Participant } from './participant.ts';
import { Room, type RoomOptions } from './room.ts';
import type { ParticipantCapabilities } from './signals.ts';

/**
 * The media engine's root: owns every room. Rooms are created on first join and close
 * themselves when empty; `close()` ends them all (server shutdown).
 */
export class Sfu extends TypedEmitter<{ roomCreated: [Room] }> {
  readonly stats = new MediaStats();
  readonly overload: OverloadGuard;
  private readonly rooms = new Map<string, Room>();
  private readonly config: Config;
  private readonly log: Logger;
  private closed = false;

  constructor(config: Config, log: Logger) {
    super();
    this.config = config;
    this.log = log;
    this.overload = new OverloadGuard(config.limits.overloadUtilization);
  }

  get roomCount(): number {
    return this.rooms.size;
  }

  listRooms(): Room[] {
    return [...this.rooms.values()];
  }

  getRoom(name: string): Room {
    const room = this.rooms.get(name);
    if (room === undefined) throw new AppError('ROOM_NOT_FOUND', `room "${name}" does not exist`);
    return room;
  }

  findRoom(name: string): Room | undefined {
    return this.rooms.get(name);
  }

  /** The room's mode is fixed by whoever creates it; asking for the other mode later is refused. */
  getOrCreateRoom(name: string, opts: Partial<RoomOptions> = {}): Room {
    if (this.closed) throw new AppError('SHUTTING_DOWN', 'server is shutting down');
    const existing = this.rooms.get(name);
    if (existing !== undefined) {
      if (opts.e2ee !== undefined && opts.e2ee !== existing.e2ee) {
        throw new AppError('E2EE_MODE_MISMATCH', `room "${name}" is ${existing.e2ee ? '' : 'not '}end-to-end encrypted`);
      }
      return existing;
    }
    if (this.rooms.size >= this.config.limits.maxRooms) throw new AppError('TOO_MANY_ROOMS', 'room limit reached on this server');
    const room = new Room(name, {
      e2ee: opts.e2ee ?? false,
      limits: {
        maxParticipants: this.config.limits.maxParticipants,
        maxPlayers: this.config.limits.maxWhepPlayers,
        maxPlayersPerIdentity: this.config.limits.maxWhepPlayersPerIdentity,
      },
      emptyTimeoutMs: this.config.limits.emptyRoomTimeoutMs,
      log: this.log,
    });
    this.rooms.set(name, room);
    room.on('closed', () => {
      if (this.rooms.get(name) === room) this.rooms.delete(name);
    });
    this.log.info({ room: name }, 'room created');
    this.emit('roomCreated', room);
    return room;
  }

  /**
   * Puts a new participant in a room. An identity already present is replaced (the old
   * session is told `replaced`), as a user who opens the call again expects, unless
   * `ifPresent` is 'refuse' (a session that cannot be told it was replaced: CONFLICT).
   * `owner`: the token identity behind a WHEP player, which the room's per-identity player
   * limit counts.
   */
  join(
    roomName: string,
    opts: {
      identity: string;
      name: string;
      grants: ReadonlySet<Grant>;
      capabilities: ParticipantCapabilities;
      joinedVia: string;
      e2ee?: boolean;
      owner?: string;
      ifPresent?: 'replace' | 'refuse';
    },
  ): { room: Room; participant: Participant } {
    const { e2ee, ifPresent = 'replace', ...participantOpts } = opts;
    const previous = this.findRoom(roomName)?.byIdentity(opts.identity);
    if (previous !== undefined && ifPresent === 'refuse') {
      throw new AppError('CONFLICT', `"${opts.identity}" is already in room "${roomName}"; it must leave first`);
    }
    const room = this.getOrCreateRoom(roomName, { e2ee });
    previous?.close('replaced');
    const participant = new Participant({
      ...participantOpts,
      rtc: this.config.rtc,
      stats: this.stats,
      overload: this.overload,
      log: room.log,
      reconnectGraceMs: this.config.limits.reconnectGraceMs,
    });
    room.add(participant);
    return { room, participant };
  }

  participantCount(): number {
    let n = 0;
    for (const r of this.rooms.values()) n += r.size;
    return n;
  }

  publishedTrackCount(): number {
    let n = 0;
    for (const r of this.rooms.values()) n += r.tracks().length;
    return n;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const room of [...this.rooms.values()]) room.close('server_shutdown');
    this.rooms.clear();
    this.overload.close();
    this.removeAllListeners();
  }
}
