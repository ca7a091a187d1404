/** Writes an H.264 RBSP bit by bit (u(n), ue(v), se(v)); `finish()` adds trailing bits and emulation prevention. */
export class BitWriter {
  private readonly bits: number[] = [];

  u(n: number, v: number): void {
    for (let i = n - 1; i >= 0; i--) this.bits.push((v >> i) & 1);
  }

  ue(v: number): void {
    const x = v + 1;
    const len = Math.floor(Math.log2(x));
    this.u(len, 0);
    this.u(len + 1, x);
  }

  se(v: number): void {
    this.ue(v <= 0 ? -2 * v : 2 * v - 1);
  }

  /** rbsp_trailing_bits, then emulation prevention. */
  finish(): Buffer {
    this.bits.push(1);
    while (this.bits.length % 8 !== 0) this.bits.push(0);
    const raw: number[] = [];
    for (let i = 0; i < this.bits.length; i += 8) {
      let b = 0;
      for (let j = 0; j < 8; j++) b = (b << 1) | this.bits[i + j]!;
      raw.push(b);
    }
    const out: number[] = [];
    let zeros = 0;
    for (const b of raw) {
      if (zeros >= 2 && b <= 3) {
        out.push(3);
        zeros = 0;
      }
      out.push(b);
      zeros = b === 0 ? zeros + 1 : 0;
    }
    return Buffer.from(out);
  }
}
