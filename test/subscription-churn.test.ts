/**
 * A long call where people come and go: three participants stay while 60 others join a
 * few at a time, publish audio and video, and go (by `leave`, by closing without a word,
 * by losing their socket). The three receive every newcomer's media on the right track,
 * and their subscriber connection reuses m-lines: no offer ever holds more than
 * 2 × (most publishers present at once) + 2 media sections. Before m-lines were reused,
 * every departed track left an inactive m-line behind, and once 64 had piled up the
 * stayers' offers were refused and they received nothing new.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { MessageOf, TestClient } from './helpers/client.ts';
import { TestService } from './helpers/service.ts';

const CHURNERS = 60;
const BATCH = 4;
const STAYERS = ['stay-a', 'stay-b', 'stay-c'];
const VIDEO = { kind: 'video' as const, bitrateKbps: 60, fps: 10 };

let svc: TestService;
before(async () => {
  // A departure without `leave` is final after the reconnect grace: 1 s here.
  svc = await TestService.start({ SCV_RECONNECT_GRACE: '1' });
});
after(async () => {
  await svc.close();
});

const sectionsOf = (sdp: string) => sdp.match(/^m=/gm)?.length ?? 0;
const offersOf = (c: TestClient) => c.messages.filter((m): m is MessageOf<'offer'> => m.type === 'offer');

/** Waits until `rx` gets audio and video of `from`, each on the m-line its offer names, carrying `from`'s payloads. */
async function assertReceives(rx: TestClient, from: TestClient): Promise<void> {
  const who = from.identity!;
  for (const local of from.localTracks) {
    const rec = await rx.waitForTrackFrom(who, local.kind, { minPackets: 5, minVerified: 5, minKeyframes: local.kind === 'video' ? 1 : 0, timeoutMs: 20_000 });
    assert.deepEqual([...rec.sourceIds], [local.sourceId], `${rx.identity} got other payloads on ${who}'s ${local.kind} (mid ${rec.mid})`);
    assert.equal(rec.corrupt, 0, `${rx.identity}: corrupt ${who}/${local.kind}: ${JSON.stringify(rec.lastCorrupt)}`);
  }
}

test(`three stay while ${CHURNERS} others come and go, ${BATCH} at a time: the three get everyone, on reused m-lines`, async () => {
  const room = 'churn';
  let nextSource = 1;
  const stayers: TestClient[] = [];
  for (const id of STAYERS) {
    const c = await svc.join(id, room);
    await c.publishTracks([
      { kind: 'audio', sourceId: nextSource++ },
      { ...VIDEO, sourceId: nextSource++ },
    ]);
    stayers.push(c);
  }
  for (const rx of stayers) for (const from of stayers) if (rx !== from) await assertReceives(rx, from);

  let peakPublishers = STAYERS.length;
  const started = Date.now();
  for (let round = 0; round < CHURNERS / BATCH; round++) {
    const batch: TestClient[] = [];
    for (let i = 0; i < BATCH; i++) {
      const c = await svc.join(`churn-${round}-${i}`, room);
      await c.publishTracks([
        { kind: 'audio', sourceId: nextSource++ },
        { ...VIDEO, sourceId: nextSource++ },
      ]);
      batch.push(c);
    }
    peakPublishers = Math.max(peakPublishers, STAYERS.length + batch.length);
    for (const rx of stayers) for (const from of batch) await assertReceives(rx, from);
    // Three ways to go: leave; close without a word; lose the socket while media still flows.
    await Promise.all(
      batch.map(async (c, i) => {
        if (i % 3 === 0) await c.leave();
        else if (i % 3 === 1) await c.close();
        else c.dropWebSocket();
      }),
    );
    for (const rx of stayers) {
      for (const c of batch) {
        await rx.waitForEvent('participant_left', (m) => m.identity === c.identity, 20_000);
        await rx.waitForNoTrackFrom(c.identity!, undefined, 10_000);
      }
    }
    await Promise.all(batch.map((c) => c.close()));
  }
  const churnSeconds = (Date.now() - started) / 1000;

  const bound = 2 * peakPublishers + 2;
  for (const rx of stayers) {
    const offers = offersOf(rx);
    const most = Math.max(...offers.map((o) => sectionsOf(o.sdp)));
    assert.ok(most <= bound, `${rx.identity}: an offer had ${most} media sections, more than 2 × ${peakPublishers} + 2`);
    // Reuse happened: some mid carried several participants' tracks over the call.
    const tracksByMid = new Map<string, Set<string>>();
    for (const o of offers) for (const [mid, t] of Object.entries(o.tracks)) tracksByMid.set(mid, (tracksByMid.get(mid) ?? new Set()).add(t.trackSid));
    const reused = Math.max(...[...tracksByMid.values()].map((s) => s.size));
    assert.ok(reused >= CHURNERS / BATCH, `${rx.identity}: the busiest m-line carried only ${reused} tracks`);
    assert.deepEqual(rx.failures, [], `${rx.identity}: ${rx.failures.join(' | ')}`);
    // The stayers still receive each other after all that.
    for (const from of stayers) {
      if (from === rx) continue;
      for (const rec of rx.tracksFrom(from.identity!)) await rx.waitForMorePackets(rec, 5, 10_000);
    }
    console.log(`${rx.identity}: ${offers.length} offers, at most ${most} media sections (bound ${bound}); churn took ${churnSeconds.toFixed(1)} s`);
  }
  assert.equal(svc.service.sfu.stats.negotiationFailures.invalid_answer + svc.service.sfu.stats.negotiationFailures.timeout, 0, 'no negotiation failed');
  await Promise.all(stayers.map((c) => c.close({ leave: true })));
});

test('a reused m-line carries a track of another codec: VP8, then H.264, then VP8 again', async () => {
  const room = 'churn-codecs';
  const stay = await svc.join('stay', room);
  const mids = new Set<string>();
  for (const [i, codec] of (['vp8', 'h264', 'vp8'] as const).entries()) {
    const c = await svc.join(`cam-${i}`, room, { videoCodec: codec });
    await c.publishTracks([{ ...VIDEO, sourceId: 100 + i }]);
    const rec = await stay.waitForTrackFrom(c.identity!, 'video', { minPackets: 10, minVerified: 10, minKeyframes: 1, timeoutMs: 20_000 });
    assert.equal(rec.codec, codec);
    assert.deepEqual([...rec.sourceIds], [100 + i]);
    assert.equal(rec.corrupt, 0, JSON.stringify(rec.lastCorrupt));
    mids.add(rec.mid);
    await c.leave();
    await stay.waitForNoTrackFrom(c.identity!, undefined, 10_000);
    await c.close();
  }
  assert.deepEqual([...mids], [[...mids][0]], 'all three came on one m-line');
  assert.deepEqual(stay.failures, []);
  await stay.close({ leave: true });
});
