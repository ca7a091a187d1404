/**
 * SecureConnect Video browser SDK: `Room.connect(url, token)`, publish, receive, mute,
 * recover, end-to-end encryption, recording. See docs/sdk.md; the wire protocol is docs/signaling.md.
 */
export type { E2eeApi, E2eeErrorInfo, E2eeKey, E2eeOptions } from './e2ee/e2ee.ts';
export { type ConnectionState, E2eeError, RoomError, type RoomEvents } from './events.ts';
export { type LocalTrack, RemoteParticipant, type RemoteTrack, type TrackKind } from './participant.ts';
export { type ConnectOptions, type PublishOptions, Room, signalingUrl, type VideoOptions } from './room.ts';
export type { ParticipantStats, TrackStats } from './stats.ts';
