import type { ParticipantSignal } from '../sfu/signals.ts';
import type { ServerMessage } from './messages.ts';

/** The wire message for one of the media core's signals: the only place they are translated. */
export function serverMessageFor(signal: ParticipantSignal): ServerMessage {
  switch (signal.type) {
    case 'subscription_offer':
      return { type: 'offer', target: 'subscriber', sdp: signal.offer.sdp, tracks: signal.offer.tracks };
    case 'local_candidate':
      return { type: 'candidate', target: signal.role, candidate: signal.candidate };
    default:
      // The room's signals are the protocol's messages of the same name, field for field.
      return signal;
  }
}
