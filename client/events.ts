import type { LocalTrack, RemoteParticipant, RemoteTrack } from './participant.ts';

/**
 * `connecting`: the first join is under way. `connected`: joined, media set up.
 * `reconnecting`: the WebSocket dropped or a PeerConnection failed, and the room is
 * recovering on its own (resume, ICE restart or rejoin). `disconnected`: left, refused,
 * or recovery gave up; final.
 */
export type ConnectionState = 'connecting' | 'connected' | 'reconnecting' | 'disconnected';

/**
 * Every failure the SDK reports. `code` is the server's error code (docs/signaling.md,
 * e.g. `UNAUTHORIZED`) when the server refused something, or one of the SDK's own:
 * `CONNECT_FAILED` (the WebSocket could not be opened), `TIMEOUT` (no reply in time),
 * `SIGNALING_CLOSED` (the socket closed under a request), `MEDIA_DENIED` (camera or
 * microphone permission refused), `MEDIA_UNAVAILABLE` (no such device, or it is busy),
 * `RECONNECT_FAILED` (gave up recovering), `LEFT` (the server removed us: `message` says why).
 */
export class RoomError extends Error {
  readonly code: string;

  constructor(code: string, message: string) {
    super(message);
    this.name = 'RoomError';
    this.code = code;
  }
}

export interface RoomEvents {
  connectionStateChanged: [ConnectionState];
  participantJoined: [RemoteParticipant];
  participantLeft: [RemoteParticipant];
  /** A remote track's media arrived: attach `track` to a media element. */
  trackSubscribed: [MediaStreamTrack, RemoteTrack, RemoteParticipant];
  /** The remote track ended (unpublished, its owner left, or the room was rebuilt). */
  trackUnsubscribed: [MediaStreamTrack, RemoteTrack, RemoteParticipant];
  /** A track was muted or unmuted; `participant` is undefined for our own tracks. */
  trackMuted: [RemoteTrack | LocalTrack, RemoteParticipant | undefined];
  /** Something failed; fatal failures are followed by `connectionStateChanged('disconnected')`. */
  error: [RoomError];
}

type Listener<A extends unknown[]> = (...args: A) => void;

/** A small typed event emitter for the browser (no Node `events` there). */
export class Emitter<Events extends { [K in keyof Events]: unknown[] }> {
  // Stored untyped: one map holds listeners of every event; on/off/emit restore the types.
  private readonly listeners = new Map<keyof Events, Set<unknown>>();

  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): this {
    let set = this.listeners.get(event);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener);
    return this;
  }

  off<K extends keyof Events>(event: K, listener: Listener<Events[K]>): this {
    this.listeners.get(event)?.delete(listener);
    return this;
  }

  protected emit<K extends keyof Events>(event: K, ...args: Events[K]): void {
    for (const listener of [...(this.listeners.get(event) ?? [])]) {
      // A throwing listener must not break the SDK's own bookkeeping that runs after it.
      try {
        (listener as Listener<Events[K]>)(...args);
      } catch (err) {
        console.error(`listener for "${String(event)}" threw`, err);
      }
    }
  }

  protected removeAllListeners(): void {
    this.listeners.clear();
  }
}
