import { z } from 'zod';
import { DisplayName, Sdp } from '../common/limits.ts';
import {
  TRACK_SOURCES,
  type LeaveReason,
  type OfferedTrack,
  type ParticipantDescription,
  type RoomDescription,
  type TrackDescription,
} from '../sfu/signals.ts';

/**
 * The WebSocket signaling protocol, version 1. These schemas are the protocol: the server
 * validates every client message with them, and docs/signaling.md describes them.
 */
export const PROTOCOL_VERSION = 1;

/** Which of the participant's two PeerConnections a message is about. */
export const Target = z.enum(['publisher', 'subscriber']);
export type Target = z.infer<typeof Target>;

const RequestId = z.union([z.string().max(64), z.number().int()]).optional();

export const IceCandidateInit = z.object({
  candidate: z.string().max(1024),
  sdpMid: z.string().max(64).nullish(),
  sdpMLineIndex: z.number().int().min(0).max(1024).nullish(),
  usernameFragment: z.string().max(256).nullish(),
});
export type IceCandidateInit = z.infer<typeof IceCandidateInit>;

export const TrackSource = z.enum(TRACK_SOURCES);

// ---- client → server ------------------------------------------------------------------

export const ClientMessage = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('join'),
    id: RequestId,
    protocol: z.number().int(),
    token: z.string().min(1).max(8192),
    name: DisplayName.optional(),
  }),
  z.object({ type: z.literal('offer'), id: RequestId, target: z.literal('publisher'), sdp: Sdp }),
  z.object({ type: z.literal('answer'), id: RequestId, target: z.literal('subscriber'), sdp: Sdp }),
  z.object({ type: z.literal('candidate'), id: RequestId, target: Target, candidate: IceCandidateInit.nullable() }),
  z.object({
    type: z.literal('track_info'),
    id: RequestId,
    mid: z.string().min(1).max(64),
    source: TrackSource.optional(),
    name: z.string().max(128).optional(),
  }),
  z.object({ type: z.literal('mute'), id: RequestId, trackSid: z.string().min(1).max(64), muted: z.boolean() }),
  z.object({ type: z.literal('recording'), id: RequestId, active: z.boolean() }),
  z.object({ type: z.literal('leave'), id: RequestId }),
  z.object({ type: z.literal('ping'), id: RequestId, t: z.number().optional() }),
]);
export type ClientMessage = z.infer<typeof ClientMessage>;
export type ClientMessageType = ClientMessage['type'];
export const CLIENT_MESSAGE_TYPES: readonly string[] = ClientMessage.options.map((o) => o.shape.type.value);

// ---- server → client ------------------------------------------------------------------

/** The media core's descriptions are the wire's: these names are the protocol's. */
export type TrackInfo = TrackDescription;
export type ParticipantInfo = ParticipantDescription;
export type { LeaveReason };

export interface IceServerInfo {
  urls: string[];
  username?: string;
  credential?: string;
}

export type ServerMessage =
  | {
      type: 'joined';
      id?: string | number;
      protocol: number;
      resumed: boolean;
      participant: ParticipantInfo;
      room: RoomDescription;
      iceServers: IceServerInfo[];
      codecs: string[];
    }
  | { type: 'answer'; id?: string | number; target: 'publisher'; sdp: string }
  | {
      type: 'offer';
      target: 'subscriber';
      sdp: string;
      /** For each m-line the server sends on: which participant and track it carries. */
      tracks: Record<string, OfferedTrack>;
    }
  | { type: 'candidate'; target: Target; candidate: IceCandidateInit | null }
  | { type: 'ack'; id?: string | number }
  | { type: 'pong'; id?: string | number; t?: number }
  | { type: 'participant_joined'; participant: ParticipantInfo }
  | { type: 'participant_left'; participantSid: string; identity: string; reason: LeaveReason }
  | { type: 'track_published'; participantSid: string; identity: string; track: TrackInfo }
  | { type: 'track_unpublished'; participantSid: string; identity: string; trackSid: string }
  | { type: 'track_muted'; participantSid: string; identity: string; trackSid: string; muted: boolean }
  | { type: 'recording_status'; active: boolean }
  /** `id`: the `leave` it answers, when the client left. */
  | { type: 'left'; id?: string | number; reason: LeaveReason }
  | { type: 'error'; id?: string | number; code: string; message: string };
