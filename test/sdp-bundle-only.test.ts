/**
 * RFC 8843 bundle-only m-sections and codec names in any letter case: the offer GStreamer
 * 1.22's webrtcbin makes in max-bundle mode (as its WHIP elements use it), answered by the
 * real service over WHIP, and by a werift PeerConnection as the service configures it.
 * The end-to-end media test with the real GStreamer is test/gstreamer-whip.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { RTCPeerConnection } from 'werift';
import { codecsFor } from '../src/sfu/media-config.ts';
import { mediaSections } from '../src/sfu/sdp.ts';
import { TestService } from './helpers/service.ts';

/** webrtcbin's offer (bundle-policy=max-bundle, VP8 + Opus), as captured; candidates left out. */
const GST_OFFER = [
  'v=0',
  'o=- 7942915690572160938 0 IN IP4 0.0.0.0',
  's=-',
  't=0 0',
  'a=ice-options:trickle',
  'a=group:BUNDLE video0 audio1',
  'm=video 9 UDP/TLS/RTP/SAVPF 96',
  'c=IN IP4 0.0.0.0',
  'a=setup:actpass',
  'a=ice-ufrag:THtqmMNC6R6SKaSoWPSgAnlsQbgU5j8y',
  'a=ice-pwd:lXpYKnRphR8G6Ta/vfgTFwgGi4pML4a2',
  'a=rtcp-mux',
  'a=rtcp-rsize',
  'a=sendrecv',
  'a=rtpmap:96 VP8/90000',
  'a=rtcp-fb:96 nack pli',
  'a=rtcp-fb:96 ccm fir',
  'a=rtcp-fb:96 transport-cc',
  'a=framerate:15',
  'a=ssrc:3794759431 msid:user2253710975@host-1c2f0d84 webrtctransceiver0',
  'a=ssrc:3794759431 cname:user2253710975@host-1c2f0d84',
  'a=mid:video0',
  'a=fingerprint:sha-256 30:40:8E:61:23:44:F9:F1:FF:4F:53:A9:41:F4:CD:25:47:14:74:71:77:3D:F8:9A:E1:EE:65:79:B5:97:D2:D8',
  'a=rtcp-mux-only',
  'm=audio 0 UDP/TLS/RTP/SAVPF 111',
  'c=IN IP4 0.0.0.0',
  'a=setup:actpass',
  'a=ice-ufrag:THtqmMNC6R6SKaSoWPSgAnlsQbgU5j8y',
  'a=ice-pwd:lXpYKnRphR8G6Ta/vfgTFwgGi4pML4a2',
  'a=bundle-only',
  'a=rtcp-mux',
  'a=rtcp-rsize',
  'a=sendrecv',
  'a=rtpmap:111 OPUS/48000/2',
  'a=rtcp-fb:111 transport-cc',
  'a=fmtp:111 sprop-stereo=0;sprop-maxcapturerate=48000',
  'a=ssrc:3545946843 msid:user2253710975@host-1c2f0d84 webrtctransceiver1',
  'a=ssrc:3545946843 cname:user2253710975@host-1c2f0d84',
  'a=mid:audio1',
  'a=fingerprint:sha-256 30:40:8E:61:23:44:F9:F1:FF:4F:53:A9:41:F4:CD:25:47:14:74:71:77:3D:F8:9A:E1:EE:65:79:B5:97:D2:D8',
  'a=rtcp-mux-only',
  '',
].join('\r\n');

/**
 * The same offer as RFC 8843 §7.2 has an offerer write it: the bundle-only section carries
 * none of the transport attributes (ICE, DTLS), they are the BUNDLE tag's.
 */
const STRICT_OFFER = GST_OFFER.split('\r\n')
  .filter((line, i, lines) => {
    const inAudio = lines.slice(0, i).some((l) => l.startsWith('m=audio'));
    return !inAudio || !/^a=(ice-ufrag|ice-pwd|fingerprint|setup):/.test(line);
  })
  .join('\r\n');

interface AnswerSection {
  kind: string;
  port: number;
  mid: string | undefined;
  direction: string | undefined;
  rtpmaps: string[];
}

function answerSections(sdp: string): { bundle: string[]; sections: AnswerSection[] } {
  const bundle = /^a=group:BUNDLE (.*)$/m.exec(sdp)?.[1]?.trim().split(' ') ?? [];
  const sections = sdp
    .split(/\r\n(?=m=)/)
    .slice(1)
    .map((block) => {
      const lines = block.split('\r\n');
      const [kind, port] = lines[0]!.slice(2).split(' ');
      return {
        kind: kind!,
        port: Number(port),
        mid: lines.find((l) => l.startsWith('a=mid:'))?.slice(6),
        direction: lines.find((l) => /^a=(sendrecv|sendonly|recvonly|inactive)$/.test(l))?.slice(2),
        rtpmaps: lines.filter((l) => l.startsWith('a=rtpmap:')).map((l) => l.slice(9)),
      };
    });
  return { bundle, sections };
}

/** The checks of an answer to a publisher's VP8 + bundle-only Opus offer. */
function assertBothSectionsAccepted(answer: string): void {
  const { bundle, sections } = answerSections(answer);
  const audio = sections.find((s) => s.kind === 'audio');
  const video = sections.find((s) => s.kind === 'video');
  assert.ok(audio !== undefined && video !== undefined, answer);
  assert.equal(video.direction, 'recvonly', answer);
  // RFC 8843: accepted and bundled — a port, a receiving direction, a member of the group.
  assert.notEqual(audio.port, 0, `audio section rejected:\n${answer}`);
  assert.equal(audio.direction, 'recvonly', answer);
  assert.deepEqual(bundle, ['video0', 'audio1'], answer);
  assert.deepEqual(audio.rtpmaps, ['111 OPUS/48000/2'], answer);
  assert.deepEqual(video.rtpmaps, ['96 VP8/90000'], answer);
}

