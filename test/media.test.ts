/**
 * Media through the SFU with real werift peers over the WebSocket protocol: what a
 * participant sends arrives intact at every other participant, late joiners and late
 * publishers included, and leaving cleans up everywhere.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { RtpHeader, RtpPacket } from 'werift';
import { eventually, sleep, TestService } from './helpers/service.ts';

let svc: TestService;
before(async () => {
  svc = await TestService.start();
});
after(async () => {
  await svc.close();
});

async function exchange(codec: 'vp8' | 'h264', room: string): Promise<void> {
  const alice = await svc.join('alice', room, { videoCodec: codec });
  const bob = await svc.join('bob', room, { videoCodec: codec });
  await alice.publishTracks([{ kind: 'audio' }, { kind: 'video' }]);
  await bob.publishTracks([{ kind: 'audio' }, { kind: 'video' }]);
  for (const [rx, from] of [
    [alice, 'bob'],
    [bob, 'alice'],
  ] as const) {
    const video = await rx.waitForTrackFrom(from, 'video', { minPackets: 60, minVerified: 60, minKeyframes: 1 });
    const audio = await rx.waitForTrackFrom(from, 'audio', { minPackets: 50, minVerified: 50 });
    assert.equal(video.codec, codec);
    assert.equal(audio.codec, 'opus');
    assert.equal(video.corrupt, 0, `corrupt video payloads: ${JSON.stringify(video.lastCorrupt)}`);
    assert.equal(audio.corrupt, 0, `corrupt audio payloads: ${JSON.stringify(audio.lastCorrupt)}`);
    // The subscriber starts on a keyframe: the first frame it gets is decodable.
    assert.ok(video.keyframes >= 1);
  }
  await Promise.all([alice.close({ leave: true }), bob.close({ leave: true })]);
}

describe('two participants exchange audio and video', () => {
  test('VP8 + Opus, payloads intact both ways', () => exchange('vp8', 'pair-vp8'));
  test('H.264 + Opus, payloads intact both ways', () => exchange('h264', 'pair-h264'));
});

test('three participants: a late joiner and a late publisher each get the two others', async () => {
  const room = 'trio';
  const a = await svc.join('a', room);
  const b = await svc.join('b', room);
  await a.publishTracks([{ kind: 'audio' }, { kind: 'video' }]);
  await b.publishTracks([{ kind: 'audio' }, { kind: 'video' }]);
  await b.waitForTrackFrom('a', 'video', { minPackets: 10 });
  // c joins after a and b publish: it gets their tracks with its first subscriber offer.
  const c = await svc.join('c', room);
  assert.deepEqual(c.joined!.room.participants.map((p) => p.identity).sort(), ['a', 'b']);
  assert.equal(c.joined!.room.participants.find((p) => p.identity === 'a')!.tracks.length, 2);
  for (const from of ['a', 'b']) {
    await c.waitForTrackFrom(from, 'video', { minPackets: 30, minVerified: 30, minKeyframes: 1 });
    await c.waitForTrackFrom(from, 'audio', { minPackets: 30, minVerified: 30 });
  }
  // c publishes after everyone joined: a and b get it through renegotiation, no reconnect.
  const offersBefore = a.subscriberOffers;
  await c.publishTracks([{ kind: 'audio' }, { kind: 'video' }]);
  for (const rx of [a, b]) {
    await rx.waitForTrackFrom('c', 'video', { minPackets: 30, minVerified: 30, minKeyframes: 1 });
    await rx.waitForTrackFrom('c', 'audio', { minPackets: 30, minVerified: 30 });
  }
  assert.ok(a.subscriberOffers > offersBefore, 'a was renegotiated');
  for (const [rx, others] of [
    [a, ['b', 'c']],
    [b, ['a', 'c']],
    [c, ['a', 'b']],
  ] as const) {
    for (const o of others) assert.equal(rx.tracksFrom(o).length, 2, `${rx.identity} has 2 tracks from ${o}`);
    assert.equal(rx.failures.length, 0, rx.failures.join('\n'));
  }
  await Promise.all([a, b, c].map((x) => x.close({ leave: true })));
});

/** Counts of what the server holds, to compare before and after. */
async function serverState(): Promise<{ rooms: number; participants: number; tracks: number; metricParticipants: number; handles: number }> {
  const sfu = svc.service.sfu;
  return {
    rooms: sfu.roomCount,
    participants: sfu.participantCount(),
    tracks: sfu.publishedTrackCount(),
    metricParticipants: await svc.metric('scv_participants'),
    handles: process.getActiveResourcesInfo().filter((r) => r !== 'TTYWrap').length,
  };
}

