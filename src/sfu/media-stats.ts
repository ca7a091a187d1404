import type { PacketDropReason } from 'werift';

/** Every reason werift (patched, docs/werift.md) gives for an inbound datagram it dropped. */
export const PACKET_DROP_REASONS: readonly PacketDropReason[] = [
  'stun_auth',
  'candidate_limit',
  'unvalidated_source',
  'dtls_plaintext',
  'dtls_buffer',
  'malformed',
];

/** Why a subscriber negotiation was given up (src/sfu/subscriber-connection.ts). */
export const NEGOTIATION_FAILURE_REASONS = ['invalid_answer', 'timeout', 'offer_failed'] as const;
export type NegotiationFailureReason = (typeof NEGOTIATION_FAILURE_REASONS)[number];

/**
 * Process-wide media counters, plain numbers so the per-packet path costs one addition each.
 * The metrics endpoint reads them at scrape time.
 */
export class MediaStats {
  packetsReceived = 0;
  bytesReceived = 0;
  packetsForwarded = 0;
  bytesForwarded = 0;
  /** Packets not forwarded to a subscriber: transport not ready, waiting for a keyframe, stale. */
  packetsDropped = 0;
  /** Of those, video not forwarded because the process could not keep up (OverloadGuard). */
  packetsShed = 0;
  nacksReceived = 0;
  /** NACKs werift's receiver sent to publishers for packets lost on the way in. */
  nacksSent = 0;
  plisReceived = 0;
  firsReceived = 0;
  keyframeRequestsSent = 0;
  twccFeedbackSent = 0;
  /** Transports closed because werift's internals were not what src/sfu/werift-adapter.ts expects. */
  weriftAdapterFailures = 0;
  /** Inbound datagrams the media plane dropped before DTLS/SRTP, by reason. */
  readonly mediaPacketsDropped = Object.fromEntries(PACKET_DROP_REASONS.map((r) => [r, 0])) as Record<PacketDropReason, number>;
  /** Subscriber offers given up (rolled back, a fresh one sent), by reason. */
  readonly negotiationFailures = Object.fromEntries(NEGOTIATION_FAILURE_REASONS.map((r) => [r, 0])) as Record<NegotiationFailureReason, number>;
}
