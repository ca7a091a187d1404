import type { LocalTrack, RemoteParticipant, TrackKind } from './participant.ts';
import type { ParticipantStats, TrackStats } from './stats.ts';

/** The fields of RTCStatsReport entries we read (the DOM types give them as `any`). */
interface RawStats {
  id: string;
  type: string;
  timestamp: number;
  kind?: TrackKind;
  mid?: string;
  bytesSent?: number;
  bytesReceived?: number;
  packetsSent?: number;
  packetsReceived?: number;
  packetsLost?: number;
  frameWidth?: number;
  frameHeight?: number;
  framesEncoded?: number;
  framesDecoded?: number;
  framesPerSecond?: number;
  localId?: string;
  selectedCandidatePairId?: string;
  nominated?: boolean;
  state?: string;
  currentRoundTripTime?: number;
  availableOutgoingBitrate?: number;
}

/**
 * Turns byte counters into bitrates over windows of at least a second. Several callers
 * (the page's stats line, a test) may poll at once, and Chromium hands out the same cached
 * report for calls close together: a per-call delta would then be noise or zero.
 */
export class StatsSampler {
  private readonly windows = new Map<string, { bytes: number; timestamp: number; rate: number }>();

  bitrate(id: string, bytes: number, timestamp: number): number {
    const w = this.windows.get(id);
    if (w === undefined || bytes < w.bytes) {
      this.windows.set(id, { bytes, timestamp, rate: 0 });
      return 0;
    }
    if (timestamp - w.timestamp < MIN_WINDOW_MS) return w.rate;
    const rate = ((bytes - w.bytes) * 8 * 1000) / (timestamp - w.timestamp);
    this.windows.set(id, { bytes, timestamp, rate });
    return rate;
  }
}

const MIN_WINDOW_MS = 1000;

export interface StatsInput {
  local: { sid: string; identity: string };
  publisher: RTCStatsReport | undefined;
  subscriber: RTCStatsReport | undefined;
  localByMid: ReadonlyMap<string, LocalTrack>;
  remoteByMid: ReadonlyMap<string, { participantSid: string; trackSid: string }>;
  participants: ReadonlyMap<string, RemoteParticipant>;
}

function entries(report: RTCStatsReport | undefined): RawStats[] {
  const out: RawStats[] = [];
  report?.forEach((s: RawStats) => out.push(s));
  return out;
}

/** The candidate pair in use: the transport's selected one, else a nominated working one. */
function selectedPair(stats: RawStats[]): RawStats | undefined {
  const transport = stats.find((s) => s.type === 'transport' && s.selectedCandidatePairId !== undefined);
  return (
    stats.find((s) => s.type === 'candidate-pair' && s.id === transport?.selectedCandidatePairId) ??
    stats.find((s) => s.type === 'candidate-pair' && s.nominated === true && s.state === 'succeeded')
  );
}

function summarize(base: Omit<ParticipantStats, 'bitrate' | 'packetLoss'>): ParticipantStats {
  const packets = base.tracks.reduce((n, t) => n + t.packets, 0);
  const lost = base.tracks.reduce((n, t) => n + t.packetsLost, 0);
  return { ...base, bitrate: base.tracks.reduce((n, t) => n + t.bitrate, 0), packetLoss: packets + lost > 0 ? lost / (packets + lost) : 0 };
}

/** Turns the two PeerConnections' reports into per-participant figures. */
export function collectStats(sampler: StatsSampler, input: StatsInput): ParticipantStats[] {
  const out: ParticipantStats[] = [];
  const pub = entries(input.publisher);
  if (pub.length > 0) {
    const pair = selectedPair(pub);
    const tracks: TrackStats[] = [];
    for (const s of pub) {
      if (s.type !== 'outbound-rtp' || s.mid === undefined) continue;
      const local = input.localByMid.get(s.mid);
      if (local === undefined) continue;
      // The server's receiver reports arrive as remote-inbound-rtp, tied by localId.
      const remote = pub.find((r) => r.type === 'remote-inbound-rtp' && r.localId === s.id);
      tracks.push({
        trackSid: local.sid,
        kind: local.kind,
        bytes: s.bytesSent ?? 0,
        packets: s.packetsSent ?? 0,
        packetsLost: Math.max(0, remote?.packetsLost ?? 0),
        bitrate: sampler.bitrate(s.id, s.bytesSent ?? 0, s.timestamp),
        ...(local.kind === 'video'
          ? { frameWidth: s.frameWidth ?? 0, frameHeight: s.frameHeight ?? 0, frames: s.framesEncoded ?? 0, framesPerSecond: s.framesPerSecond ?? 0 }
          : {}),
      });
    }
    out.push(
      summarize({
        participantSid: input.local.sid,
        identity: input.local.identity,
        local: true,
        tracks,
        roundTripTime: pair?.currentRoundTripTime,
        availableOutgoingBitrate: pair?.availableOutgoingBitrate,
      }),
    );
  }
  const sub = entries(input.subscriber);
  const roundTripTime = selectedPair(sub)?.currentRoundTripTime;
  const byParticipant = new Map<string, TrackStats[]>();
  for (const s of sub) {
    if (s.type !== 'inbound-rtp' || s.mid === undefined) continue;
    const owner = input.remoteByMid.get(s.mid);
    if (owner === undefined) continue;
    const list = byParticipant.get(owner.participantSid) ?? [];
    byParticipant.set(owner.participantSid, list);
    const kind = s.kind ?? 'video';
    list.push({
      trackSid: owner.trackSid,
      kind,
      bytes: s.bytesReceived ?? 0,
      packets: s.packetsReceived ?? 0,
      packetsLost: Math.max(0, s.packetsLost ?? 0),
      bitrate: sampler.bitrate(s.id, s.bytesReceived ?? 0, s.timestamp),
      ...(kind === 'video'
        ? { frameWidth: s.frameWidth ?? 0, frameHeight: s.frameHeight ?? 0, frames: s.framesDecoded ?? 0, framesPerSecond: s.framesPerSecond ?? 0 }
        : {}),
    });
  }
  for (const [sid, tracks] of byParticipant) {
    const p = input.participants.get(sid);
    if (p !== undefined) out.push(summarize({ participantSid: sid, identity: p.identity, local: false, tracks, roundTripTime }));
  }
  return out;
}
