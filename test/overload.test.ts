/**
 * Under overload the SFU degrades instead of collapsing: when its event loop cannot keep
 * up, it stops forwarding video to subscribers (counted as dropped), while audio, the
 * publisher's ingest and keyframe handling go on; once the load is gone, video comes back
 * and starts on a keyframe.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { eventually, sleep, TestService } from './helpers/service.ts';

let svc: TestService;
before(async () => {
  svc = await TestService.start({ SCV_OVERLOAD_UTILIZATION: '0.9' });
});
after(async () => {
  await svc.close();
});

/** Keeps this process (server and clients alike) busy 190 of every 200 ms for `ms`. */
async function starve(ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const busyUntil = Date.now() + 190;
    while (Date.now() < busyUntil) {
      // spin: the event loop lags as it would with more packets than one core can forward
    }
    await sleep(10);
  }
}

test('an overloaded server sheds subscriber video, keeps audio and ingest, and recovers on a keyframe', { timeout: 90_000 }, async () => {
  const room = 'overload';
  const pub = await svc.join('pub', room);
  const subs = await Promise.all(['s1', 's2', 's3', 's4'].map((id) => svc.join(id, room)));
  await pub.publishTracks([{ kind: 'audio' }, { kind: 'video' }]);
  const tracks = await Promise.all(
    subs.map(async (s) => ({
      video: await s.waitForTrackFrom('pub', 'video', { minPackets: 30, minKeyframes: 1 }),
      audio: await s.waitForTrackFrom('pub', 'audio', { minPackets: 20 }),
    })),
  );
  const droppedBefore = await svc.metric('scv_rtp_packets_dropped_total');
  const receivedBefore = await svc.metric('scv_rtp_packets_received_total');
  const audioBefore = tracks.map((t) => t.audio.packets);

  await starve(6_000);

  // Video to subscribers was shed (counted), but the publisher's packets kept coming in and
  // every subscriber kept hearing audio through the overload.
  assert.ok((await svc.metric('scv_rtp_packets_dropped_total')) > droppedBefore, 'forwarding was shed');
  assert.ok((await svc.metric('scv_rtp_packets_received_total')) > receivedBefore + 100, 'ingest went on');
  tracks.forEach((t, i) => assert.ok(t.audio.packets > audioBefore[i]! + 20, `${subs[i]!.identity} kept receiving audio`));

  // Load gone: every subscriber's video comes back, starting on a fresh keyframe.
  const keyframesAfter = tracks.map((t) => t.video.keyframes);
  const packetsAfter = tracks.map((t) => t.video.packets);
  await eventually(
    () => tracks.every((t, i) => t.video.keyframes > keyframesAfter[i]! && t.video.packets > packetsAfter[i]! + 60),
    'video back at every subscriber, from a keyframe',
    20_000,
  );
  for (const t of tracks) assert.equal(t.video.corrupt, 0);
  await Promise.all([pub.close({ leave: true }), ...subs.map((s) => s.close({ leave: true }))]);
});
