/**
 * The one synthetic-media generator (src/node-client/synthetic-media.ts) that the tests and
 * the load tool publish with, and the payload checks that read it back.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { RtpPacket } from 'werift';
import { parseSps } from '../../src/node-client/h264-parameter-sets.ts';
import { isKeyframe, parseH264, parseVp8, sendTimeOf, verifyPayload } from '../../src/node-client/payload-format.ts';
import { MARKER_LENGTH, wallClockMs } from '../../src/node-client/payload-marker.ts';
import {
  OPUS_MAX_PACKET_BYTES,
  OPUS_MIN_PACKET_BYTES,
  OPUS_TIMESTAMP_STEP,
  SyntheticSource,
  type SyntheticCodec,
} from '../../src/node-client/synthetic-media.ts';

function frames(src: SyntheticSource, n: number): RtpPacket[][] {
  return Array.from({ length: n }, () => src.nextFrame());
}

function checkSequence(codec: SyntheticCodec, all: RtpPacket[][], tsStep: number): void {
  const flat = all.flat();
  for (let i = 1; i < flat.length; i++) {
    assert.equal(flat[i]!.header.sequenceNumber, (flat[i - 1]!.header.sequenceNumber + 1) & 0xffff, `${codec} seq at ${i}`);
  }
  for (let f = 0; f < all.length; f++) {
    const frame = all[f]!;
    assert.ok(frame.length >= 1);
    const ts = frame[0]!.header.timestamp;
    frame.forEach((p, i) => {
      assert.equal(p.header.timestamp, ts, 'one timestamp per frame');
      assert.equal(p.header.marker, i === frame.length - 1, 'marker bit on the last packet only');
    });
    if (f > 0) assert.equal(ts, (all[f - 1]![0]!.header.timestamp + tsStep) % 0x100000000, `${codec} timestamp step`);
  }
}

function checkPayloads(codec: SyntheticCodec, packets: RtpPacket[], sourceId: number): void {
  const seen = new Set<number>();
  for (const p of packets) {
    assert.ok(p.payload.length <= 1200, 'fits an MTU');
    const v = verifyPayload(codec, p.payload);
    assert.deepEqual({ ok: v.ok, sourceId: v.sourceId, reason: v.reason }, { ok: true, sourceId, reason: undefined });
    assert.ok(!seen.has(v.index!), 'unique marker index');
    seen.add(v.index!);
    // survives a round trip through the RTP serializer
    const copy = p.clone();
    assert.equal(verifyPayload(codec, Buffer.from(copy.serialize()).subarray(12)).ok, true);
  }
}

describe('synthetic media', () => {
  it('VP8: descriptor, keyframe header 640x480, periodic keyframes, verifiable payloads', () => {
    const src = new SyntheticSource({ codec: 'vp8', sourceId: 7, fps: 30, bitrateKbps: 800, keyframeIntervalFrames: 10 });
    const all = frames(src, 25);
    checkSequence('vp8', all, 3000);
    checkPayloads('vp8', all.flat(), 7);
    assert.ok(all.some((f) => f.length > 1), 'some frames span several packets');
    const keyframeIdx = all.map((f, i) => (isKeyframe('vp8', f[0]!.payload) ? i : -1)).filter((i) => i >= 0);
    assert.deepEqual(keyframeIdx, [0, 10, 20]);
    assert.equal(src.keyframesSent, 3);
    for (const f of all) {
      const first = parseVp8(f[0]!.payload)!;
      assert.equal(first.startOfFrame, true);
      assert.equal(first.descriptorLength, 4);
      assert.ok(first.pictureId !== undefined && first.pictureId < 0x8000);
      for (const p of f.slice(1)) {
        const info = parseVp8(p.payload)!;
        assert.equal(info.startOfPartition, false, 'S bit only on the first packet');
        assert.equal(info.pictureId, first.pictureId);
        assert.equal(isKeyframe('video/VP8', p.payload), false);
      }
    }
    const key = all[0]![0]!.payload;
    const info = parseVp8(key)!;
    assert.equal(info.keyframe, true);
    assert.deepEqual([...key.subarray(7, 10)], [0x9d, 0x01, 0x2a], 'start code after descriptor + 3-byte tag');
    assert.equal(info.width, 640);
    assert.equal(info.height, 480);
    assert.equal(parseVp8(all[1]![0]!.payload)!.keyframe, false);
    assert.equal((parseVp8(all[1]![0]!.payload)!.pictureId! - info.pictureId! + 0x8000) & 0x7fff, 1, 'PictureID increments per frame');
  });

  it('VP8: forceKeyframe makes the next frame a keyframe', () => {
    const src = new SyntheticSource({ codec: 'vp8', sourceId: 1, keyframeIntervalFrames: 0 });
    const before = frames(src, 5);
    assert.deepEqual(before.map((f) => isKeyframe('vp8', f[0]!.payload)), [true, false, false, false, false]);
    src.forceKeyframe();
    assert.equal(src.forcedKeyframes, 1);
    const after = frames(src, 2);
    assert.deepEqual(after.map((f) => isKeyframe('vp8', f[0]!.payload)), [true, false]);
  });

  it('H264: STAP-A with SPS/PPS, FU-A IDR, delta frames, verifiable payloads', () => {
    const src = new SyntheticSource({ codec: 'h264', sourceId: 0xdeadbeef, fps: 25, bitrateKbps: 300, keyframeIntervalFrames: 8 });
    const all = frames(src, 17);
    checkSequence('h264', all, 3600);
    checkPayloads('h264', all.flat(), 0xdeadbeef);
    for (const [i, f] of all.entries()) {
      const keyframe = i % 8 === 0;
      const first = parseH264(f[0]!.payload)!;
      if (keyframe) {
        assert.equal(first.packetization, 'stap-a');
        assert.deepEqual(first.nalTypes, [7, 8, 6], 'SPS, PPS, SEI');
        assert.equal(isKeyframe('h264', f[0]!.payload), true);
        const sps = parseSps(first.nalUnits![0]!);
        assert.deepEqual(sps, { profileIdc: 0x42, constraints: 0xe0, levelIdc: 0x1f, width: 640, height: 480 });
        const fus = f.slice(1).map((p) => parseH264(p.payload)!);
        assert.ok(fus.length >= 2);
        fus.forEach((fu, j) => {
          assert.equal(fu.packetization, 'fu-a');
          assert.deepEqual(fu.nalTypes, [5]);
          assert.equal(fu.start, j === 0);
          assert.equal(fu.end, j === fus.length - 1);
        });
        assert.equal(f[0]!.payload[0], 0x78);
        assert.equal(f[1]!.payload[0], 0x7c, 'FU indicator keeps NRI 3');
      } else {
        assert.equal(isKeyframe('h264', f[0]!.payload), false);
        for (const p of f) assert.deepEqual(parseH264(p.payload)!.nalTypes, [1]);
      }
      for (const p of f) {
        for (let k = 2; k < p.payload.length; k++) {
          assert.ok(!(p.payload[k - 2] === 0 && p.payload[k - 1] === 0 && p.payload[k]! <= 3), 'no start-code emulation');
        }
      }
    }
    // small delta frames go as single NAL units, large ones as FU-A
    const small = new SyntheticSource({ codec: 'h264', sourceId: 2, bitrateKbps: 100, keyframeIntervalFrames: 0 });
    const sf = frames(small, 3);
    assert.equal(parseH264(sf[1]![0]!.payload)!.packetization, 'single');
    const big = new SyntheticSource({ codec: 'h264', sourceId: 3, bitrateKbps: 2000, keyframeIntervalFrames: 0 });
    const bf = frames(big, 3);
    assert.equal(parseH264(bf[1]![0]!.payload)!.packetization, 'fu-a');
    checkPayloads('h264', bf.flat(), 3);
  });

  it('Opus: 20 ms packets, 60-160 bytes, verifiable payloads', () => {
    const src = new SyntheticSource({ codec: 'opus', sourceId: 42 });
    const all = frames(src, 100);
    checkSequence('opus', all, OPUS_TIMESTAMP_STEP);
    checkPayloads('opus', all.flat(), 42);
    for (const f of all) {
      assert.equal(f.length, 1);
      const len = f[0]!.payload.length;
      assert.ok(len >= OPUS_MIN_PACKET_BYTES && len <= OPUS_MAX_PACKET_BYTES, `size ${len}`);
      assert.equal(isKeyframe('opus', f[0]!.payload), false);
    }
  });

  it('verifyPayload rejects damaged, truncated or foreign payloads', () => {
    const src = new SyntheticSource({ codec: 'vp8', sourceId: 9 });
    const p = src.nextFrame()[0]!.payload;
    assert.equal(verifyPayload('vp8', p).ok, true);
    const flipped = Buffer.from(p);
    flipped[flipped.length - 5]! ^= 0x01;
    assert.equal(verifyPayload('vp8', flipped).ok, false);
    assert.equal(verifyPayload('vp8', p.subarray(0, p.length - 1)).ok, false);
    assert.equal(verifyPayload('vp8', Buffer.alloc(40)).ok, false);
    assert.equal(verifyPayload('h264', Buffer.alloc(0)).ok, false);
    assert.equal(verifyPayload('vp9', p).ok, false);
    const opus = new SyntheticSource({ codec: 'opus', sourceId: 9 }).nextFrame()[0]!.payload;
    assert.ok(opus.length - 1 >= MARKER_LENGTH);
    assert.equal(verifyPayload('audio/opus', opus).ok, true);
  });

  it('every payload carries its send time; nextFrame copies survive the source reusing its buffers', () => {
    const before = wallClockMs();
    for (const codec of ['vp8', 'opus'] as const) {
      const src = new SyntheticSource({ codec, sourceId: 3, bitrateKbps: codec === 'vp8' ? 2000 : 32 });
      const first = src.nextFrame();
      for (const p of first) {
        const t = sendTimeOf(codec, p.payload);
        assert.ok(t >= before - 1 && t <= wallClockMs() + 1, `${codec} send time ${t} vs ${before}`);
        assert.equal(verifyPayload(codec, p.payload).sentAtMs, t);
      }
      // 300 frames go round the 256-slot ring at least once: the first frame's copies are untouched.
      for (let i = 0; i < 300; i++) src.nextFrame();
      for (const p of first) assert.equal(verifyPayload(codec, p.payload).ok, true);
    }
    assert.ok(Number.isNaN(sendTimeOf('vp8', Buffer.from([0x90, 0x80, 0x80, 0x01, 1, 2, 3]))), 'no marker, no send time');
  });

  it('the timer path reuses one packet object and stays near the bitrate', async () => {
    const src = new SyntheticSource({ codec: 'vp8', sourceId: 11, fps: 50, bitrateKbps: 1000, keyframeIntervalFrames: 50 });
    const objects = new Set<RtpPacket>();
    let bytes = 0;
    let corrupt = 0;
    src.start((p) => {
      objects.add(p);
      bytes += p.payload.length;
      if (!verifyPayload('vp8', p.payload).ok) corrupt++;
    });
    await new Promise((r) => setTimeout(r, 1000));
    src.stop();
    assert.equal(objects.size, 1, 'one RtpPacket for every packet (werift clones it as it sends)');
    assert.equal(corrupt, 0);
    const kbps = (bytes * 8) / 1000 / (src.framesSent / 50);
    assert.ok(Math.abs(kbps - 1000) < 100, `${kbps.toFixed(0)} kbps`);
  });

  it('start/stop drive a timer at the frame rate and leave nothing behind', async () => {
    const src = new SyntheticSource({ codec: 'opus', sourceId: 5 });
    const got: RtpPacket[] = [];
    src.start((p) => {
      got.push(p);
    });
    assert.equal(src.running, true);
    await new Promise((r) => setTimeout(r, 230));
    src.stop();
    assert.equal(src.running, false);
    const n = got.length;
    assert.ok(n >= 9 && n <= 14, `~12 packets in 230 ms, got ${n}`);
    assert.equal(src.packetsSent, n);
    assert.equal(src.framesSent, n);
    await new Promise((r) => setTimeout(r, 60));
    assert.equal(got.length, n, 'no packets after stop');
  });
});