async function departure(how: 'leave' | 'cut'): Promise<void> {
  await eventually(async () => (await serverState()).participants === 0, 'an idle server');
  const start = await serverState();
  const room = `departure-${how}`;
  const stay = await svc.join('stay', room);
  const go = await svc.join('go', room);
  const [, video] = await go.publishTracks([{ kind: 'audio' }, { kind: 'video' }]);
  const rec = await stay.waitForTrackFrom('go', 'video', { minPackets: 20 });
  if (how === 'leave') {
    await go.leave();
  } else {
    // Connection and socket gone without a word: ICE/DTLS fail, or the socket grace ends.
    await go.closePeerConnections();
    go.dropWebSocket();
  }
  const left = await stay.waitForEvent('participant_left', (m) => m.identity === 'go', 30_000);
  assert.equal(left.reason, how === 'leave' ? 'client_left' : left.reason);
  await stay.waitForEvent('track_unpublished', (m) => m.trackSid === video!.trackSid, 5_000);
  await stay.waitForNoTrackFrom('go', undefined, 10_000);
  const frozen = rec.packets;
  await sleep(1000);
  assert.ok(rec.packets - frozen <= 5, `packets stopped (got ${rec.packets - frozen} more)`);
  await stay.close({ leave: true });
  await go.close();
  // The empty room closes after its timeout; force it so the counts can be compared now.
  svc.service.sfu.findRoom(room)?.close('room_closed');
  await eventually(async () => {
    const now = await serverState();
    // Rooms of earlier tests may close meanwhile, so rooms can only go down.
    return now.rooms <= start.rooms && now.participants === start.participants && now.tracks === start.tracks && now.metricParticipants === start.metricParticipants;
  }, 'rooms, participants and tracks back to where they started');
  await eventually(async () => (await serverState()).handles <= start.handles, `open handles back to ${start.handles} (${process.getActiveResourcesInfo().join(',')})`, 15_000);
}

describe('a participant that goes away disappears from everyone', () => {
  test('by leaving', () => departure('leave'));
  test('by cutting its connection without a word', { timeout: 120_000 }, () => departure('cut'));
});

test('a subscriber PLI becomes a keyframe request upstream; a NACK is answered from the cache', async () => {
  const room = 'feedback';
  const pub = await svc.join('pub', room);
  const sub = await svc.join('sub', room);
  const [video] = await pub.publishTracks([{ kind: 'video', keyframeIntervalFrames: 100_000 }]);
  const rec = await sub.waitForTrackFrom('pub', 'video', { minPackets: 60, minKeyframes: 1 });
  await sleep(600); // past the upstream keyframe-request throttle
  const plisBefore = video!.plisReceived;
  const keyframesBefore = rec.keyframes;
  await sub.sendPli(rec.trackSid);
  await eventually(() => video!.plisReceived > plisBefore, 'a PLI at the publisher');
  await eventually(() => rec.keyframes > keyframesBefore, 'a new keyframe at the subscriber');

  const seq = rec.highestSeq!;
  await sub.sendNack(rec.trackSid, [seq]);
  const rtx = await sub.waitForRetransmission(rec.trackSid, seq, 5_000);
  assert.equal(rtx.duplicate, true);
  assert.ok((await svc.metric('scv_nacks_received_total')) >= 1);
  assert.ok((await svc.metric('scv_plis_received_total')) >= 1);
  assert.ok((await svc.metric('scv_keyframe_requests_sent_total')) >= 1);
  await Promise.all([pub.close({ leave: true }), sub.close({ leave: true })]);
});

