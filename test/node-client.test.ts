/**
 * The Node client's subscriber side (src/node-client/subscriber-connection.ts) against a
 * real werift peer that offers the way the SFU does: an m-line that carried one track goes
 * inactive and is later reused (same mid, same sender SSRC) for another track. The sink of
 * the new track gets the new packets (werift keeps routing the SSRC to the receiver and
 * fires no new track), the old one no more; only the newest of two offers is answered.
 * Then the same through the SFU, for TestClient and for the load tool's participant.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { RTCPeerConnection, type RTCRtpTransceiver, type RtpPacket } from 'werift';
import { LatencyRecorder } from '../src/loadtest/latency-recorder.ts';
import { Participant } from '../src/loadtest/participant.ts';
import type { ServerMessage } from '../src/signaling/messages.ts';
import { verifyPayload } from '../src/node-client/payload-format.ts';
import { codecParameters, LOOPBACK_ICE, peerConfig } from '../src/node-client/peer-config.ts';
import { SubscriberConnection, type OfferedTrack, type TrackSink } from '../src/node-client/subscriber-connection.ts';
import { SyntheticSource } from '../src/node-client/synthetic-media.ts';
import { eventually, TestService } from './helpers/service.ts';

/** What one mapped track received. */
class Seen implements TrackSink {
  readonly trackSid: string;
  readonly mid: string;
  packets = 0;
  corrupt = 0;
  ended = false;
  readonly sourceIds = new Set<number>();
  constructor(info: OfferedTrack, mid: string) {
    this.trackSid = info.trackSid;
    this.mid = mid;
  }
  onPacket(rtp: RtpPacket): void {
    this.packets++;
    const v = verifyPayload('vp8', rtp.payload);
    if (v.ok) this.sourceIds.add(v.sourceId!);
    else this.corrupt++;
  }
  end(): void {
    this.ended = true;
  }
}

const track = (trackSid: string, identity: string): OfferedTrack => ({ participantSid: `PA_${identity}`, identity, trackSid, kind: 'video', source: 'camera', name: 'video' });

const closers: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of closers) await c();
});

test('a reused subscriber m-line maps to its new track; only the newest offer is answered', { timeout: 30_000 }, async () => {
  const server = new RTCPeerConnection({ codecs: { audio: [codecParameters('opus')], video: [codecParameters('vp8')] }, bundlePolicy: 'max-bundle', iceServers: [], ...LOOPBACK_ICE });
  closers.push(() => server.close());
  const problems: string[] = [];
  const answers: string[] = [];
  const sinks: Seen[] = [];
  const sub = new SubscriberConnection<Seen>(
    () => ({ ...peerConfig('subscriber', LOOPBACK_ICE), iceServers: [] }),
    {
      answer: async (sdp): Promise<ServerMessage> => {
        answers.push(sdp);
        await server.setRemoteDescription({ type: 'answer', sdp });
        return { type: 'ack' };
      },
      candidate: (c) => {
        if (c !== null) void server.addIceCandidate({ candidate: c.candidate, sdpMid: c.sdpMid ?? undefined, sdpMLineIndex: c.sdpMLineIndex ?? undefined });
      },
      startTrickle: () => {},
      problem: (what) => problems.push(what),
      changed: () => {},
    },
    (info, mid) => {
      const s = new Seen(info, mid);
      sinks.push(s);
      return s;
    },
  );
  closers.push(() => sub.close());
  server.onIceCandidate.subscribe((c) => {
    if (c !== undefined) sub.addRemoteCandidate({ candidate: c.candidate, sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null });
  });
  const offer = async (tracks: Record<string, OfferedTrack>): Promise<ServerMessage & { type: 'offer' }> => {
    await server.setLocalDescription(await server.createOffer());
    return { type: 'offer', target: 'subscriber', sdp: server.localDescription!.sdp, tracks };
  };
  const sendWith = (t: RTCRtpTransceiver, sourceId: number) => {
    const src = new SyntheticSource({ codec: 'vp8', sourceId, bitrateKbps: 200 });
    src.start((p) => t.sender.sendRtp(p));
    closers.unshift(async () => src.stop());
    return src;
  };

  const video = server.addTransceiver('video', { direction: 'sendonly' });
  sub.handleOffer(await offer({ '0': track('TR_A', 'alice') }));
  await eventually(() => server.connectionState === 'connected' && sub.connectionState === 'connected', 'connected', 15_000);
  const a = sendWith(video, 1);
  await eventually(() => (sinks[0]?.packets ?? 0) >= 30, `TR_A's packets (${sinks[0]?.packets ?? 0})`, 10_000);
  assert.equal(sinks[0]!.mid, '0');

  // Alice leaves: the m-line goes inactive and carries nothing.
  a.stop();
  video.setDirection('inactive');
  sub.handleOffer(await offer({}));
  await eventually(() => sinks[0]!.ended, 'TR_A ended', 5_000);
  const aPackets = sinks[0]!.packets;

  // Bob's track reuses the m-line: same mid, same sender SSRC.
  video.setDirection('sendonly');
  const ssrc = video.sender.ssrc;
  sub.handleOffer(await offer({ '0': track('TR_B', 'bob') }));
  await eventually(() => sinks.length === 2, 'a sink for TR_B', 5_000);
  assert.equal(video.sender.ssrc, ssrc);
  sendWith(video, 2);
  await eventually(() => sinks[1]!.packets >= 30, `TR_B's packets (${sinks[1]!.packets})`, 10_000);
  assert.deepEqual({ sid: sinks[1]!.trackSid, mid: sinks[1]!.mid, sources: [...sinks[1]!.sourceIds], corrupt: sinks[1]!.corrupt }, { sid: 'TR_B', mid: '0', sources: [2], corrupt: 0 });
  assert.equal(sinks[0]!.packets, aPackets, 'the old track got nothing more');
  assert.deepEqual([...sinks[0]!.sourceIds], [1]);
  assert.deepEqual([...sub.live()].map((s) => s.trackSid), ['TR_B']);

  // Two offers before we answer (the server re-offers after a lost answer): only the second is answered.
  const before = answers.length;
  const stale = await offer({ '0': track('TR_B', 'bob') });
  const newest = await offer({ '0': track('TR_B', 'bob') });
  sub.handleOffer(stale);
  sub.handleOffer(newest);
  await eventually(() => sub.offers === 5, 'both offers handled', 5_000);
  await eventually(() => answers.length === before + 1, 'one answer', 5_000);
  assert.equal(sub.superseded, 1);
  assert.equal(server.signalingState, 'stable', 'the answer was to the newest offer');
  await eventually(() => sinks[1]!.packets >= 60, 'media after the renegotiation', 10_000);
  assert.equal(sinks.length, 2, 'the same track, no new sink');
  assert.deepEqual(problems, []);
});

