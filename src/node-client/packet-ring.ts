/**
 * Fixed-size payload buffers handed out round-robin: one allocation per source instead of
 * one per packet. A werift sender keeps the last 128 packets it sent (for NACKs) by
 * reference, so the ring must hold more slots than that.
 */
export class PacketRing {
  static readonly SLOTS = 256;
  private readonly slab: Buffer;
  private readonly slotBytes: number;
  private next = 0;

  constructor(slotBytes: number) {
    this.slotBytes = slotBytes;
    this.slab = Buffer.alloc(slotBytes * PacketRing.SLOTS);
  }

  /** The next slot, `length` (≤ slotBytes) bytes long; its old content is stale. */
  take(length: number): Buffer {
    const start = this.next * this.slotBytes;
    this.next = (this.next + 1) % PacketRing.SLOTS;
    return this.slab.subarray(start, start + length);
  }
}
