/**
 * RTP sequence-number arithmetic: 16-bit numbers on the wire, unbounded counters inside.
 * Turns them into a monotonic counter, tolerating reordering.
 */
export class SeqUnwrapper {
  private highest = -1;

  /** The highest unwrapped value so far, -1 before the first. */
  get last(): number {
    return this.highest;
  }

  /** Starts over: the next value unwraps from `highest` (-1: from scratch, as a new unwrapper). */
  reset(highest = -1): void {
    this.highest = highest;
  }

  /** The unwrapped value of `seq`, relative to the highest seen (±32767). */
  unwrap(seq: number): number {
    if (this.highest < 0) {
      this.highest = seq & 0xffff;
      return this.highest;
    }
    const diff = ((seq - (this.highest & 0xffff) + 0x8000) & 0xffff) - 0x8000;
    const ext = this.highest + diff;
    if (ext > this.highest) this.highest = ext;
    return ext;
  }
}
