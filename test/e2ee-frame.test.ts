/** The SDK's frame encryption, run in Node's WebCrypto (the same code the browser worker runs). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { clearBytes, DecryptError, decryptFrame, deriveKey, encryptFrame } from '../client/e2ee/frame-crypto.ts';

const vp8Key = Uint8Array.from([0x50, 0x01, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01, ...Array.from({ length: 500 }, (_, i) => i & 0xff)]);

test('a frame round-trips, keeps its clear header, and hides the rest', async () => {
  const key = await deriveKey('correct horse', 'room-1');
  const clear = clearBytes('video/VP8', 'video-key');
  assert.equal(clear, 10);
  const sealed = await encryptFrame(vp8Key, clear, key, 3);
  assert.deepEqual(sealed.subarray(0, 10), vp8Key.subarray(0, 10), 'codec header stays readable');
  assert.notDeepEqual(sealed.subarray(10, 40), vp8Key.subarray(10, 40), 'the rest is ciphertext');
  assert.equal(sealed[sealed.length - 1], 3, 'key index in the trailer');
  assert.deepEqual(await decryptFrame(sealed, clear, new Map([[3, key]])), vp8Key);
});

test('a wrong passphrase, another room, a tampered header, or an unknown key index fail', async () => {
  const key = await deriveKey('correct horse', 'room-1');
  const sealed = await encryptFrame(vp8Key, 10, key, 0);
  const wrong = await deriveKey('battery staple', 'room-1');
  const otherRoom = await deriveKey('correct horse', 'room-2');
  for (const k of [wrong, otherRoom]) {
    await assert.rejects(decryptFrame(sealed, 10, new Map([[0, k]])), (e: unknown) => e instanceof DecryptError && e.reason === 'auth-failed');
  }
  const tampered = Uint8Array.from(sealed);
  tampered[0]! ^= 1;
  await assert.rejects(decryptFrame(tampered, 10, new Map([[0, key]])), (e: unknown) => e instanceof DecryptError && e.reason === 'auth-failed');
  await assert.rejects(decryptFrame(sealed, 10, new Map([[1, key]])), (e: unknown) => e instanceof DecryptError && e.reason === 'unknown-key');
  await assert.rejects(decryptFrame(vp8Key.subarray(0, 12), 10, new Map([[0, key]])), (e: unknown) => e instanceof DecryptError && e.reason === 'too-short');
});

test('keys rotate without a gap: frames under the old and the new index both decrypt', async () => {
  const k0 = await deriveKey('first', 'r');
  const k1 = await deriveKey('second', 'r');
  const keys = new Map([
    [0, k0],
    [1, k1],
  ]);
  const opus = Uint8Array.from([0x78, ...Array.from({ length: 80 }, (_, i) => (i * 7) & 0xff)]);
  const clear = clearBytes('audio/opus', 'audio');
  assert.deepEqual(await decryptFrame(await encryptFrame(opus, clear, k0, 0), clear, keys), opus);
  assert.deepEqual(await decryptFrame(await encryptFrame(opus, clear, k1, 1), clear, keys), opus);
});
