/**
 * An authenticated peer that sends junk through its own SRTP/SRTCP session (issue 8,
 * point 9): whatever it sends passes SRTP authentication, so it reaches werift's RTP and
 * RTCP parsers and the SFU's receive and forward path. Packets are built from the fields
 * that drive loops and state there: sequence-number jumps and wraps, SSRCs, CSRC counts,
 * header-extension blocks, padding, RTCP report counts and lengths, compound packets,
 * NACK bitmasks, transport-cc chunks, SDES chunks.
 */
import { randomBytes, randomInt } from 'node:crypto';
import type { RTCDtlsTransport } from 'werift';
import { RtpSendPath } from '../../src/sfu/rtp-send-path.ts';

/** RFC 3711 §3.3.1 as werift's receiver guesses it, so the rollover counter we use is the one it will try. */
class RolloverMirror {
  private readonly state = new Map<number, { last: number; roc: number; seen: boolean }>();
  roc(ssrc: number, seq: number): number {
    let s = this.state.get(ssrc);
    if (s === undefined) {
      s = { last: 0, roc: 0, seen: false };
      this.state.set(ssrc, s);
    }
    if (!s.seen) s.seen = true;
    else if (seq === 0) {
      if (s.last > 100) s.roc++;
    } else if (s.last < 100 && seq > 65535 - 100) {
      if (s.roc > 0) s.roc--;
    } else if (seq < 100 && s.last > 65535 - 100) s.roc++;
    s.last = seq;
    return s.roc;
  }
}

export interface HostileTarget {
  /** The peer's own DTLS transport (publisher or subscriber connection). */
  dtls: RTCDtlsTransport;
  /** SSRC and payload type the server knows for this peer's track (RTP). */
  ssrc?: number;
  payloadType?: number;
  /** SSRCs of the server's streams on this connection (RTCP feedback names them). */
  mediaSsrcs?: number[];
}

/** One RTCP packet: header with `count` (or FMT) and the length of `body`, padded to 32 bits. */
export function rtcp(type: number, count: number, body: Buffer): Buffer {
  const padded = Buffer.concat([body, Buffer.alloc((4 - (body.length % 4)) % 4)]);
  const h = Buffer.alloc(4);
  h[0] = 0x80 | (count & 0x1f);
  h[1] = type;
  h.writeUInt16BE(padded.length / 4, 2);
  return Buffer.concat([h, padded]);
}

/** 32-bit big-endian words. */
export function u32(...v: number[]): Buffer {
  const b = Buffer.alloc(v.length * 4);
  v.forEach((x, i) => b.writeUInt32BE(x >>> 0, i * 4));
  return b;
}

const pick = <T>(a: readonly T[]): T => a[randomInt(0, a.length)]!;

/** One hostile RTCP datagram (plaintext; the caller protects it). */
export function hostileRtcp(mediaSsrcs: number[]): Buffer {
  const media = () => (mediaSsrcs.length > 0 && randomInt(0, 4) > 0 ? pick(mediaSsrcs) : randomInt(0, 2 ** 32));
  const parts: Buffer[] = [];
  let size = 0;
  const budget = randomInt(8, 1_200);
  while (size < budget) {
    let p: Buffer;
    switch (randomInt(0, 12)) {
      case 0: // NACK naming everything near a random packet, many times
        p = rtcp(205, 1, Buffer.concat([u32(randomInt(0, 2 ** 32), media()), ...Array.from({ length: randomInt(1, 60) }, () => u32((randomInt(0, 65536) << 16) | 0xffff))]));
        break;
      case 1: // NACK with no FCI whose SSRC words read as FCI to a parser that overruns
        p = rtcp(205, 1, u32((randomInt(0, 65536) << 16) | 0xffff, media()));
        break;
      case 2: {
        // transport-cc with the largest counts
        const chunks = Buffer.alloc(2 * randomInt(1, 300));
        for (let i = 0; i < chunks.length; i += 2) chunks.writeUInt16BE(randomInt(0, 2) ? (randomInt(0, 4) << 13) | 8191 : randomInt(0, 65536), i);
        p = rtcp(205, 15, Buffer.concat([u32(1, media()), Buffer.from([randomInt(0, 256), randomInt(0, 256), 0xff, 0xff, 0, 0, 0, randomInt(0, 256)]), chunks]));
        break;
      }
      case 3: // SR/RR whose report count says 31
        p = rtcp(pick([200, 201]), 31, randomBytes(randomInt(0, 200)));
        break;
      case 4: // SDES with many chunks and items of every length
        p = rtcp(202, 31, Buffer.concat(Array.from({ length: randomInt(1, 40) }, () => Buffer.concat([u32(randomInt(0, 2 ** 32)), Buffer.from([1, 255]), randomBytes(randomInt(0, 20))]))));
        break;
      case 5: // PLI / FIR
        p = rtcp(206, pick([1, 4]), u32(1, media(), media(), randomInt(0, 2 ** 32)));
        break;
      case 6: // REMB with 255 SSRCs
        p = rtcp(206, 15, Buffer.concat([u32(1, 0), Buffer.from('REMB'), Buffer.from([255, 0xff, 0xff, 0xff]), randomBytes(255 * 4)]));
        break;
      case 7: // a length that runs past the datagram
        p = rtcp(pick([200, 201, 205, 206]), randomInt(0, 32), randomBytes(8));
        p.writeUInt16BE(randomInt(3, 65536), 2);
        break;
      case 8: // zero-length packets
        p = rtcp(pick([200, 201, 202, 203, 204, 205, 206, 207]), randomInt(0, 32), Buffer.alloc(0));
        break;
      case 9: // padding flag with a padding size larger than the packet
        p = rtcp(pick([200, 205, 206]), 1, Buffer.concat([u32(1, media()), randomBytes(8)]));
        p[0]! |= 0x20;
        p[p.length - 1] = 255;
        break;
      default: // random bytes after a header of any type
        p = rtcp(randomInt(192, 224), randomInt(0, 32), randomBytes(randomInt(0, 400)));
    }
    parts.push(p);
    size += p.length;
  }
  return Buffer.concat(parts);
}

