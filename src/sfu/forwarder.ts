import { SeqUnwrapper } from '../common/seq-unwrapper.ts';

const SEQ_MOD = 0x10000;
/**
 * The least timestamp advance across a rebase (a new source, a layer switch, a resume), in
 * ms: one frame at 30 fps, one 20 ms Opus frame. The subscriber's jitter buffer then sees
 * the next frame, not a repeat of the last one. After a longer pause the timestamp advances
 * by the time that passed, so that the receiver's clock and its A/V sync stay right.
 */
const REBASE_MIN_STEP_MS = { audio: 20, video: 1000 / 30 } as const;

/** How long after an SSRC change packets of the source left behind count as late, not as a switch back. */
const LATE_SOURCE_MS = 1000;

/** What the Forwarder reads of one incoming packet (PublishedTrack's ForwardedPacket has these). */
export interface ForwarderPacket {
  ssrc: number;
  /** Source layer (simulcast encoding index); 0 for a track with one encoding. */
  layer: number;
  /** After padding removal (PublishedTrack closes padding-only packets up per incoming stream). */
  sequenceNumber: number;
  timestamp: number;
  keyframe: boolean;
  /** When the packet arrived (ms, performance.now()): sets the timestamp advance across a rebase. */
  arrivalMs: number;
}

/**
 * Where a subscriber's outgoing numbering stood when its forwarder ended, so that the next
 * one on the same sender (a reused transceiver: same SSRC) continues it: the receiver sees
 * no jump and the SRTP rollover counter stays right.
 */
export interface ForwarderContinuation {
  sequenceNumber: number;
  timestamp: number;
  /** `sequenceNumber` unwrapped: the SRTP rollover counter is `Math.floor(index / 65536)`. */
  index: number;
  /** When the packet that carried them arrived (ms, performance.now()). */
  arrivalMs: number;
}

/** `push` verdicts. */
export const FORWARD = 0;
export const DROP = 1;
/** Dropped because video must start or switch at a keyframe that has not come: ask the publisher for one. */
export const DROP_WANT_KEYFRAME = 2;
export type Verdict = typeof FORWARD | typeof DROP | typeof DROP_WANT_KEYFRAME;

/**
 * One subscriber's view of one published track: for each incoming packet, forward or drop,
 * under which outgoing sequence number and timestamp, and whether a keyframe is needed.
 * No sockets, no werift: DownTrack executes the verdicts.
 *
 * The subscriber sees one continuous stream whatever the source does: video starts on a
 * keyframe; a new source SSRC, a switch to another layer, or a resume after an interruption
 * is rebased so that numbering goes on from the last packet sent (sequence +1, timestamp +
 * the time since, at least one frame); packets older than the start of the current source are dropped (their frame
 * never reached the subscriber); loss and reordering pass through as they came.
 *
 * Layers: packets carry a layer; the forwarder forwards its current layer and switches to
 * the target layer at that layer's next keyframe, forwarding the current one until then.
 * Audio has one layer and never waits.
 *
 * Nothing is allocated per packet: `push` returns a number and leaves the outgoing numbers
 * in `sequenceNumber`, `timestamp` and `index`.
 */
export class Forwarder {
  readonly kind: 'audio' | 'video';
  /** RTP clock rate of the track (Hz). */
  readonly clockRate: number;
  /** Outgoing sequence number, timestamp and unwrapped index of the packet last forwarded. */
  sequenceNumber = 0;
  timestamp = 0;
  index = 0;
  /** The layer being forwarded, -1 while none is (not started, interrupted). */
  private current = -1;
  private target = 0;
  private sourceSsrc = -1;
  /**
   * The source left at the last SSRC change on the same layer, and until when its late
   * packets are dropped: a reordered one must not switch the subscriber back (and again).
   */
  private previousSsrc = -1;
  private previousUntilMs = 0;
  private seqOffset = 0;
  private tsOffset = 0;
  /** Incoming sequence numbers of the current source, unwrapped, and where it started. */
  private readonly inIndex = new SeqUnwrapper();
  private startIndex = 0;
  /** Newest outgoing sequence number and timestamp: the next rebase continues from them. */
  private lastSeq: number;
  private lastTs: number;
  private lastArrivalMs: number;
  /** Outgoing sequence numbers, unwrapped (the SRTP index). */
  private readonly outIndex = new SeqUnwrapper();
  /** True once anything was forwarded under this numbering: a rebase then steps the timestamp. */
  private sentAny: boolean;

