import { createCipheriv, createHmac, createSecretKey, type KeyObject } from 'node:crypto';

/** werift's protection profile numbers (RFC 5764 / RFC 7714 code points). */
export const SRTP_AES128_CM_HMAC_SHA1_80 = 1;
export const SRTP_AEAD_AES_128_GCM = 7;

/** The session keys of one direction of an SRTP session, as werift derived them after DTLS. */
export interface SrtpSessionKeys {
  profile: number;
  /** Session encryption key (16 bytes). */
  key: Buffer;
  /** Session salt (14 bytes for AES-CM, 12 used for AES-GCM). */
  salt: Buffer;
  /** Session authentication key (20 bytes), AES-CM/HMAC-SHA1 only. */
  authKey: Buffer;
}

/**
 * SRTP protection of RTP packets (RFC 3711 AES_CM_128_HMAC_SHA1_80, RFC 7714
 * AEAD_AES_128_GCM) for the forwarding path. werift builds a cipher from a raw Buffer key
 * for every packet, which Node 24 makes cost ~10 µs per call; here the keys are KeyObjects
 * made once, the IV buffer is reused, and nothing is concatenated: `protect` returns the
 * pieces of the datagram for a gathered UDP send.
 */
export class SrtpEncryptor {
  readonly profile: number;
  /** Bytes the protection adds after the payload. */
  readonly tagLength: number;
  private readonly key: KeyObject;
  private readonly authKey: KeyObject | undefined;
  private readonly salt: Buffer;
  /** Scratch for the per-packet IV: createCipheriv copies it, so one buffer serves every packet. */
  private readonly iv: Buffer;
  private readonly roc = Buffer.alloc(4);

  constructor(keys: SrtpSessionKeys) {
    if (keys.profile !== SRTP_AES128_CM_HMAC_SHA1_80 && keys.profile !== SRTP_AEAD_AES_128_GCM) {
      throw new Error(`unsupported SRTP protection profile ${keys.profile}`);
    }
    this.profile = keys.profile;
    this.key = createSecretKey(keys.key);
    this.salt = Buffer.from(keys.salt);
    if (keys.profile === SRTP_AEAD_AES_128_GCM) {
      this.tagLength = 16;
      this.iv = Buffer.alloc(12);
      this.authKey = undefined;
    } else {
      this.tagLength = 10;
      this.iv = Buffer.alloc(16);
      this.authKey = createSecretKey(keys.authKey);
    }
  }

  /**
   * Protects one RTP packet whose serialized header is `header` (SSRC at bytes 8–11,
   * sequence number at 2–3). `roc` is the rollover counter of that sequence number.
   * Returns [header, encrypted payload, tag]: the SRTP packet is their concatenation.
   */
  protect(header: Buffer, payload: Buffer, roc: number): [Buffer, Buffer, Buffer] {
    const iv = this.iv;
    const salt = this.salt;
    if (this.authKey === undefined) {
      // RFC 7714 §8.1: 00 00 || SSRC || ROC || SEQ, XOR the 12-byte salt. The header is the AAD.
      iv[0] = salt[0]!;
      iv[1] = salt[1]!;
      for (let i = 0; i < 4; i++) iv[2 + i] = header[8 + i]! ^ salt[2 + i]!;
      iv[6] = ((roc >>> 24) & 0xff) ^ salt[6]!;
      iv[7] = ((roc >>> 16) & 0xff) ^ salt[7]!;
      iv[8] = ((roc >>> 8) & 0xff) ^ salt[8]!;
      iv[9] = (roc & 0xff) ^ salt[9]!;
      iv[10] = header[2]! ^ salt[10]!;
      iv[11] = header[3]! ^ salt[11]!;
      const cipher = createCipheriv('aes-128-gcm', this.key, iv);
      cipher.setAAD(header);
      const enc = cipher.update(payload);
      cipher.final();
      return [header, enc, cipher.getAuthTag()];
    }
    // RFC 3711 §4.1.1: (salt << 16) XOR (SSRC << 64) XOR (index << 16), index = ROC || SEQ.
    for (let i = 0; i < 4; i++) iv[i] = salt[i]!;
    for (let i = 0; i < 4; i++) iv[4 + i] = header[8 + i]! ^ salt[4 + i]!;
    iv[8] = ((roc >>> 24) & 0xff) ^ salt[8]!;
    iv[9] = ((roc >>> 16) & 0xff) ^ salt[9]!;
    iv[10] = ((roc >>> 8) & 0xff) ^ salt[10]!;
    iv[11] = (roc & 0xff) ^ salt[11]!;
    iv[12] = header[2]! ^ salt[12]!;
    iv[13] = header[3]! ^ salt[13]!;
    iv[14] = 0;
    iv[15] = 0;
    const enc = createCipheriv('aes-128-ctr', this.key, iv).update(payload);
    // §4.2: HMAC-SHA1 over the authenticated portion (header || encrypted payload) || ROC, 80 bits.
    this.roc.writeUInt32BE(roc >>> 0, 0);
    const tag = createHmac('sha1', this.authKey).update(header).update(enc).update(this.roc).digest().subarray(0, 10);
    return [header, enc, tag];
  }
}
