import type { ParticipantInfo, TrackInfo } from '../src/signaling/messages.ts';

export type TrackKind = 'audio' | 'video';
export type TrackSource = TrackInfo['source'];

/** A track another participant publishes. `mediaTrack` is set once its media arrives. */
export interface RemoteTrack {
  readonly sid: string;
  readonly kind: TrackKind;
  readonly source: TrackSource;
  readonly name: string;
  muted: boolean;
  mediaTrack: MediaStreamTrack | undefined;
}

/** One of our own published tracks. `sid` is known once the server confirms it. */
export interface LocalTrack {
  sid: string | undefined;
  readonly kind: TrackKind;
  readonly source: 'camera' | 'microphone';
  readonly mediaTrack: MediaStreamTrack;
  muted: boolean;
}

/** Someone else in the room, as the server describes them, plus what we receive of them. */
export class RemoteParticipant {
  readonly sid: string;
  readonly identity: string;
  readonly name: string;
  /** By track sid. */
  readonly tracks = new Map<string, RemoteTrack>();

  constructor(info: ParticipantInfo) {
    this.sid = info.sid;
    this.identity = info.identity;
    this.name = info.name;
    for (const t of info.tracks) this.addTrack(t);
  }

  addTrack(info: TrackInfo): RemoteTrack {
    const existing = this.tracks.get(info.sid);
    if (existing !== undefined) {
      existing.muted = info.muted;
      return existing;
    }
    const track: RemoteTrack = { sid: info.sid, kind: info.kind, source: info.source, name: info.name, muted: info.muted, mediaTrack: undefined };
    this.tracks.set(info.sid, track);
    return track;
  }

  /** The first track of a kind (the camera or microphone of a typical participant). */
  track(kind: TrackKind): RemoteTrack | undefined {
    for (const t of this.tracks.values()) if (t.kind === kind) return t;
    return undefined;
  }
}