  constructor(kind: 'audio' | 'video', clockRate: number, from?: ForwarderContinuation) {
    this.kind = kind;
    this.clockRate = clockRate;
    if (from === undefined) {
      this.lastSeq = Math.floor(Math.random() * SEQ_MOD);
      this.lastTs = Math.floor(Math.random() * 0x100000000);
      this.lastArrivalMs = 0;
      this.sentAny = false;
    } else {
      this.lastSeq = from.sequenceNumber & 0xffff;
      this.lastTs = from.timestamp >>> 0;
      this.lastArrivalMs = from.arrivalMs;
      this.outIndex.reset(from.index);
      this.sentAny = true;
    }
  }

  get currentLayer(): number {
    return this.current;
  }

  get targetLayer(): number {
    return this.target;
  }

  /** Switch to `layer` at its next keyframe (video); the current layer goes on until then. */
  setTargetLayer(layer: number): void {
    this.target = layer;
  }

  /**
   * The subscriber missed packets on purpose (transport not ready, shed under overload):
   * video waits for a keyframe again and resumes rebased; audio just goes on.
   */
  interrupt(): void {
    if (this.kind === 'video') this.current = -1;
  }

  /** The verdict for one packet; on FORWARD, `sequenceNumber`, `timestamp` and `index` are its outgoing numbers. */
  push(p: ForwarderPacket): Verdict {
    const inSeq = p.sequenceNumber;
    if (p.layer !== this.current || p.ssrc !== this.sourceSsrc) {
      // Not the stream being forwarded: it may start here if it is the one wanted.
      if (p.layer !== this.target) return DROP;
      if (p.ssrc === this.previousSsrc && p.layer === this.current && p.arrivalMs < this.previousUntilMs) return DROP;
      if (this.kind === 'video' && !p.keyframe) return DROP_WANT_KEYFRAME;
      this.rebase(p);
    } else if (this.inIndex.unwrap(inSeq) < this.startIndex) {
      // Older than where this source started for the subscriber: it never got that frame.
      return DROP;
    }
    const outSeq = (inSeq + this.seqOffset) & 0xffff;
    const outTs = (p.timestamp + this.tsOffset) >>> 0;
    if (((outSeq - this.lastSeq + SEQ_MOD) & 0xffff) < 0x8000) {
      this.lastSeq = outSeq;
      this.lastTs = outTs;
      this.lastArrivalMs = p.arrivalMs;
    }
    this.sequenceNumber = outSeq;
    this.timestamp = outTs;
    this.index = this.outIndex.unwrap(outSeq);
    return FORWARD;
  }

  /** Where the numbering stands, for a successor on the same sender; undefined if nothing was ever sent under it. */
  continuation(): ForwarderContinuation | undefined {
    if (!this.sentAny) return undefined;
    return { sequenceNumber: this.lastSeq, timestamp: this.lastTs, index: this.outIndex.last, arrivalMs: this.lastArrivalMs };
  }

  /** Continue the subscriber's numbering from the last packet it got, whatever the source does. */
  private rebase(p: ForwarderPacket): void {
    const tsStep = this.sentAny ? Math.round((Math.max(REBASE_MIN_STEP_MS[this.kind], p.arrivalMs - this.lastArrivalMs) * this.clockRate) / 1000) : 0;
    this.seqOffset = (this.lastSeq + 1 - p.sequenceNumber + SEQ_MOD * 2) & 0xffff;
    this.tsOffset = (this.lastTs + tsStep - p.timestamp) >>> 0;
    this.inIndex.reset();
    this.startIndex = this.inIndex.unwrap(p.sequenceNumber);
    if (p.layer === this.current && p.ssrc !== this.sourceSsrc) {
      this.previousSsrc = this.sourceSsrc;
      this.previousUntilMs = p.arrivalMs + LATE_SOURCE_MS;
    }
    this.current = p.layer;
    this.sourceSsrc = p.ssrc;
    this.sentAny = true;
  }
}
