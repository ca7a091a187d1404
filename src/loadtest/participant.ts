/**
 * One load-test participant: the project's Node client (src/node-client/signaling-client.ts)
 * with a TrackStats per received track and, for publishers, one VP8 and optionally one
 * Opus synthetic track. Like the SDK, it rejoins by itself when its socket drops or the
 * server tells it `left` for a reason a rejoin fixes (its node or media worker died, its
 * room moved): a fresh client on the next URL, joined, published and receiving again.
 * Every wait is bounded; `close()` leaves, closes both PeerConnections and the socket, and
 * is idempotent.
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
/** `left` reasons after which the SDK joins again (client/room.ts); the load tool does too. */
const REJOIN_REASONS = new Set(['connection_failed', 'media_worker_failed', 'room_moved']);
/** The SDK's schedule (client/room.ts): at once, then 0.25, 0.5, 1, 2, 4, 8, 8, 8 s. */
const REJOIN_DELAYS_MS = [0, 250, 500, 1000, 2000, 4000, 8000, 8000, 8000];
/** How often a rejoined participant checks whether media is back. */
const MEDIA_POLL_MS = 50;

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
  /** Signaling URLs (several nodes of a cluster): each participant starts at its own, a rejoin tries the next. */
  wsUrls: readonly string[];
  /** werift ICE settings (loopback pinning for local servers). */
  ice: Partial<PeerConfig>;
  /** Pass the `iceServers` of `joined` to the PeerConnections (remote servers). */
  useIceServers: boolean;
  publish: PublishOptions;
  latency: LatencyRecorder;
  /** Counts a problem by its description. */
  problem(what: string): void;
}

/** One automatic rejoin: why, and the time from the drop until media from every expected track came again. */
export interface Rejoin {
  reason: string;
  /** Undefined while not (or never) back: the rejoin failed, or some track did not come within the join timeout. */
  recoveredMs: number | undefined;
}

export class Participant {
  readonly spec: ParticipantSpec;
  state: 'idle' | 'joining' | 'joined' | 'rejoining' | 'failed' | 'closed' = 'idle';
  failure: string | undefined;
  joinMs: number | undefined;
  /** Set when the server removed us for good (`left` no rejoin fixes, or a rejoin that failed). */
  dropped: string | undefined;
  readonly rejoins: Rejoin[] = [];
  /** Every track ever received, over every rejoin (one whose m-line went to another track stays, for the totals). */
  readonly tracks: TrackStats[] = [];
  video: LocalTrack | undefined;
  audio: LocalTrack | undefined;
  private readonly env: ParticipantEnv;
  private current: SignalingClient<TrackStats>;
  private urlIndex: number;
  private token = '';
  private timeoutMs = REQUEST_TIMEOUT_MS;
  /** What the clients before the current one sent and could not map, for the totals. */
  private readonly retired = { videoPackets: 0, audioPackets: 0, bytes: 0, unmapped: 0 };
  private rejoining: Promise<void> | undefined;
  /** Ends the current pause of a rejoin at once. */
  private wake: (() => void) | undefined;
  private leaving = false;
  private closing: Promise<void> | undefined;

  /** `first`: the index in `env.wsUrls` this participant joins through first. */
  constructor(spec: ParticipantSpec, env: ParticipantEnv, first = 0) {
    this.spec = spec;
    this.env = env;
    this.urlIndex = first % env.wsUrls.length;
    this.current = this.makeClient(env.wsUrls[this.urlIndex]!);
  }

  /** The client of the current join (a rejoin replaces it). */
  get client(): SignalingClient<TrackStats> {
    return this.current;
  }

  /** Packets on subscriber m-lines no offer mapped, over every rejoin. */
  get unmapped(): number {
    return this.retired.unmapped + this.current.subscriber.unmapped;
  }

  /**
   * Opens the socket, joins with `token`, and for a publisher publishes and waits until its
   * connection is up, all within `timeoutMs` (and so does each rejoin). Never throws:
   * failures end in `state: 'failed'`.
   */
  async join(token: string, timeoutMs: number): Promise<void> {
    this.token = token;
    this.timeoutMs = timeoutMs;
    this.state = 'joining';
    const started = performance.now();
    try {
      await this.attempt();
      this.joinMs = performance.now() - started;
      if (this.closing === undefined) this.state = 'joined';
    } catch (err) {
      this.state = 'failed';
      this.failure = (err as Error).message;
      // Free what the attempt holds now; the server notices the socket go.
      void this.close();
    }
  }

  /** Packets and bytes the synthetic sources sent so far (over every rejoin). */
  sent(): { videoPackets: number; audioPackets: number; bytes: number } {
    const v = this.video?.source;
    const a = this.audio?.source;
    return {
      videoPackets: this.retired.videoPackets + (v?.packetsSent ?? 0),
      audioPackets: this.retired.audioPackets + (a?.packetsSent ?? 0),
      bytes: this.retired.bytes + (v?.bytesSent ?? 0) + (a?.bytesSent ?? 0),
    };
  }

  /** Stops sending (first step of a clean end, so teardown does not race new packets). */
  stopMedia(): void {
    this.current.publisher?.stopMedia();
  }

