/**
 * One load-test participant: the project's Node client (src/node-client/signaling-client.ts)
 * with a TrackStats per received track and, for publishers, one VP8 and optionally one
 * Opus synthetic track. Every wait is bounded; `close()` leaves, closes both
 * PeerConnections and the socket, and is idempotent.
 */
import type { PeerConfig } from 'werift';
import type { LocalTrack } from '../node-client/local-track.ts';
import { peerConfig } from '../node-client/peer-config.ts';
import { ServerError } from '../node-client/server-error.ts';
import { SignalingClient } from '../node-client/signaling-client.ts';
import type { LatencyRecorder } from './latency-recorder.ts';
import { TrackStats } from './track-stats.ts';

const REQUEST_TIMEOUT_MS = 10_000;
const LEAVE_TIMEOUT_MS = 2_000;

export interface ParticipantSpec {
  room: string;
  identity: string;
  publisher: boolean;
  /** Remote tracks this participant should end up receiving. */
  expectedTracks: number;
}

export interface PublishOptions {
  videoBitrateKbps: number;
  fps: number;
  audio: boolean;
}

export interface ParticipantEnv {
  wsUrl: string;
  /** werift ICE settings (loopback pinning for local servers). */
  ice: Partial<PeerConfig>;
  /** Pass the `iceServers` of `joined` to the PeerConnections (remote servers). */
  useIceServers: boolean;
  publish: PublishOptions;
  latency: LatencyRecorder;
  /** Counts a problem by its description. */
  problem(what: string): void;
}

export class Participant {
  readonly spec: ParticipantSpec;
  state: 'idle' | 'joining' | 'joined' | 'failed' | 'closed' = 'idle';
  failure: string | undefined;
  joinMs: number | undefined;
  /** Set when the server removed us (`left` we did not ask for, or the socket dropped). */
  dropped: string | undefined;
  /** Every track ever received (one whose m-line went to another track stays, for the totals). */
  readonly tracks: TrackStats[] = [];
  readonly client: SignalingClient<TrackStats>;
  video: LocalTrack | undefined;
  audio: LocalTrack | undefined;
  private readonly env: ParticipantEnv;
  private leaving = false;
  private closing: Promise<void> | undefined;

  constructor(spec: ParticipantSpec, env: ParticipantEnv) {
    this.spec = spec;
    this.env = env;
    this.client = new SignalingClient<TrackStats>({
      wsUrl: env.wsUrl,
      timeoutMs: REQUEST_TIMEOUT_MS,
      useIceServers: env.useIceServers,
      peerConfig: (role) => peerConfig(role, env.ice),
      sinkFor: (info) => {
        const t = new TrackStats(info.trackSid, info.identity, info.kind === 'video', env.latency);
        this.tracks.push(t);
        return t;
      },
      hooks: {
        message: (msg, reply) => {
          if (msg.type === 'left' && !this.leaving) this.dropped ??= `left: ${msg.reason}; ${this.connections()}`;
          else if (msg.type === 'error' && !reply) env.problem(`server error ${msg.code}`);
        },
        problem: (what) => env.problem(what),
        socketClosed: (code, reason) => {
          if (!this.leaving && this.state === 'joined') this.dropped ??= `socket closed (${code} ${reason || '-'}) without "left"; ${this.connections()}`;
        },
      },
    });
  }

  /**
   * Opens the socket, joins with `token`, and for a publisher publishes and waits until its
   * connection is up, all within `timeoutMs`. Never throws: failures end in `state: 'failed'`.
   */
  async join(token: string, timeoutMs: number): Promise<void> {
    this.state = 'joining';
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs / 1000} s`)), timeoutMs);
    });
    let step = 'connect';
    try {
      await Promise.race([deadline, this.client.connect()]);
      step = 'join';
      await Promise.race([deadline, this.client.join({ token, name: this.spec.identity })]);
      if (this.spec.publisher) {
        step = 'publish';
        const { videoBitrateKbps, fps, audio } = this.env.publish;
        const tracks = await Promise.race([
          deadline,
          this.client.publish([
            { kind: 'video', codec: 'vp8', source: 'camera', bitrateKbps: videoBitrateKbps, fps },
            ...(audio ? [{ kind: 'audio' as const, codec: 'opus' as const, source: 'microphone' as const }] : []),
          ]),
        ]);
        [this.video, this.audio] = tracks;
        step = 'connect publisher';
        await Promise.race([deadline, this.client.publisher!.connected()]);
      }
      this.joinMs = performance.now() - started;
      if (this.closing === undefined) this.state = 'joined';
    } catch (err) {
      this.state = 'failed';
      this.failure = `${step}: ${err instanceof ServerError ? err.code : (err as Error).message}`;
      if (step === 'connect publisher' && this.client.publisher !== undefined) this.failure += ` (${this.client.publisher.describe()})`;
      // Free what the attempt holds now; the server notices the socket go.
      void this.close();
    } finally {
      clearTimeout(timer);
    }
  }

  /** Packets and bytes the synthetic sources sent so far. */
  sent(): { videoPackets: number; audioPackets: number; bytes: number } {
    const v = this.video?.source;
    const a = this.audio?.source;
    return { videoPackets: v?.packetsSent ?? 0, audioPackets: a?.packetsSent ?? 0, bytes: (v?.bytesSent ?? 0) + (a?.bytesSent ?? 0) };
  }

  /** Our side's view of the two PeerConnections, for drop reports. */
  private connections(): string {
    return `our publisher connection ${this.client.publisher?.connectionState ?? 'none'}, subscriber connection ${this.client.subscriber.connectionState}`;
  }

  /** Stops sending (first step of a clean end, so teardown does not race new packets). */
  stopMedia(): void {
    this.client.publisher?.stopMedia();
  }

  /** Leaves (bounded wait for `left`), closes the PeerConnections and the socket. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.leaving = true;
      this.stopMedia();
      if (this.state === 'joined') await this.client.leave(LEAVE_TIMEOUT_MS);
      if (this.state !== 'failed') this.state = 'closed';
      await this.client.close();
    })();
    return this.closing;
  }
}
