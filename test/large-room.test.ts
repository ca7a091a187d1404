/**
 * A large room: 36 participants publish audio and video and everyone receives everyone
 * (35 × 2 = 70 m-lines on each subscriber connection; the old fixed limit of 64 sections
 * refused those answers, and the subscribers froze). Then all 36 send at once, at a low
 * rate (audio paced to two packets a second, video one small frame a second:
 * the server and all 72 client connections share one event loop here), and every one of
 * the 2,520 forwarded tracks must deliver intact payloads, from the source its m-line's
 * offer names, both before and after a moment in the middle of that window: they all flow
 * at the same time.
 *
 * The rates are what a slower machine keeps up with. At twice them (7,000 pkt/s forwarded,
 * all decrypted again in this process) the test failed in CI three runs in a row, and the
 * same way here with the cores taken by other work: the one event loop fell behind, the
 * kernel dropped 59% of the datagrams (UDP RcvbufErrors), consent checks among them, and
 * 30 s later every connection's ICE consent (RFC 7675) expired within a few seconds.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { AppError } from '../src/common/errors.ts';
import { loadConfig } from '../src/config.ts';
import { assertPlausibleSdp } from '../src/sfu/sdp.ts';
import { type LocalTrack, type RemoteTrack, ServerError, type TestClient } from './helpers/client.ts';
import { sleep, TestService } from './helpers/service.ts';

const PUBLISHERS = 36;
/** Publishers that publish, and wait for their connections, together. */
const GROUP = 6;
/** Audio packets per second per publisher in the window (the synthetic Opus clock would send 50). */
const AUDIO_PPS = 2;
/** Video frames per second per publisher; at this bitrate every frame, keyframes too, is one packet. */
const VIDEO_FPS = 1;
const VIDEO_KBPS = 4;
/** How long everyone keeps sending after every track has delivered (its second half of the window). */
const HOLD_MS = 4_000;
/** Intact payloads each track must deliver in the hold. */
const MIN_AFTER_MARK = { audio: 6, video: 3 };

let svc: TestService;
before(async () => {
  svc = await TestService.start();
});
after(async () => {
  await svc.close();
});

/** Sends one Opus frame of `local` every 1000/AUDIO_PPS ms, the first after `offsetMs`; returns the stop function. */
function paceAudio(local: LocalTrack, offsetMs: number): () => void {
  const sendOne = () => {
    for (const p of local.source.nextFrame()) local.transceiver.sender.sendRtp(p).catch(() => {});
  };
  let interval: NodeJS.Timeout | undefined;
  const first = setTimeout(() => {
    sendOne();
    interval = setInterval(sendOne, 1000 / AUDIO_PPS);
  }, offsetMs);
  return () => {
    clearTimeout(first);
    clearInterval(interval);
  };
}

