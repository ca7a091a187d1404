import { SeqUnwrapper } from '../common/seq-unwrapper.ts';

/** Breakpoints kept for packets that arrive late, after later padding was removed. */
const MAX_BREAKPOINTS = 128;

/**
 * Removes padding-only packets (bandwidth probes) from a publisher's sequence space, so
 * subscribers see no gap where they were: a gap would count as loss and draw NACKs no one
 * can answer. Returns the sequence number a media packet continues under, or undefined
 * for a packet to drop.
 */
export class PaddingRemover {
  private readonly unwrapper = new SeqUnwrapper();
  private highest = -1;
  private removed = 0;
  /** (first unwrapped sequence number, packets removed before it), oldest first. */
  private readonly breakpoints: { from: number; removed: number }[] = [];

  map(seq: number, paddingOnly: boolean): number | undefined {
    const ext = this.unwrapper.unwrap(seq);
    if (paddingOnly) {
      // Only in-order padding can be skipped cleanly; a late one just stays a gap.
      if (ext === this.highest + 1) {
        this.highest = ext;
        this.removed++;
        this.breakpoints.push({ from: ext + 1, removed: this.removed });
        if (this.breakpoints.length > MAX_BREAKPOINTS) this.breakpoints.shift();
      }
      return undefined;
    }
    let removed = this.removed;
    if (ext > this.highest) {
      this.highest = ext;
    } else {
      // A late media packet: removed as many as had been removed when it was sent.
      removed = 0;
      for (let i = this.breakpoints.length - 1; i >= 0; i--) {
        if (this.breakpoints[i]!.from <= ext) {
          removed = this.breakpoints[i]!.removed;
          break;
        }
      }
    }
    return (ext - removed) & 0xffff;
  }
}
