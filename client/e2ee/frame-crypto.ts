/**
 * End-to-end encryption of encoded media frames, shared by the SDK's transform worker
 * and the tests. Pure WebCrypto: runs the same in a browser worker and in Node.
 *
 * Frame format (all of it is the encoded frame the browser packetizes):
 *
 *   | clear header (N bytes) | AES-GCM ciphertext of the rest + 16-byte tag | IV (12) | 12 | key index |
 *
 * The clear header keeps the codec's leading bytes readable so the SFU can still spot
 * keyframes and the packetizer still works: VP8 keyframes 10 bytes (frame tag, start
 * code, size), VP8 delta frames 3 (frame tag), Opus 1 (TOC byte). The clear header is
 * authenticated as AES-GCM additional data, so it cannot be altered either.
 */

/** WebCrypto's key type, spelled so it resolves with both the DOM and the Node typings. */
export type FrameKey = Awaited<ReturnType<typeof crypto.subtle.importKey>>;

export const IV_LENGTH = 12;
const TRAILER_LENGTH = IV_LENGTH + 2;
const PBKDF2_ITERATIONS = 100_000;
/** Keys are held per index so a sender can switch to a new key while receivers still decrypt the old one. */
export const MAX_KEYS = 16;

export type FrameKind = 'audio' | 'video-key' | 'video-delta' | 'video';

/** Bytes at the start of a frame that stay in the clear. */
export function clearBytes(codec: string, kind: FrameKind): number {
  const c = codec.toLowerCase();
  if (c.includes('opus')) return 1;
  if (c.includes('vp8')) return kind === 'video-key' ? 10 : 3;
  return 0;
}

/**
 * The room key from a passphrase: PBKDF2-SHA-256 over the passphrase, salted with the
 * room name so one passphrase in two rooms gives two keys. Never leaves the client.
 */
export async function deriveKey(passphrase: string, roomName: string): Promise<FrameKey> {
  const enc = new TextEncoder();
  const material = await crypto.subtle.importKey('raw', enc.encode(passphrase), 'PBKDF2', false, ['deriveKey']);
  return crypto.subtle.deriveKey(
    { name: 'PBKDF2', hash: 'SHA-256', salt: enc.encode(`secureconnect-e2ee/v1/${roomName}`), iterations: PBKDF2_ITERATIONS },
    material,
    { name: 'AES-GCM', length: 256 },
    false,
    ['encrypt', 'decrypt'],
  );
}

/** A raw 128/192/256-bit key supplied by the application instead of a passphrase. */
export function importRawKey(raw: Uint8Array<ArrayBuffer>): Promise<FrameKey> {
  return crypto.subtle.importKey('raw', raw, { name: 'AES-GCM' }, false, ['encrypt', 'decrypt']);
}

export class DecryptError extends Error {
  override name = 'DecryptError';
  readonly reason: 'too-short' | 'unknown-key' | 'auth-failed';
  readonly keyIndex: number | undefined;
  constructor(reason: DecryptError['reason'], keyIndex?: number) {
    super(`frame decryption failed: ${reason}${keyIndex === undefined ? '' : ` (key ${keyIndex})`}`);
    this.reason = reason;
    this.keyIndex = keyIndex;
  }
}

export async function encryptFrame(frame: Uint8Array<ArrayBuffer>, clear: number, key: FrameKey, keyIndex: number): Promise<Uint8Array<ArrayBuffer>> {
  const header = frame.subarray(0, Math.min(clear, frame.length));
  const iv = crypto.getRandomValues(new Uint8Array(IV_LENGTH));
  const sealed = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv, additionalData: header }, key, frame.subarray(header.length)));
  const out = new Uint8Array(header.length + sealed.length + TRAILER_LENGTH);
  out.set(header, 0);
  out.set(sealed, header.length);
  out.set(iv, header.length + sealed.length);
  out[out.length - 2] = IV_LENGTH;
  out[out.length - 1] = keyIndex;
  return out;
}

export async function decryptFrame(frame: Uint8Array<ArrayBuffer>, clear: number, keys: ReadonlyMap<number, FrameKey>): Promise<Uint8Array<ArrayBuffer>> {
  if (frame.length < clear + 16 + TRAILER_LENGTH || frame[frame.length - 2] !== IV_LENGTH) throw new DecryptError('too-short');
  const keyIndex = frame[frame.length - 1]!;
  const key = keys.get(keyIndex);
  if (key === undefined) throw new DecryptError('unknown-key', keyIndex);
  const header = frame.subarray(0, clear);
  const iv = frame.subarray(frame.length - TRAILER_LENGTH, frame.length - 2);
  let plain: ArrayBuffer;
  try {
    plain = await crypto.subtle.decrypt({ name: 'AES-GCM', iv, additionalData: header }, key, frame.subarray(clear, frame.length - TRAILER_LENGTH));
  } catch {
    throw new DecryptError('auth-failed', keyIndex);
  }
  const out = new Uint8Array(clear + plain.byteLength);
  out.set(header, 0);
  out.set(new Uint8Array(plain), clear);
  return out;
}