  /** Leaves (bounded wait for `left`), closes the PeerConnections and the socket; ends a rejoin under way. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.leaving = true;
      this.wake?.();
      this.stopMedia();
      if (this.state === 'joined') await this.current.leave(LEAVE_TIMEOUT_MS);
      if (this.state !== 'failed') this.state = 'closed';
      await this.current.close();
      await this.rejoining;
    })();
    return this.closing;
  }

  private makeClient(wsUrl: string): SignalingClient<TrackStats> {
    const env = this.env;
    const client: SignalingClient<TrackStats> = new SignalingClient<TrackStats>({
      wsUrl,
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
          if (msg.type === 'left') this.lost(client, `left: ${msg.reason}`, REJOIN_REASONS.has(msg.reason));
          else if (msg.type === 'error' && !reply) env.problem(`server error ${msg.code}`);
        },
        problem: (what) => env.problem(what),
        socketClosed: (code, reason) => this.lost(client, `socket closed (${code} ${reason || '-'}) without "left"`, true),
      },
    });
    return client;
  }

  /** Connects, joins and (a publisher) publishes on the current client, within the join timeout; throws `<step>: <why>`. */
  private async attempt(): Promise<void> {
    const client = this.current;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${this.timeoutMs / 1000} s`)), this.timeoutMs);
    });
    let step = 'connect';
    try {
      await Promise.race([deadline, client.connect()]);
      step = 'join';
      const joined = await Promise.race([deadline, client.join({ token: this.token, name: this.spec.identity })]);
      if (joined.resumed) {
        // The server kept our previous participant (its socket went within the reconnect
        // grace) but we closed its media: end it and join as a new one, as the SDK does.
        await Promise.race([deadline, client.leave()]);
        throw new Error('the server resumed a participant whose media is gone; joining again');
      }
      if (this.spec.publisher) {
        step = 'publish';
        const { videoBitrateKbps, fps, audio } = this.env.publish;
        const tracks = await Promise.race([
          deadline,
          client.publish([
            { kind: 'video', codec: 'vp8', source: 'camera', bitrateKbps: videoBitrateKbps, fps },
            ...(audio ? [{ kind: 'audio' as const, codec: 'opus' as const, source: 'microphone' as const }] : []),
          ]),
        ]);
        [this.video, this.audio] = tracks;
        step = 'connect publisher';
        await Promise.race([deadline, client.publisher!.connected()]);
      }
    } catch (err) {
      let why = `${step}: ${err instanceof ServerError ? err.code : (err as Error).message}`;
      if (step === 'connect publisher' && client.publisher !== undefined) why += ` (${client.publisher.describe()})`;
      throw new Error(why);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The current client lost its socket or was told `left`: rejoin, or (a reason no rejoin fixes) count it as dropped. */
  private lost(client: SignalingClient<TrackStats>, why: string, rejoin: boolean): void {
    if (client !== this.current || this.leaving || this.state !== 'joined') return;
    const what = `${why}; our publisher connection ${client.publisher?.connectionState ?? 'none'}, subscriber connection ${client.subscriber.connectionState}`;
    if (!rejoin) {
      this.dropped ??= what;
      return;
    }
    this.state = 'rejoining';
    this.rejoining = this.rejoin(why);
  }

  /** Joins again with the SDK's backoff, each attempt through the next URL, then waits for media from every expected track. */
  private async rejoin(reason: string): Promise<void> {
    const droppedAt = performance.now();
    const entry: Rejoin = { reason, recoveredMs: undefined };
    this.rejoins.push(entry);
    let last = 'no attempt';
    for (const delay of REJOIN_DELAYS_MS) {
      if (delay > 0) await this.sleep(delay);
      if (this.leaving) return;
      await this.retire();
      if (this.leaving) return;
      this.urlIndex = (this.urlIndex + 1) % this.env.wsUrls.length;
      this.current = this.makeClient(this.env.wsUrls[this.urlIndex]!);
      const tracksBefore = this.tracks.length;
      try {
        await this.attempt();
      } catch (err) {
        last = (err as Error).message;
        continue;
      }
      if (this.leaving) return;
      this.state = 'joined';
      if (await this.mediaBack(this.current, tracksBefore)) entry.recoveredMs = performance.now() - droppedAt;
      return;
    }
    this.state = 'failed';
    this.failure = `rejoin: ${last}`;
    this.dropped ??= `${reason}; every rejoin failed (last: ${last})`;
  }

  /** Closes the client of the lost join, keeping its figures for the totals. */
  private async retire(): Promise<void> {
    const old = this.current;
    const sent = this.sent();
    this.retired.videoPackets = sent.videoPackets;
    this.retired.audioPackets = sent.audioPackets;
    this.retired.bytes = sent.bytes;
    this.retired.unmapped += old.subscriber.unmapped;
    this.video = undefined;
    this.audio = undefined;
    await old.close();
  }

  /** Whether every expected remote track (identity and kind) delivers packets on `client` within the join timeout. */
  private async mediaBack(client: SignalingClient<TrackStats>, tracksBefore: number): Promise<boolean> {
    const end = performance.now() + this.timeoutMs;
    while (!this.leaving && client === this.current && performance.now() < end) {
      const flowing = new Set(this.tracks.slice(tracksBefore).filter((t) => t.packets > 0).map((t) => `${t.identity}/${t.video}`));
      if (flowing.size >= this.spec.expectedTracks) return true;
      await this.sleep(MEDIA_POLL_MS);
    }
    return false;
  }

  /** A pause that `close()` cuts short. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.wake = wake;
    });
  }
}
