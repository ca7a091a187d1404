/**
 * What the media core tells the outside world about a participant's call, in its own
 * terms. `src/signaling` (WebSocket) and `src/http` translate these to their wire
 * formats; nothing here knows a wire protocol.
 */

export const TRACK_SOURCES = ['camera', 'microphone', 'screen', 'screen_audio', 'unknown'] as const;
export type TrackSource = (typeof TRACK_SOURCES)[number];

export type MediaKind = 'audio' | 'video';

/** A published track as everyone sees it. */
export interface TrackDescription {
  sid: string;
  kind: MediaKind;
  source: TrackSource;
  name: string;
  codec: string;
  muted: boolean;
  /** The m-line it arrives on, on its publisher's own connection (lets the publisher tie sid and transceiver). */
  mid: string;
}

export interface ParticipantDescription {
  sid: string;
  identity: string;
  name: string;
  tracks: TrackDescription[];
}

export interface RoomDescription {
  name: string;
  sid: string;
  e2ee: boolean;
  recording: boolean;
  /** Everyone visible, except the participant it is described to. */
  participants: ParticipantDescription[];
}

/** Why a participant left (or was removed). */
export type LeaveReason =
  | 'client_left'
  | 'connection_failed'
  | 'negotiation_failed'
  | 'signaling_lost'
  | 'replaced'
  | 'room_closed'
  | 'server_shutdown'
  | 'media_worker_failed'
  /** The room's node is draining or merging it into its twin on another node: join again, it is there. */
  | 'room_moved';

/** One ICE candidate, as RTCIceCandidateInit has it; `null` elsewhere means end of candidates. */
export interface IceCandidate {
  candidate: string;
  sdpMid?: string | null;
  sdpMLineIndex?: number | null;
  usernameFragment?: string | null;
}

/** Which of a renegotiating participant's two connections: the one it sends on, or the one it receives on. */
export type ConnectionRole = 'publisher' | 'subscriber';

/** What one m-line of a subscriber offer carries. */
export interface OfferedTrack {
  participantSid: string;
  identity: string;
  trackSid: string;
  kind: MediaKind;
  source: TrackSource;
  name: string;
}

/** An offer on a subscriber connection, with what each sending m-line carries, by mid. */
export interface SubscriptionOffer {
  sdp: string;
  tracks: Record<string, OfferedTrack>;
}

/** What happened in the room, for every participant who can see it. */
export type RoomSignal =
  | { type: 'participantJoined'; participant: ParticipantDescription }
  | { type: 'participantLeft'; participantSid: string; identity: string; reason: LeaveReason }
  | { type: 'trackPublished'; participantSid: string; identity: string; track: TrackDescription }
  | { type: 'trackUnpublished'; participantSid: string; identity: string; trackSid: string }
  | { type: 'trackMuted'; participantSid: string; identity: string; trackSid: string; muted: boolean }
  | { type: 'recordingChanged'; active: boolean };

/** Everything one participant's client must hear. */
export type ParticipantSignal =
  | RoomSignal
  | { type: 'subscriptionOffer'; offer: SubscriptionOffer }
  | { type: 'localCandidate'; role: ConnectionRole; candidate: IceCandidate | null };

/**
 * Where a participant's signals go: the protocol session that speaks for it (one per
 * participant, replaced on reconnect). A participant without one (HTTP, WHIP, WHEP: no
 * channel after the answer) drops them.
 */
export interface SignalSink {
  deliver(signal: ParticipantSignal): void;
}

/**
 * What a participant can do, instead of which protocol it came by. The protocol layers
 * choose these; the media core only ever branches on them.
 */
export interface ParticipantCapabilities {
  /**
   * Two connections (publisher: client offers; subscriber: server offers) renegotiated
   * whenever tracks come and go. Otherwise one connection, negotiated once by the client's
   * offer: its receiving m-lines are filled then, and nothing new reaches it later.
   */
  renegotiates: boolean;
  /** Neither announced to the room nor listed in it (a WHEP player). */
  hidden: boolean;
  /** Whose tracks it receives: everyone else's, one participant's (by identity), or nobody's. */
  receives: { from: 'all' } | { from: 'participant'; identity: string } | { from: 'none' };
  /** Keeps its media up for the reconnect grace when its signaling drops, and can be resumed. */
  resumable: boolean;
}