test('a subscriber that asks for keyframes non-stop is backed off; another subscriber is still served', async () => {
  const room = 'pli-storm';
  const pub = await svc.join('pub', room);
  const noisy = await svc.join('noisy', room);
  const calm = await svc.join('calm', room);
  const [video] = await pub.publishTracks([{ kind: 'video', keyframeIntervalFrames: 100_000 }]);
  const noisyRec = await noisy.waitForTrackFrom('pub', 'video', { minPackets: 30, minKeyframes: 1 });
  const calmRec = await calm.waitForTrackFrom('pub', 'video', { minPackets: 30, minKeyframes: 1 });
  await sleep(600);
  const before = video!.plisReceived;
  // What a Chromium that cannot decode does: ~10 PLIs a second, here for 4 s.
  for (let i = 0; i < 40; i++) {
    await noisy.sendPli(noisyRec.trackSid);
    await sleep(100);
  }
  const fromStorm = video!.plisReceived - before;
  assert.ok(fromStorm >= 2 && fromStorm <= 4, `40 PLIs in 4 s reached the publisher ${fromStorm} times (backoff 0.5, 1, 2 s)`);
  // The other subscriber's request is not held back by the noisy one's backoff.
  await sleep(600);
  const calmBefore = video!.plisReceived;
  const keyframes = calmRec.keyframes;
  await calm.sendPli(calmRec.trackSid);
  await eventually(() => video!.plisReceived > calmBefore, "calm's PLI at the publisher");
  await eventually(() => calmRec.keyframes > keyframes, 'a new keyframe at calm');
  await Promise.all([pub, noisy, calm].map((c) => c.close({ leave: true })));
});

test('a publisher gets transport-wide congestion control feedback', async () => {
  const room = 'twcc';
  const pub = await svc.join('pub', room);
  const sub = await svc.join('sub', room);
  await pub.publishTracks([{ kind: 'video' }]);
  await sub.waitForTrackFrom('pub', 'video', { minPackets: 30 });
  const before = await svc.metric('scv_twcc_feedback_sent_total');
  await sleep(1000);
  assert.ok((await svc.metric('scv_twcc_feedback_sent_total')) - before >= 5, 'feedback flows while media flows');
  await Promise.all([pub.close({ leave: true }), sub.close({ leave: true })]);
});

test('muting is announced to everyone; unpublishing removes the track from subscribers', async () => {
  const room = 'mute';
  const a = await svc.join('a', room);
  const b = await svc.join('b', room);
  const [audio, video] = await a.publishTracks([{ kind: 'audio' }, { kind: 'video' }]);
  await b.waitForTrackFrom('a', 'audio', { minPackets: 10 });
  await a.mute(audio!.trackSid!, true);
  const muted = await b.waitForEvent('track_muted', (m) => m.trackSid === audio!.trackSid);
  assert.equal(muted.muted, true);
  const rooms = await svc.fetch(`/video/rooms/${room}`, { headers: { authorization: `Bearer ${await svc.token('admin', undefined, ['admin'])}` } });
  const aInfo = rooms.body.participants.find((p: { identity: string }) => p.identity === 'a');
  assert.equal(aInfo.tracks.find((t: { sid: string }) => t.sid === audio!.trackSid).muted, true);
  await a.unpublish(video!);
  await b.waitForEvent('track_unpublished', (m) => m.trackSid === video!.trackSid);
  await b.waitForNoTrackFrom('a', 'video', 10_000);
  assert.equal(b.tracksFrom('a', 'audio').length, 1, 'the audio track stays');
  await Promise.all([a.close({ leave: true }), b.close({ leave: true })]);
});

test('a dropped WebSocket may resume within the grace; media never stopped', async () => {
  const room = 'resume';
  const a = await svc.join('a', room);
  const b = await svc.join('b', room);
  await a.publishTracks([{ kind: 'video' }]);
  const rec = await b.waitForTrackFrom('a', 'video', { minPackets: 20 });
  a.dropWebSocket();
  await b.waitForMorePackets(rec, 30, 5_000);
  const joined = await a.reconnect();
  assert.equal(joined.resumed, true);
  await b.waitForMorePackets(rec, 30, 5_000);
  assert.equal(b.events.filter((m) => m.type === 'participant_left').length, 0);
  await Promise.all([a.close({ leave: true }), b.close({ leave: true })]);
});

test('a participant whose WebSocket stays gone past the grace is removed', async () => {
  const short = await TestService.start({ SCV_RECONNECT_GRACE: '1' });
  try {
    const a = short.track(await short.join('a', 'grace'));
    const b = short.track(await short.join('b', 'grace'));
    await a.publishTracks([{ kind: 'audio' }]);
    await b.waitForTrackFrom('a', 'audio', { minPackets: 5 });
    a.dropWebSocket();
    const left = await b.waitForEvent('participant_left', (m) => m.identity === 'a', 10_000);
    assert.equal(left.reason, 'signaling_lost');
    await b.waitForNoTrackFrom('a', undefined, 10_000);
  } finally {
    await short.close();
  }
});

