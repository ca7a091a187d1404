import { randomBytes } from 'node:crypto';
import { AppError } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import { TypedEmitter } from '../common/typed-emitter.ts';
import type { Participant } from './participant.ts';
import type { PublishedTrack } from './published-track.ts';
import type { LeaveReason, RoomDescription, RoomSignal } from './signals.ts';

interface RoomEvents extends Record<string, unknown[]> {
  participantJoined: [Participant];
  participantLeft: [Participant, LeaveReason];
  trackPublished: [PublishedTrack];
  trackUnpublished: [PublishedTrack];
  closed: [];
}

export interface RoomOptions {
  /** End-to-end encrypted: fixed at creation; such a room is never recorded. */
  e2ee: boolean;
}

/** Members and WHEP players are counted apart, so players can never fill a room for its members. */
export interface RoomLimits {
  maxParticipants: number;
  maxPlayers: number;
  maxPlayersPerIdentity: number;
}

/**
 * One call. Owns its participants; wires every published track to every other
 * participant, tells everyone who came, went, published, muted; closes itself when it
 * has been empty for `emptyTimeoutMs`.
 */
export class Room extends TypedEmitter<RoomEvents> {
  readonly name: string;
  readonly sid = `RM_${randomBytes(6).toString('hex')}`;
  readonly createdAt = Date.now();
  readonly log: Logger;
  readonly e2ee: boolean;
  private _recording = false;
  private readonly limits: RoomLimits;
  private readonly emptyTimeoutMs: number;
  private readonly participants = new Map<string, Participant>();
  /** WHEP players (the hidden participants) by sid, with the token identity that opened each. */
  private readonly players = new Map<string, string>();
  private emptyTimer: NodeJS.Timeout | undefined;
  private _closed = false;

  constructor(name: string, opts: RoomOptions & { limits: RoomLimits; emptyTimeoutMs: number; log: Logger }) {
    super();
    this.name = name;
    this.e2ee = opts.e2ee;
    this.limits = opts.limits;
    this.emptyTimeoutMs = opts.emptyTimeoutMs;
    this.log = opts.log.child({ room: name });
    this.armEmptyTimer();
  }

  get closed(): boolean {
    return this._closed;
  }

  get recording(): boolean {
    return this._recording;
  }

  /** Told by the recording manager; every participant hears it. */
  setRecording(active: boolean): void {
    if (this._recording === active) return;
    this._recording = active;
    this.broadcast({ type: 'recordingChanged', active });
  }

  get size(): number {
    return this.participants.size;
  }

  byIdentity(identity: string): Participant | undefined {
    for (const p of this.participants.values()) if (p.identity === identity) return p;
    return undefined;
  }

  bySid(sid: string): Participant | undefined {
    return this.participants.get(sid);
  }

  all(): Participant[] {
    return [...this.participants.values()];
  }

  /** Every track currently published in the room. */
  tracks(): PublishedTrack[] {
    const out: PublishedTrack[] = [];
    for (const p of this.participants.values()) out.push(...p.published.values());
    return out;
  }

  /** The tracks `p` receives (by its capabilities) of everything published now. */
  tracksFor(p: Participant): PublishedTrack[] {
    const out: PublishedTrack[] = [];
    for (const owner of this.participants.values()) if (p.receivesFrom(owner)) out.push(...owner.published.values());
    return out;
  }

  /** The room as `exceptSid` sees it. */
  infoFor(exceptSid?: string): RoomDescription {
    return {
      name: this.name,
      sid: this.sid,
      e2ee: this.e2ee,
      recording: this._recording,
      participants: this.all()
        .filter((p) => p.sid !== exceptSid && !p.hidden)
        .map((p) => p.info()),
    };
  }

