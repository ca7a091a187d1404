/**
 * The SFU's own SRTP for forwarded packets (src/sfu/srtp-encryptor.ts) and our patch to
 * werift's SRTP ciphers (patches/werift+0.25.2.patch). What matters to a user: every
 * packet the SFU sends decrypts at the subscriber, across the 16-bit sequence wrap, for
 * both protection profiles werift negotiates; the bytes follow RFC 3711 and RFC 7714.
 */
import assert from 'node:assert/strict';
import { KeyObject, randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { RtpHeader, RtpPacket, SrtpSession } from 'werift';
import { SRTP_AEAD_AES_128_GCM, SRTP_AES128_CM_HMAC_SHA1_80, SrtpEncryptor } from '../src/sfu/srtp-encryptor.ts';

interface WeriftContext {
  profile: number;
  srtpSessionKey: Buffer;
  srtpSessionSalt: Buffer;
  srtpSessionAuthTag: Buffer;
  cipher: Record<string, unknown>;
}

/** Two ends of one SRTP session, as werift sets them up after DTLS: our sender, werift's receiver. */
function sessionPair(profile: number): { ours: SrtpEncryptor; sender: SrtpSession; receiver: SrtpSession } {
  const keyLength = 16;
  const saltLength = profile === SRTP_AEAD_AES_128_GCM ? 12 : 14;
  const a = { key: randomBytes(keyLength), salt: randomBytes(saltLength) };
  const b = { key: randomBytes(keyLength), salt: randomBytes(saltLength) };
  const sender = new SrtpSession({
    profile: profile as never,
    keys: { localMasterKey: a.key, localMasterSalt: a.salt, remoteMasterKey: b.key, remoteMasterSalt: b.salt },
  });
  const receiver = new SrtpSession({
    profile: profile as never,
    keys: { localMasterKey: b.key, localMasterSalt: b.salt, remoteMasterKey: a.key, remoteMasterSalt: a.salt },
  });
  const local = sender.localContext as unknown as WeriftContext;
  const ours = new SrtpEncryptor({ profile, key: local.srtpSessionKey, salt: local.srtpSessionSalt, authKey: local.srtpSessionAuthTag });
  return { ours, sender, receiver };
}

/** An RTP header as the forwarding path writes it: one-byte extensions (mid "1", abs-send-time). */
function header(seq: number, ts: number, ssrc: number, marker: boolean): Buffer {
  const h = Buffer.alloc(24);
  h[0] = 0x90;
  h[1] = (marker ? 0x80 : 0) | 96;
  h.writeUInt16BE(seq, 2);
  h.writeUInt32BE(ts, 4);
  h.writeUInt32BE(ssrc, 8);
  h.writeUInt16BE(0xbede, 12);
  h.writeUInt16BE(2, 14);
  h[16] = (1 << 4) | 0;
  h[17] = 0x31;
  h[18] = (2 << 4) | 2;
  h.writeUIntBE(seq * 7, 19, 3);
  return h;
}

for (const [name, profile] of [
  ['AES_CM_128_HMAC_SHA1_80', SRTP_AES128_CM_HMAC_SHA1_80],
  ['AEAD_AES_128_GCM', SRTP_AEAD_AES_128_GCM],
] as const) {
  describe(`SRTP ${name}`, () => {
    test('a werift receiver decrypts every packet we protect, across the sequence-number wrap', () => {
      const { ours, receiver } = sessionPair(profile);
      const ssrc = 0x1234abcd;
      let roc = 0;
      for (let i = 0; i < 400; i++) {
        const seq = (65_400 + i) & 0xffff;
        if (seq === 0) roc++;
        const payload = randomBytes(1 + ((i * 37) % 1200));
        const h = header(seq, 90_000 + i * 3000, ssrc, i % 5 === 0);
        const wire = Buffer.concat(ours.protect(h, payload, roc));
        assert.equal(wire.length, h.length + payload.length + ours.tagLength);
        const rtp = RtpPacket.deSerialize(receiver.decrypt(wire));
        assert.equal(rtp.header.sequenceNumber, seq);
        assert.equal(rtp.header.ssrc, ssrc);
        assert.equal(rtp.header.marker, i % 5 === 0);
        assert.deepEqual(rtp.payload, payload, `payload of packet ${i} (seq ${seq}, roc ${roc})`);
      }
      assert.equal(roc, 1);
    });

    test('our packets are byte-identical to werift\'s own SRTP for the same RTP packet', () => {
      const { ours, sender } = sessionPair(profile);
      for (let i = 0; i < 50; i++) {
        const rtpHeader = new RtpHeader({ payloadType: 111, sequenceNumber: 1000 + i, timestamp: 960 * i, ssrc: 42, marker: i === 0 });
        const payload = randomBytes(80);
        const theirs = sender.encrypt(payload, rtpHeader);
        const h = rtpHeader.serialize(rtpHeader.serializeSize);
        assert.deepEqual(Buffer.concat(ours.protect(h, payload, 0)), theirs);
      }
    });

    test('a tampered packet is rejected by the receiver', () => {
      const { ours, receiver } = sessionPair(profile);
      const wire = Buffer.concat(ours.protect(header(7, 0, 1, false), randomBytes(100), 0));
      wire[30]! ^= 1;
      assert.throws(() => receiver.decrypt(wire));
    });

    test('werift (patched) keeps its session keys as KeyObjects, not raw Buffers per packet', () => {
      const { sender } = sessionPair(profile);
      const cipher = (sender.localContext as unknown as WeriftContext).cipher;
      assert.ok(cipher.srtpKeyObject instanceof KeyObject, 'SRTP key');
      assert.ok(cipher.srtcpKeyObject instanceof KeyObject, 'SRTCP key');
      if (profile === SRTP_AES128_CM_HMAC_SHA1_80) assert.ok(cipher.srtpAuthKeyObject instanceof KeyObject, 'SRTP auth key');
    });
  });
}

test('AES-CM keystream matches RFC 3711 Appendix B.2', () => {
  // Session key and salt of B.2; SSRC, ROC and SEQ zero, so the IV is salt || 0x0000.
  const ours = new SrtpEncryptor({
    profile: SRTP_AES128_CM_HMAC_SHA1_80,
    key: Buffer.from('2B7E151628AED2A6ABF7158809CF4F3C', 'hex'),
    salt: Buffer.from('F0F1F2F3F4F5F6F7F8F9FAFBFCFD', 'hex'),
    authKey: Buffer.alloc(20),
  });
  const h = Buffer.alloc(12);
  h[0] = 0x80;
  const [, keystream] = ours.protect(h, Buffer.alloc(48), 0);
  assert.equal(
    keystream.toString('hex').toUpperCase(),
    'E03EAD0935C95E80E166B16DD92B4EB4' + 'D23513162B02D0F72A43A2FE4A5F97AB' + '41E95B3BB0A2E8DD477901E4FCA894C0',
  );
});

test('AES-GCM matches RFC 7714 §16.1.1 (the example RTP packet)', () => {
  const ours = new SrtpEncryptor({
    profile: SRTP_AEAD_AES_128_GCM,
    key: Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex'),
    salt: Buffer.from('517569642070726f2071756f', 'hex'),
    authKey: Buffer.alloc(0),
  });
  const h = Buffer.from('8040f17b8041f8d35501a0b2', 'hex');
  const payload = Buffer.from('47616c6c696120657374206f6d6e69732064697669736120696e207061727465732074726573', 'hex');
  const wire = Buffer.concat(ours.protect(h, payload, 0));
  assert.equal(
    wire.toString('hex'),
    '8040f17b8041f8d35501a0b2' +
      'f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f42a5f47a51c7d19b36de3adf8833' +
      '899d7f27beb16a9152cf765ee4390cce',
  );
});