describe('bundle-only sections and codec letter case', () => {
  let svc: TestService;
  before(async () => {
    svc = await TestService.start();
  });
  after(async () => {
    await svc.close();
  });

  async function whip(room: string, sdp: string): Promise<{ status: number; body: any }> {
    const token = await svc.token('gst', room, ['publish']);
    return svc.fetch(`/whip/${room}`, {
      method: 'POST',
      headers: { 'content-type': 'application/sdp', authorization: `Bearer ${token}` },
      body: sdp,
    });
  }

  test("WHIP answers GStreamer's max-bundle offer with its bundle-only Opus section active and bundled", async () => {
    const res = await whip('bundle-only', GST_OFFER);
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assertBothSectionsAccepted(res.body);
  });

  test('a bundle-only section without transport attributes of its own (RFC 8843 §7.2) is accepted too', async () => {
    assert.doesNotMatch(STRICT_OFFER.split('m=audio')[1]!, /a=(ice-ufrag|ice-pwd|fingerprint|setup):/);
    const res = await whip('bundle-only-strict', STRICT_OFFER);
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assertBothSectionsAccepted(res.body);
  });

  test('WHEP answers a max-bundle player offer (bundle-only audio) with audio it sends', async () => {
    const alice = await svc.join('alice', 'bundle-only-whep');
    for (const t of await alice.publishTracks([{ kind: 'video' }, { kind: 'audio' }])) await alice.waitForTrackSid(t);
    // webrtcbin as a player: the same sections, receive-only, no sources of its own.
    const playerOffer = GST_OFFER.replaceAll('a=sendrecv', 'a=recvonly')
      .split('\r\n')
      .filter((l) => !l.startsWith('a=ssrc:'))
      .join('\r\n');
    const token = await svc.token('viewer', 'bundle-only-whep', ['subscribe']);
    const res = await svc.fetch('/whep/bundle-only-whep/alice', {
      method: 'POST',
      headers: { 'content-type': 'application/sdp', authorization: `Bearer ${token}` },
      body: playerOffer,
    });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    const { bundle, sections } = answerSections(res.body);
    const audio = sections.find((s) => s.kind === 'audio');
    assert.ok(audio !== undefined, res.body);
    assert.notEqual(audio.port, 0, res.body);
    assert.equal(audio.direction, 'sendonly', res.body);
    assert.match(audio.rtpmaps.join(), /^\d+ opus\/48000\/2$/i, res.body);
    assert.equal(sections.find((s) => s.kind === 'video')?.direction, 'sendonly', res.body);
    assert.deepEqual(bundle, ['video0', 'audio1'], res.body);
  });

  test('a WebSocket publisher offer with a bundle-only section is answered the same way', async () => {
    const client = await svc.join('ws-gst', 'bundle-only-ws', { grants: ['publish'] });
    const reply = await client.call({ type: 'offer', target: 'publisher', sdp: GST_OFFER });
    assert.equal(reply.type, 'answer', JSON.stringify(reply));
    assertBothSectionsAccepted((reply as { sdp: string }).sdp);
    const own = (type: 'track_published' | 'track_unpublished') => client.eventsOf(type).filter((e) => e.identity === 'ws-gst');
    await client.waitUntil(() => own('track_published').length === 2 || undefined, 10_000, () => 'both tracks published');
    // A re-offer that still sends on the bundle-only section keeps its track (the server
    // unpublishes tracks whose section a re-offer stops, before it answers).
    const again = await client.call({ type: 'offer', target: 'publisher', sdp: GST_OFFER.replace(/^o=- (\d+) 0/m, 'o=- $1 1') });
    assert.equal(again.type, 'answer', JSON.stringify(again));
    assert.deepEqual(own('track_unpublished'), []);
  });

  test('without BUNDLE (bundlePolicy disable) a bundle-only section stays rejected', async () => {
    const pc = new RTCPeerConnection({ bundlePolicy: 'disable', codecs: codecsFor(['opus', 'vp8']) });
    try {
      await pc.setRemoteDescription({ type: 'offer', sdp: GST_OFFER });
      await pc.setLocalDescription(await pc.createAnswer());
      const { sections } = answerSections(pc.localDescription!.sdp);
      assert.equal(sections.find((s) => s.kind === 'audio')?.port, 0, pc.localDescription!.sdp);
      assert.notEqual(sections.find((s) => s.kind === 'video')?.port, 0, pc.localDescription!.sdp);
    } finally {
      await pc.close();
    }
  });

  test('mediaSections: a bundle-only member of a BUNDLE group is live; other port-0 sections are stopped', () => {
    assert.deepEqual(
      mediaSections(GST_OFFER).map((s) => [s.kind, s.mid, s.direction, s.stopped]),
      [
        ['video', 'video0', 'sendrecv', false],
        ['audio', 'audio1', 'sendrecv', false],
      ],
    );
    // Not bundle-only: a port-0 section is rejected, BUNDLE group or not.
    assert.equal(mediaSections(GST_OFFER.replace('a=bundle-only\r\n', ''))[1]?.stopped, true);
    // Bundle-only outside any BUNDLE group: nothing to bundle it with.
    assert.equal(mediaSections(GST_OFFER.replace('a=group:BUNDLE video0 audio1\r\n', ''))[1]?.stopped, true);
    // A group whose every member has port 0 has no transport to share.
    assert.equal(mediaSections(GST_OFFER.replace('m=video 9 ', 'm=video 0 '))[1]?.stopped, true);
  });
});