test('the same identity joining again replaces the old session', async () => {
  const first = await svc.join('dup', 'replace');
  const second = await svc.join('dup', 'replace');
  const left = await first.waitForEvent('left', () => true);
  assert.equal(left.reason, 'replaced');
  await first.waitForSocketClose();
  assert.equal(svc.service.sfu.getRoom('replace').size, 1);
  await Promise.all([first.close(), second.close({ leave: true })]);
});


test('RTCP: subscribers get sender reports, publishers get receiver reports', async () => {
  const room = 'rtcp';
  const pub = await svc.join('pub', room);
  const sub = await svc.join('sub', room);
  const [video] = await pub.publishTracks([{ kind: 'video' }]);
  const rec = await sub.waitForTrackFrom('pub', 'video', { minPackets: 10 });
  let senderReports = 0;
  let receiverReports = 0;
  const a = rec.transceiver.receiver.onRtcp.subscribe((p) => {
    if (p.type === 200) senderReports++;
  });
  const b = video!.transceiver.sender.onRtcp.subscribe((p) => {
    if (p.type === 201) receiverReports++;
  });
  await eventually(() => senderReports > 0 && receiverReports > 0, `SR (${senderReports}) and RR (${receiverReports})`, 10_000);
  a.unSubscribe();
  b.unSubscribe();
  await Promise.all([pub.close({ leave: true }), sub.close({ leave: true })]);
});

test('a subscriber that stops reading does not hold back the others', async () => {
  const room = 'slow';
  const pub = await svc.join('pub', room);
  const good = await svc.join('good', room);
  const dead = await svc.join('dead', room);
  await pub.publishTracks([{ kind: 'video', bitrateKbps: 1500 }]);
  const rec = await good.waitForTrackFrom('pub', 'video', { minPackets: 30 });
  await dead.waitForTrackFrom('pub', 'video', { minPackets: 30 });
  // Its PeerConnections go silent, the server keeps sending into the void until it notices.
  await dead.closePeerConnections();
  const before = rec.packets;
  const t0 = Date.now();
  await good.waitForMorePackets(rec, 200, 10_000);
  const rate = ((rec.packets - before) * 1000) / (Date.now() - t0);
  assert.ok(rate > 50, `the good subscriber still receives (${rate.toFixed(0)} packets/s)`);
  await Promise.all([pub.close({ leave: true }), good.close({ leave: true }), dead.close()]);
});

test('padding-only probe packets are not forwarded and leave no gap in the sequence', async () => {
  const room = 'padding';
  const pub = await svc.join('pub', room);
  const sub = await svc.join('sub', room);
  const [video] = await pub.publishTracks([{ kind: 'video', startMedia: false }]);
  const sender = video!.transceiver.sender;
  let shift = 0;
  let padding = 0;
  // Like Chromium probing without RTX: padding-only packets share the media's sequence space.
  video!.source.start((packet) => {
    packet.header.sequenceNumber = (packet.header.sequenceNumber + shift) & 0xffff;
    const seq = packet.header.sequenceNumber;
    void sender.sendRtp(packet);
    if (seq % 3 === 0) {
      shift++;
      padding++;
      // No payload at all: what the SFU sees of a padding-only packet once padding is stripped.
      // (werift's client cannot send real RTP padding: its SRTP path drops the padding bytes.)
      const probe = new RtpPacket(new RtpHeader({ payloadType: packet.header.payloadType, sequenceNumber: (seq + 1) & 0xffff, timestamp: packet.header.timestamp }), Buffer.alloc(0));
      void sender.sendRtp(probe);
    }
  });
  const rec = await sub.waitForTrackFrom('pub', 'video', { minPackets: 150, minVerified: 150, minKeyframes: 1 });
  assert.ok(padding > 40, `sent ${padding} padding packets`);
  assert.equal(rec.skipped, 0, 'no sequence gaps at the subscriber');
  assert.equal(rec.corrupt, 0);
  assert.equal(rec.packets, rec.verified, 'every packet the subscriber got is media');
  await Promise.all([pub.close({ leave: true }), sub.close({ leave: true })]);
});

test('a participant removed because its connection failed is told why', { timeout: 60_000 }, async () => {
  const c = await svc.join('failing', 'told');
  await c.publishTracks([{ kind: 'audio' }]);
  await c.waitForConnectionState('publisher', 'connected');
  // Media gone, socket still up: ICE consent expires on the server and the participant is removed.
  await c.closePeerConnections();
  const left = await c.waitForEvent('left', () => true, 45_000);
  assert.equal(left.reason, 'connection_failed');
  await c.waitForSocketClose(5_000);
  await c.close();
});
