import type { E2eeErrorInfo } from './e2ee/e2ee.ts';
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
 * `RECONNECT_FAILED` (gave up recovering), `LEFT` (the server removed us: `message` says why),
 * and for end-to-end encrypted rooms (docs/e2ee.md) `E2EE_KEY_REQUIRED` (publishing without
 * a key), `E2EE_KEY_INVALID` (the key could not be installed), `E2EE_UNSUPPORTED` (the
 * browser cannot transform encoded frames), `E2EE_NOT_ENABLED` (a key for a room that is
 * not encrypted), `E2EE_MODE_MISMATCH` (the room's mode is not the one we joined),
 * `E2EE_DECRYPT_FAILED` (see `E2eeError`).
 */
export class RoomError extends Error {
  readonly code: string;

  constructor(code: string, message: string) {
    super(message);
    this.name = 'RoomError';
    this.code = code;
  }
}

/**
 * A received frame did not decrypt (the `e2eeError` event): a wrong passphrase or key
 * (`auth-failed`), a key slot we do not hold (`unknown-key`), or a frame that is not
 * encrypted at all (`too-short`). The frame was dropped; the call goes on. Raised at most
 * once a second per reason and track, while it keeps happening.
 */
export class E2eeError extends RoomError {
  readonly reason: E2eeErrorInfo['reason'];
  readonly keyIndex: number | undefined;
  /** Whose media it was, when the SDK could tell. */
  readonly participant: RemoteParticipant | undefined;
  readonly track: RemoteTrack | undefined;

  constructor(info: E2eeErrorInfo, participant: RemoteParticipant | undefined, track: RemoteTrack | undefined) {
    const whose = participant === undefined ? 'a remote track' : `${participant.name}'s ${track?.kind ?? 'media'}`;
    const why =
      info.reason === 'auth-failed'
        ? `wrong key${info.keyIndex === undefined ? '' : ` in slot ${info.keyIndex}`}, or the frame was altered`
        : info.reason === 'unknown-key'
          ? `no key in slot ${info.keyIndex ?? '?'}`
          : 'the frame is not encrypted';
    super('E2EE_DECRYPT_FAILED', `cannot decrypt ${whose} (${info.reason}: ${why})`);
    this.name = 'E2eeError';
    this.reason = info.reason;
    this.keyIndex = info.keyIndex;
    this.participant = participant;
    this.track = track;
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
  /** E2EE rooms: a received frame did not decrypt and was dropped. */
  e2eeError: [E2eeError];
  /** The room's recording started (`true`) or stopped (`false`). */
  recordingStatusChanged: [boolean];
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
