import type { ParticipantSignal } from '../sfu/signals.ts';
import type { ServerMessage } from './messages.ts';

/** The protocol message for one of the media core's signals: the only place they are translated. */
export function serverMessageFor(signal: ParticipantSignal): ServerMessage {
  switch (signal.type) {
    case 'participantJoined':
      return { type: 'participant_joined', participant: signal.participant };
    case 'participantLeft':
      return { type: 'participant_left', participantSid: signal.participantSid, identity: signal.identity, reason: signal.reason };
    case 'trackPublished':
      return { type: 'track_published', participantSid: signal.participantSid, identity: signal.identity, track: signal.track };
    case 'trackUnpublished':
      return { type: 'track_unpublished', participantSid: signal.participantSid, identity: signal.identity, trackSid: signal.trackSid };
    case 'trackMuted':
      return { type: 'track_muted', participantSid: signal.participantSid, identity: signal.identity, trackSid: signal.trackSid, muted: signal.muted };
    case 'recordingChanged':
      return { type: 'recording_status', active: signal.active };
    case 'subscriptionOffer':
      return { type: 'offer', target: 'subscriber', sdp: signal.offer.sdp, tracks: signal.offer.tracks };
    case 'localCandidate':
      return { type: 'candidate', target: signal.role, candidate: signal.candidate };
  }
}
