import { SeqUnwrapper } from '../common/seq-unwrapper.ts';

/** Where a packet's sequence number fell: at or past the highest so far, or below it. */
export type Arrival = 'ahead' | 'late' | 'duplicate';

/**
 * Duplicates are told from late fills over the last 1024 sequence numbers: far more than
 * a sender keeps to retransmit (the SFU holds 128 per subscriber track, src/sfu/down-track.ts).
 */
const WINDOW = 1024;

/**
 * What arrived of one RTP stream, counted by sequence number (RFC 3550 style): packets,
 * bytes, forward gaps, late fills and duplicates. The load tool runs this for every packet
 * it receives, so it allocates nothing and does a few array reads per packet.
 */
export class ReceiveStats {
  packets = 0;
  bytes = 0;
  /** Forward jumps of the sequence number by more than one. */
  gaps = 0;
  /** Sequence numbers those jumps passed over (late packets may fill some later). */
  skipped = 0;
  /** Packets below the highest sequence number that filled a gap (NACK retransmissions, reordering). */
  late = 0;
  /** Packets whose sequence number had already arrived (within the last 1024). */
  duplicates = 0;
  private readonly unwrapper = new SeqUnwrapper();
  /** Extended sequence number of the first packet. */
  private base = 0;
  /** The extended sequence number last seen in each slot (NaN: none; late packets before the first are negative). */
  private readonly seen = new Float64Array(WINDOW).fill(NaN);

  /** Extended (unwrapped) highest sequence number, -1 before the first packet. */
  get highestExtended(): number {
    return this.unwrapper.last;
  }

  /** The highest sequence number as on the wire (16 bits), undefined before the first packet. */
  get highestSeq(): number | undefined {
    return this.packets === 0 ? undefined : this.unwrapper.last & 0xffff;
  }

  /** Sequence numbers the stream covered so far, first to highest (RFC 3550 "expected"). */
  get expected(): number {
    return this.packets === 0 ? 0 : this.unwrapper.last - this.base + 1;
  }

  /** Distinct packets received. */
  get unique(): number {
    return this.packets - this.duplicates;
  }

  /** Counts one packet by its RTP sequence number and payload size. */
  record(seq: number, bytes: number): Arrival {
    const highest = this.unwrapper.last;
    const ext = this.unwrapper.unwrap(seq);
    const slot = ext & (WINDOW - 1);
    let arrival: Arrival = 'ahead';
    if (highest < 0) {
      this.base = ext;
    } else if (ext > highest) {
      if (ext > highest + 1) {
        this.gaps++;
        this.skipped += ext - highest - 1;
      }
    } else if (this.seen[slot] === ext) {
      this.duplicates++;
      arrival = 'duplicate';
    } else {
      this.late++;
      arrival = 'late';
    }
    this.seen[slot] = ext;
    this.packets++;
    this.bytes += bytes;
    return arrival;
  }
}
