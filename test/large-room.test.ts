/**
 * A large room: 36 participants publish audio and video at once and everyone receives
 * everyone (35 × 2 = 70 m-lines on each subscriber connection; the old fixed limit of 64
 * sections refused those answers, and the subscribers froze). The media is low-rate and
 * sent by a few publishers at a time, so 2,520 forwarded tracks fit on a small machine (the
 * server and all 72 client connections share one event loop here);
 * every pair is checked for intact payloads on the m-line the offer names.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { AppError } from '../src/common/errors.ts';
import { loadConfig } from '../src/config.ts';
import { assertPlausibleSdp } from '../src/sfu/sdp.ts';
import { ServerError } from './helpers/client.ts';
import { TestService } from './helpers/service.ts';

const PUBLISHERS = 36;
/** Publishers sending at once while the others are checked. */
const SENDING = 6;

let svc: TestService;
before(async () => {
  svc = await TestService.start();
});
after(async () => {
  await svc.close();
});

test(`${PUBLISHERS} publishers at once, everyone receives everyone`, async () => {
  const room = 'large';
  const t0 = Date.now();
  const clients = await Promise.all(Array.from({ length: PUBLISHERS }, (_, i) => svc.join(`p${i}`, room, { timeoutMs: 120_000 })));
  // Published a group at a time, each group's connections up before the next: 36 ICE
  // sessions checking at once while this one event loop (server and all clients) applies
  // 70-m-line descriptions saw checks time out on loopback (all publishers failed at once).
  for (let first = 0; first < PUBLISHERS; first += SENDING) {
    const group = clients.slice(first, first + SENDING);
    await Promise.all(
      group.map((c, j) =>
        c.publishTracks([
          { kind: 'audio', sourceId: 2 * (first + j) + 1, startMedia: false },
          { kind: 'video', sourceId: 2 * (first + j) + 2, bitrateKbps: 30, fps: 5, startMedia: false },
        ]),
      ),
    );
    for (const c of group) await c.waitForConnectionState('publisher', 'connected', 60_000);
  }
  const others = 2 * (PUBLISHERS - 1);
  for (const c of clients) {
    await c.waitUntil(() => c.remoteTracks.filter((t) => !t.ended).length === others || undefined, 120_000, () => `${others} remote tracks`);
  }
  const negotiated = Date.now();
  const removed = clients.flatMap((c) => c.eventsOf('left').map((l) => `${c.identity}: ${l.reason}`));
  assert.deepEqual(removed, [], 'nobody was removed');
  for (const c of clients) {
    const sections = c.subscriberPc!.getTransceivers().length;
    assert.equal(sections, others, `${c.identity}: ${sections} m-lines`);
  }

  for (let first = 0; first < PUBLISHERS; first += SENDING) {
    const senders = clients.slice(first, first + SENDING);
    for (const s of senders) for (const t of s.localTracks) s.startMedia(t);
    for (const rx of clients) {
      for (const s of senders) {
        if (s === rx) continue;
        for (const local of s.localTracks) {
          const rec = await rx.waitForTrackFrom(s.identity!, local.kind, { minPackets: 3, minVerified: 3, minKeyframes: local.kind === 'video' ? 1 : 0, timeoutMs: 60_000 });
          assert.deepEqual([...rec.sourceIds], [local.sourceId], `${rx.identity} got other payloads on ${s.identity}'s ${local.kind} (mid ${rec.mid})`);
          assert.equal(rec.corrupt, 0);
        }
      }
    }
    for (const s of senders) for (const t of s.localTracks) s.stopMedia(t);
  }
  const done = Date.now();
  for (const c of clients) assert.deepEqual(c.failures, [], `${c.identity}: ${c.failures.join(' | ')}`);
  assert.equal(svc.service.sfu.stats.negotiationFailures.invalid_answer + svc.service.sfu.stats.negotiationFailures.timeout, 0, 'no negotiation failed');
  const offers = clients.reduce((n, c) => n + c.subscriberOffers, 0);
  console.log(
    `${PUBLISHERS} publishers: joined and negotiated in ${((negotiated - t0) / 1000).toFixed(1)} s (${offers} subscriber offers), ` +
      `all ${PUBLISHERS * others} tracks checked in ${((done - negotiated) / 1000).toFixed(1)} s`,
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