test('through the SFU: a stayer gets a newcomer on the m-lines a leaver had, counted as the new tracks by TestClient and by the load tool', { timeout: 60_000 }, async () => {
  const svc = await TestService.start();
  closers.push(() => svc.close());
  const room = 'reuse';
  const stayer = await svc.join('stayer', room);
  const latency = new LatencyRecorder();
  const problems: string[] = [];
  const tool = new Participant(
    { room, identity: 'tool-stayer', publisher: false, expectedTracks: 2 },
    { wsUrls: [svc.service.wsUrl], ice: LOOPBACK_ICE, useIceServers: false, publish: { videoBitrateKbps: 300, fps: 30, audio: true }, latency, problem: (w) => problems.push(w) },
  );
  closers.push(() => tool.close());
  await tool.join(await svc.token('tool-stayer', room, ['subscribe']), 15_000);
  assert.equal(tool.state, 'joined', tool.failure);
  const liveFrom = () => [...tool.client.subscriber.live()].filter((t) => t.packets > 0).map((t) => `${t.identity}/${t.video ? 'video' : 'audio'}`).sort();

  const first = await svc.join('first', room);
  await first.publishTracks([{ kind: 'audio' }, { kind: 'video' }]);
  const firstVideo = await stayer.waitForTrackFrom('first', 'video', { minPackets: 20, minVerified: 20 });
  const firstAudio = await stayer.waitForTrackFrom('first', 'audio', { minPackets: 20 });
  await eventually(() => liveFrom().join() === 'first/audio,first/video', `the load tool's participant receives first (${liveFrom()})`, 10_000);
  await first.close({ leave: true });
  await stayer.waitForNoTrackFrom('first');
  const firstPackets = firstVideo.packets;

  const second = await svc.join('second', room);
  const secondLocals = await second.publishTracks([{ kind: 'audio' }, { kind: 'video' }]);
  const secondLocal = secondLocals[1];
  await Promise.all(secondLocals.map((t) => second.waitForTrackSid(t)));
  // Our own track_published names the mid on our publisher connection (tied by it, not by kind and name).
  assert.deepEqual(secondLocals.map((t) => t.info?.mid), secondLocals.map((t) => t.mid));
  const secondVideo = await stayer.waitForTrackFrom('second', 'video', { minPackets: 30, minVerified: 30 });
  const secondAudio = await stayer.waitForTrackFrom('second', 'audio', { minPackets: 30 });
  // The SFU reused the leaver's m-lines: same mids, no new transceivers.
  assert.deepEqual([secondVideo.mid, secondAudio.mid], [firstVideo.mid, firstAudio.mid]);
  assert.equal(stayer.subscriberPc!.getTransceivers().length, 2);
  assert.deepEqual([...secondVideo.sourceIds], [secondLocal!.sourceId], 'the new track carries the newcomer\'s payloads');
  assert.equal(secondVideo.corrupt, 0);
  assert.ok(firstVideo.ended && firstVideo.packets === firstPackets, 'the leaver\'s track got nothing more');
  // The load tool counts the reused m-lines as the newcomer's tracks, four tracks in all.
  await eventually(() => liveFrom().join() === 'second/audio,second/video', `the load tool's participant receives second (${liveFrom()})`, 10_000);
  assert.deepEqual(tool.tracks.map((t) => t.identity).sort(), ['first', 'first', 'second', 'second']);
  assert.ok(latency.window.count > 0, 'one-way delay measured from the send time in the payloads');
  assert.deepEqual(problems, []);
  await Promise.all([stayer.close({ leave: true }), second.close({ leave: true }), tool.close()]);
});