test(`${PUBLISHERS} publishers at once, everyone receives everyone`, async () => {
  const room = 'large';
  const t0 = Date.now();
  const clients = await Promise.all(Array.from({ length: PUBLISHERS }, (_, i) => svc.join(`p${i}`, room, { timeoutMs: 120_000 })));
  // Published a group at a time, each group's connections up before the next: 36 ICE
  // sessions checking at once while this one event loop (server and all clients) applies
  // 70-m-line descriptions saw checks time out on loopback (all publishers failed at once).
  for (let first = 0; first < PUBLISHERS; first += GROUP) {
    const group = clients.slice(first, first + GROUP);
    await Promise.all(
      group.map((c, j) =>
        c.publishTracks([
          { kind: 'audio', sourceId: 2 * (first + j) + 1, startMedia: false },
          { kind: 'video', sourceId: 2 * (first + j) + 2, bitrateKbps: VIDEO_KBPS, fps: VIDEO_FPS, keyframeIntervalFrames: 2 * VIDEO_FPS, startMedia: false },
        ]),
      ),
    );
    for (const c of group) await c.waitForConnectionState('publisher', 'connected', 60_000);
  }
  const others = 2 * (PUBLISHERS - 1);
  for (const c of clients) {
    await c.waitUntil(() => c.remoteTracks.filter((t) => !t.ended).length === others || undefined, 120_000, () => `${others} remote tracks`);
    await c.waitForConnectionState('subscriber', 'connected', 60_000);
  }
  const negotiated = Date.now();
  const removed = clients.flatMap((c) => c.eventsOf('left').map((l) => `${c.identity}: ${l.reason}`));
  assert.deepEqual(removed, [], 'nobody was removed');
  for (const c of clients) {
    const sections = c.subscriberPc!.getTransceivers().length;
    assert.equal(sections, others, `${c.identity}: ${sections} m-lines`);
  }

  /** Every (subscriber, publisher's local track) pair: 36 × 35 × 2. */
  const pairs: { rx: TestClient; tx: TestClient; local: LocalTrack }[] = [];
  for (const rx of clients) for (const tx of clients) if (tx !== rx) for (const local of tx.localTracks) pairs.push({ rx, tx, local });
  assert.equal(pairs.length, PUBLISHERS * others);
  const remoteOf = ({ rx, tx, local }: (typeof pairs)[number]): RemoteTrack => {
    const live = rx.tracksFrom(tx.identity!, local.kind);
    assert.equal(live.length, 1, `${rx.identity} has ${live.length} live ${local.kind} tracks from ${tx.identity}`);
    return live[0]!;
  };
  for (const pair of pairs) assert.equal(remoteOf(pair).packets, 0, 'nothing was sent before the window');

  // Everyone starts at once; audio phases spread over one packet interval.
  const stats = svc.service.sfu.stats;
  const forwardedAtStart = stats.packetsForwarded;
  const windowStart = performance.now();
  const stops = clients.map((c, i) => {
    const [audio, video] = c.localTracks;
    c.startMedia(video!);
    return paceAudio(audio!, (i * 1000) / AUDIO_PPS / PUBLISHERS);
  });
  let flowing: number;
  let windowEnd: number;
  let forwardedInWindow: number;
  try {
    for (const pair of pairs) {
      const { rx, tx, local } = pair;
      await rx.waitForTrackFrom(tx.identity!, local.kind, { minVerified: 1, minKeyframes: local.kind === 'video' ? 1 : 0, timeoutMs: 60_000 });
    }
    // Every track has delivered, and every publisher is still sending: count on from here.
    flowing = performance.now();
    const mark = new Map(pairs.map((pair) => [pair, remoteOf(pair).verified]));
    await sleep(HOLD_MS);
    for (const pair of pairs) {
      const { rx, tx, local } = pair;
      const target = mark.get(pair)! + MIN_AFTER_MARK[local.kind];
      const rec = await rx.waitUntil(() => (remoteOf(pair).verified >= target ? remoteOf(pair) : undefined), 30_000, () => `${target} verified ${local.kind} from ${tx.identity}`);
      assert.ok(rec.verified - mark.get(pair)! >= MIN_AFTER_MARK[local.kind]);
    }
    windowEnd = performance.now();
    forwardedInWindow = stats.packetsForwarded - forwardedAtStart;
  } finally {
    for (const stop of stops) stop();
    for (const c of clients) for (const t of c.localTracks) c.stopMedia(t);
  }
  for (const pair of pairs) {
    const { rx, tx, local } = pair;
    const rec = remoteOf(pair);
    assert.deepEqual([...rec.sourceIds], [local.sourceId], `${rx.identity} got other payloads on ${tx.identity}'s ${local.kind} (mid ${rec.mid})`);
    assert.equal(rec.corrupt, 0, `${rx.identity}: corrupt payloads on ${rec.summary()}`);
  }
  for (const c of clients) assert.deepEqual(c.failures, [], `${c.identity}: ${c.failures.join(' | ')}`);
  assert.equal(stats.negotiationFailures.invalid_answer + stats.negotiationFailures.timeout, 0, 'no negotiation failed');
  const windowS = (windowEnd - windowStart) / 1000;
  const offers = clients.reduce((n, c) => n + c.subscriberOffers, 0);
  console.log(
    `${PUBLISHERS} publishers: joined and negotiated in ${((negotiated - t0) / 1000).toFixed(1)} s (${offers} subscriber offers); ` +
      `all sending for ${windowS.toFixed(1)} s, every one of the ${pairs.length} tracks flowing after ${((flowing - windowStart) / 1000).toFixed(1)} s; ` +
      `${forwardedInWindow} packets forwarded, ${Math.round(forwardedInWindow / windowS)} pkt/s`,
  );
  await Promise.all(clients.map((c) => c.close({ leave: true })));
});

/** A plausible SDP with `n` audio sections. */
function sdpWith(n: number): string {
  const head = 'v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 AA\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n';
  return head + Array.from({ length: n }, (_, i) => `m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:${i}\r\na=sendonly\r\n`).join('');
}

test('the SDP section limit follows the room limit: 2 x SCV_MAX_PARTICIPANTS + 2; thousands of sections are refused at once', async () => {
  assert.equal(loadConfig({}).rtc.maxMediaSections, 102);
  const limit = loadConfig({ SCV_MAX_PARTICIPANTS: '10' }).rtc.maxMediaSections;
  assert.equal(limit, 22);
  assert.equal(assertPlausibleSdp(sdpWith(limit), limit).length, limit);
  assert.throws(() => assertPlausibleSdp(sdpWith(limit + 1), limit), (e: AppError) => e.code === 'INVALID_SDP' && /at most 22/.test(e.message));
  const absurd = sdpWith(5000);
  const t = performance.now();
  for (let i = 0; i < 100; i++) assert.throws(() => assertPlausibleSdp(absurd, 102), /too many media sections/);
  const perCall = (performance.now() - t) / 100;
  assert.ok(perCall < 2, `refusing 5,000 sections took ${perCall.toFixed(2)} ms`);

  // And the service applies it to what clients offer.
  const small = await TestService.start({ SCV_MAX_PARTICIPANTS: '2' });
  try {
    const c = await small.join('many', 'limit');
    await assert.rejects(
      c.publishTracks(Array.from({ length: 7 }, () => ({ kind: 'audio' as const }))),
      (e: ServerError) => e.code === 'INVALID_SDP' && /at most 6/.test(e.message),
    );
  } finally {
    await small.close();
  }
});