  /** Hidden participants (WHEP players) count against the player limits, by the identity that opened them. */
  add(p: Participant): void {
    if (this._closed) throw new AppError('ROOM_NOT_FOUND', `room "${this.name}" is closed`);
    if (p.hidden) this.assertPlayerFits(p.owner);
    else if (this.participants.size - this.players.size >= this.limits.maxParticipants) throw new AppError('ROOM_FULL', `room "${this.name}" is full`);
    clearTimeout(this.emptyTimer);
    this.emptyTimer = undefined;
    this.participants.set(p.sid, p);
    if (p.hidden) this.players.set(p.sid, p.owner);
    p.on('trackPublished', (track) => {
      this.broadcast({ type: 'trackPublished', participantSid: p.sid, identity: p.identity, track: track.info() });
      for (const other of this.participants.values()) if (other.receivesFrom(p)) other.subscribe(track);
      this.emit('trackPublished', track);
    });
    p.on('trackUnpublished', (track) => {
      for (const other of this.participants.values()) if (other !== p) other.unsubscribe(track);
      this.broadcast({ type: 'trackUnpublished', participantSid: p.sid, identity: p.identity, trackSid: track.sid });
      this.emit('trackUnpublished', track);
    });
    p.on('trackMuted', (track) => {
      this.broadcast({ type: 'trackMuted', participantSid: p.sid, identity: p.identity, trackSid: track.sid, muted: track.muted });
    });
    p.on('closed', (reason) => this.onParticipantClosed(p, reason));
    if (!p.hidden) this.broadcast({ type: 'participantJoined', participant: p.info() }, p.sid);
    for (const track of this.tracksFor(p)) p.subscribe(track);
    this.emit('participantJoined', p);
    this.log.info({ participant: p.identity, participantSid: p.sid, hidden: p.hidden, renegotiates: p.capabilities.renegotiates, size: this.participants.size }, 'participant joined');
  }

  private assertPlayerFits(owner: string): void {
    const { maxPlayers, maxPlayersPerIdentity } = this.limits;
    let mine = 0;
    for (const o of this.players.values()) if (o === owner) mine++;
    if (mine >= maxPlayersPerIdentity) {
      throw new AppError('TOO_MANY_PLAYERS', `"${owner}" already has ${maxPlayersPerIdentity} WHEP players open in room "${this.name}"; DELETE one first`);
    }
    if (this.players.size >= maxPlayers) throw new AppError('TOO_MANY_PLAYERS', `room "${this.name}" has its maximum of ${maxPlayers} WHEP players`);
  }

  private onParticipantClosed(p: Participant, reason: LeaveReason): void {
    if (!this.participants.delete(p.sid)) return;
    this.players.delete(p.sid);
    if (!p.hidden) this.broadcast({ type: 'participantLeft', participantSid: p.sid, identity: p.identity, reason });
    // Those who receive only this participant have nothing left to receive.
    for (const other of [...this.participants.values()]) {
      const from = other.capabilities.receives;
      if (from.from === 'participant' && from.identity === p.identity) other.close('client_left');
    }
    this.emit('participantLeft', p, reason);
    this.armEmptyTimer();
  }

  /** Tells every participant's client except `exceptSid`. */
  broadcast(signal: RoomSignal, exceptSid?: string): void {
    for (const p of this.participants.values()) {
      if (p.sid !== exceptSid && !p.closed) p.deliver(signal);
    }
  }

  private armEmptyTimer(): void {
    if (this._closed || this.participants.size > 0 || this.emptyTimer !== undefined) return;
    this.emptyTimer = setTimeout(() => this.close('room_closed'), this.emptyTimeoutMs);
    this.emptyTimer.unref();
  }

  /** Idempotent: removes every participant, then tells the owner (the Sfu) it is gone. */
  close(reason: LeaveReason): void {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this.emptyTimer);
    for (const p of [...this.participants.values()]) {
      p.close(reason);
    }
    this.participants.clear();
    this.log.info({ reason }, 'room closed');
    this.emit('closed');
    this.removeAllListeners();
  }
}
