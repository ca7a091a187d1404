/** Reads u(n) / ue(v) from an H.264 NAL unit's RBSP (emulation prevention bytes removed first). */
export class BitReader {
  private readonly buf: Buffer;
  private pos = 0;

  constructor(nal: Buffer) {
    const out: number[] = [];
    let zeros = 0;
    for (const b of nal) {
      if (zeros >= 2 && b === 3) {
        zeros = 0;
        continue;
      }
      out.push(b);
      zeros = b === 0 ? zeros + 1 : 0;
    }
    this.buf = Buffer.from(out);
  }

  u(n: number): number {
    let v = 0;
    for (let i = 0; i < n; i++) {
      const byte = this.buf[this.pos >> 3];
      if (byte === undefined) throw new RangeError('read past end');
      v = v * 2 + ((byte >> (7 - (this.pos & 7))) & 1);
      this.pos++;
    }
    return v;
  }

  ue(): number {
    let zeros = 0;
    while (this.u(1) === 0) zeros++;
    return 2 ** zeros - 1 + this.u(zeros);
  }
}
