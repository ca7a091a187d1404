/**
 * The load tool (`npm run loadtest`, src/loadtest/): the synthetic VP8 it publishes
 * (src/node-client/synthetic-media.ts, as the tests do) is well-formed with a readable send time, and
 * short runs as a child process, against its own in-process server and against a server
 * this test starts, end with zero join failures and every expected track received.
 *
 * The runner already put us in a loopback-only namespace and set TEST_NETNS=1, which the
 * child inherits: it must not try to make another one.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { RtpPacket } from 'werift';
import type { Summary } from '../src/loadtest/report.ts';
import { LatencyRecorder } from '../src/loadtest/latency-recorder.ts';
import { TrackStats } from '../src/loadtest/track-stats.ts';
import { parseVp8, sendTimeOf } from '../src/node-client/payload-format.ts';
import { wallClockMs } from '../src/node-client/payload-marker.ts';
import { SyntheticSource } from '../src/node-client/synthetic-media.ts';
import { TestService } from './helpers/service.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(root, 'src/loadtest/cli.ts');

let tmp: string;
before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'scv-loadtest-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
  summary: Summary | undefined;
}

/** Runs the tool to completion (it must exit by itself within `timeoutMs`). */
async function runCli(args: string[], timeoutMs = 120_000): Promise<CliResult> {
  const json = path.join(tmp, `summary-${Math.random().toString(36).slice(2)}.json`);
  const child = spawn(process.execPath, [CLI, ...args, '--json', json], { cwd: root, env: { ...process.env, TEST_NETNS: '1' } });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutMs);
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  clearTimeout(timer);
  assert.ok(!timedOut, `the load tool did not exit within ${timeoutMs} ms\n${stdout}\n${stderr}`);
  let summary: Summary | undefined;
  try {
    summary = JSON.parse(await readFile(json, 'utf8')) as Summary;
  } catch {
    summary = undefined;
  }
  return { code, stdout, stderr, summary };
}