/** One hostile RTP packet: [header, payload]. The header's length is what its fields say, so SRTP's split matches. */
export function hostileRtp(ssrc: number, payloadType: number, state: { seq: number }): [Buffer, Buffer] {
  const cc = randomInt(0, 4) === 0 ? randomInt(0, 16) : 0;
  const ext = randomInt(0, 3) === 0;
  const extWords = ext ? randomInt(0, 64) : 0;
  const header = Buffer.alloc(12 + cc * 4 + (ext ? 4 + extWords * 4 : 0));
  switch (randomInt(0, 5)) {
    case 0: // wrap and jump: 1, 65535, 0, 1, …
      state.seq = pick([0, 1, 65535, 32768, (state.seq + 30_000) & 0xffff]);
      break;
    case 1:
      state.seq = randomInt(0, 65536);
      break;
    default:
      state.seq = (state.seq + 1) & 0xffff;
  }
  header[0] = 0x80 | (randomInt(0, 4) === 0 ? 0x20 : 0) | (ext ? 0x10 : 0) | cc;
  header[1] = (randomInt(0, 2) ? 0x80 : 0) | (randomInt(0, 8) ? payloadType : randomInt(0, 128));
  header.writeUInt16BE(state.seq, 2);
  header.writeUInt32BE(randomInt(0, 2 ** 32), 4);
  header.writeUInt32BE(randomInt(0, 8) ? ssrc : randomInt(0, 2 ** 32), 8);
  randomBytes(cc * 4).copy(header, 12);
  if (ext) {
    const at = 12 + cc * 4;
    header.writeUInt16BE(pick([0xbede, 0x1000, randomInt(0, 65536)]), at);
    header.writeUInt16BE(extWords, at + 2);
    const body = randomInt(0, 2) ? Buffer.alloc(extWords * 4, 0x10) : randomBytes(extWords * 4); // 0x10: many one-byte elements
    body.copy(header, at + 4);
  }
  const payload = randomBytes(randomInt(0, 1_100));
  if (payload.length > 0 && randomInt(0, 3) === 0) payload[0] = pick([0x10, 0x90, 0x7c, 0x78, 0x65, 0x67, 0x18]); // VP8 start / H.264 FU-A, STAP-A, IDR, SPS
  return [header, payload];
}

/** Sends hostile RTP on `target.dtls` (through our own SRTP and UDP send) and hostile RTCP (through werift's SRTCP). */
export class HostilePeer {
  private readonly rollover = new RolloverMirror();
  private readonly seqState = { seq: 1 };
  rtpSent = 0;
  rtcpSent = 0;

  private readonly target: HostileTarget;

  constructor(target: HostileTarget) {
    this.target = target;
  }

  sendRtp(): boolean {
    const { ssrc, payloadType } = this.target;
    if (ssrc === undefined || payloadType === undefined) return false;
    const path = RtpSendPath.for(this.target.dtls);
    const srtp = path.srtp();
    if (srtp === undefined) return false;
    const [header, payload] = hostileRtp(ssrc, payloadType, this.seqState);
    const roc = this.rollover.roc(header.readUInt32BE(8), header.readUInt16BE(2));
    const sent = path.send(srtp.protect(header, payload, roc), header.length + payload.length + srtp.tagLength);
    if (sent) this.rtpSent++;
    return sent;
  }

  sendRtcp(): void {
    const datagram = hostileRtcp(this.target.mediaSsrcs ?? []);
    this.target.dtls.sendRtcp([{ serialize: () => datagram } as never]).catch(() => {});
    this.rtcpSent++;
  }
}
