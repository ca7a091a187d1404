/**
 * What `Room.getStats()` returns. Plain data and free of DOM types, so Node-side code
 * (tests, benchmarks reading it through a page) can use these types too.
 */

/** One track's counters, as of this `getStats()` call. */
export interface TrackStats {
  /** The track's sid (undefined for a local track the server has not confirmed yet). */
  trackSid: string | undefined;
  kind: 'audio' | 'video';
  /** Payload bytes and RTP packets sent (local) or received (remote) so far. */
  bytes: number;
  packets: number;
  /** Packets lost on the way: reported by the server for what we send, counted by us for what we receive. */
  packetsLost: number;
  /** Bits per second over the last second or more (0 until a second has passed). */
  bitrate: number;
  /** Video only: the size last encoded (local) or decoded (remote), frames so far, frame rate. */
  frameWidth?: number;
  frameHeight?: number;
  frames?: number;
  framesPerSecond?: number;
}

export interface ParticipantStats {
  participantSid: string;
  identity: string;
  /** True for us (what we send); false for each other participant (what we receive of them). */
  local: boolean;
  tracks: TrackStats[];
  /** Sum of the tracks' bitrates, bits per second. */
  bitrate: number;
  /** Fraction of packets lost, 0…1, over the tracks' lifetime. */
  packetLoss: number;
  /** Round trip to the server on the connection that carries this media, seconds. */
  roundTripTime: number | undefined;
  /** Local only: the browser's estimate of the uplink it may use, bits per second. */
  availableOutgoingBitrate?: number;
}