function assertHealthy(r: CliResult, expectedTracks: number): Summary {
  const why = `\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
  assert.ok(r.summary !== undefined, `no JSON summary written${why}`);
  const s = r.summary;
  assert.equal(s.participants.joinFailures, 0, `join failures: ${JSON.stringify(s.joinFailureReasons)}${why}`);
  assert.equal(s.tracks.expected, expectedTracks);
  assert.equal(s.tracks.subscribed, s.tracks.expected, `tracks missing: ${s.missingTracks.join('; ')}${why}`);
  assert.ok(s.receive.packets > 0, `no packets received${why}`);
  assert.ok(s.send.packets > 0, `no packets sent${why}`);
  // Generous: the test machine may be busy; this catches a broken path, not a slow one.
  assert.ok(s.loss.percent < 5, `loss ${s.loss.percent} %${why}`);
  assert.ok(s.latencyMs.samples > 0 && s.latencyMs.p50 !== null, `no one-way delay samples${why}`);
  assert.equal(s.unmappedPackets, 0);
  assert.equal(s.ok, true);
  assert.equal(r.code, 0, `exit code ${r.code}${why}`);
  assert.match(r.stdout, /participants \d+\/\d+ {2}tracks \d+\/\d+ {2}rx /, 'a progress line');
  assert.match(r.stdout, /tracks subscribed +\d+ \/ \d+/, 'the summary table');
  return s;
}

describe('synthetic media as the load tool sends it', () => {
  test('VP8 packets are well-formed RFC 7741 with a readable send time', () => {
    const src = new SyntheticSource({ codec: 'vp8', bitrateKbps: 1500, fps: 30 });
    const packets: { marker: boolean; ts: number; payload: Buffer }[] = [];
    const send = (p: RtpPacket) => packets.push({ marker: p.header.marker, ts: p.header.timestamp, payload: Buffer.from(p.payload) });
    src.start(send);
    src.stop(); // start() emitted the first frame synchronously
    const before = wallClockMs();
    src.forceKeyframe();
    src.start(send);
    src.stop();
    assert.ok(packets.length >= 2);
    // Two keyframes (the first one and the forced one), each split over several packets.
    const frames = new Map<number, typeof packets>();
    for (const p of packets) frames.set(p.ts, [...(frames.get(p.ts) ?? []), p]);
    assert.equal(frames.size, 2);
    for (const frame of frames.values()) {
      const infos = frame.map((p) => parseVp8(p.payload)!);
      assert.ok(infos[0]!.startOfFrame, 'S bit and PID 0 on the first packet');
      assert.ok(infos.slice(1).every((i) => !i.startOfPartition), 'S bit only on the first packet');
      assert.equal(infos[0]!.keyframe, true);
      assert.equal(infos[0]!.width, 640);
      assert.equal(infos[0]!.height, 480);
      assert.ok(infos.every((i) => i.pictureId === infos[0]!.pictureId), 'one picture id per frame');
      assert.deepEqual(
        frame.map((p) => p.marker),
        frame.map((_, i) => i === frame.length - 1),
        'marker on the last packet only',
      );
      for (const p of frame) {
        const t = sendTimeOf('vp8', p.payload);
        assert.ok(Math.abs(t - before) < 1000, `send time ${t} vs now ${before}`);
      }
    }
    const [a, b] = [...frames.values()].map((f) => parseVp8(f[0]!.payload)!.pictureId!);
    assert.equal(b, (a! + 1) & 0x7fff, 'picture id increments per frame');
    // Keyframes are 4× a delta frame: at 1500 kbps / 30 fps one is well over 1 packet.
    assert.ok(frames.values().next().value!.length >= 5);
  });

  test('delta frames carry the 3-byte frame tag and stay near the bitrate', () => {
    const src = new SyntheticSource({ codec: 'vp8', bitrateKbps: 1000, fps: 25, keyframeIntervalFrames: 50 });
    let bytes = 0;
    let deltaStarts = 0;
    // 50 frames (one keyframe interval) through the frame builder, without the timer.
    for (let i = 0; i < 50; i++) {
      for (const p of src.nextFrame()) {
        bytes += p.payload.length;
        const info = parseVp8(p.payload)!;
        if (info.startOfFrame && info.keyframe === false) {
          deltaStarts++;
          assert.ok(Number.isFinite(sendTimeOf('vp8', p.payload)));
        }
      }
    }
    assert.equal(deltaStarts, 49);
    const kbps = (bytes * 8) / 1000 / 2; // 50 frames at 25 fps = 2 s
    assert.ok(Math.abs(kbps - 1000) < 50, `${kbps} kbps`);
  });

  test('Opus packets: 20 ms, Opus-sized, TOC byte, a send time', () => {
    const src = new SyntheticSource({ codec: 'opus' });
    const frames = [0, 1, 2].map(() => src.nextFrame());
    for (const [p] of frames) {
      assert.equal(p!.payload[0], 0xfc);
      assert.ok(p!.payload.length >= 60 && p!.payload.length <= 100, `size ${p!.payload.length}`);
      assert.ok(Number.isFinite(sendTimeOf('opus', p!.payload)));
    }
    assert.equal((frames[1]![0]!.header.timestamp - frames[0]![0]!.header.timestamp) >>> 0, 960);
  });
});

test('receive counters: gaps, late fills, duplicates and loss across a sequence wrap', () => {
  const latency = new LatencyRecorder();
  const t = new TrackStats('TR_x', 'pub', false, latency);
  const rtp = (seq: number) => ({ header: { sequenceNumber: seq & 0xffff }, payload: Buffer.alloc(10) }) as unknown as RtpPacket;
  // 65533 65534 [65535 missing] 0 1 65535(late) 1(dup) [2 3 missing] 4
  for (const seq of [65533, 65534, 0, 1, 65535, 1, 4]) t.onPacket(rtp(seq));
  assert.equal(t.packets, 7);
  assert.equal(t.gaps, 2);
  assert.equal(t.late, 1);
  assert.equal(t.duplicates, 1);
  assert.equal(t.expected, 8); // 65533 … 4
  assert.equal(t.unique, 6);
  assert.equal(t.expected - t.unique, 2); // 2 and 3 never came
  assert.equal(t.bytes, 70);
  assert.equal(latency.window.count, 0, 'audio packets carry no send time');
});

describe('load tool runs', () => {
  test('in-process server: 1 room, 2 publishers, 2 subscribers, 4 s', async () => {
    const r = await runCli(['--rooms', '1', '--publishers', '2', '--subscribers', '2', '--duration', '4', '--video-bitrate', '300', '--join-rate', '10']);
    const s = assertHealthy(r, 12); // 2 publishers × 1 other × 2 + 2 subscribers × 2 × 2
    assert.match(s.config.target, /^in-process ws:\/\/127\.0\.0\.1:/);
  });

  describe('against a running server', () => {
    const apiKey = 'loadtest-key';
    const apiSecret = 'loadtest-secret-0123456789abcdefghijklmnop';
    let svc: TestService;
    before(async () => {
      svc = await TestService.start({ SCV_API_KEY: apiKey, SCV_API_SECRET: apiSecret });
    });
    after(async () => {
      await svc.close();
    });

    test('--url with --api-key/--api-secret: 1 publisher, 2 subscribers, 3 s', async () => {
      const before = svc.service.sfu.stats.packetsForwarded;
      const r = await runCli(['--url', svc.service.wsUrl, '--api-key', apiKey, '--api-secret', apiSecret, '--publishers', '1', '--subscribers', '2', '--duration', '3', '--video-bitrate', '300']);
      const s = assertHealthy(r, 4);
      assert.equal(s.config.target, svc.service.wsUrl);
      assert.ok(svc.service.sfu.stats.packetsForwarded - before >= s.receive.packets, 'the media went through this server');
      // Every participant left at the end (the tool exits only after its `leave`s).
      assert.equal(svc.service.sfu.participantCount(), 0);
    });

    test('a wrong secret: every join fails, exit code 1', async () => {
      const r = await runCli(['--url', svc.service.wsUrl, '--api-key', apiKey, '--api-secret', 'x'.repeat(40), '--publishers', '1', '--subscribers', '1', '--duration', '1']);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.equal(r.summary?.participants.joinFailures, 2);
      assert.deepEqual(Object.keys(r.summary?.joinFailureReasons ?? {}), ['join: UNAUTHORIZED']);
      assert.equal(r.summary?.ok, false);
    });
  });

  test('bad options: exit code 2 with the usage', async () => {
    const r = await runCli(['--rooms', '0']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--rooms/);
    assert.match(r.stderr, /Usage: npm run loadtest/);
  });
});
