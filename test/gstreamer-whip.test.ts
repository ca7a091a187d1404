/**
 * Interop with a real WHIP publisher: GStreamer's webrtcbin (Debian's GStreamer 1.22) in
 * max-bundle mode, as GStreamer's own WHIP elements use it, publishing VP8 and Opus
 * (test/helpers/gst-webrtc-http.py). Its offer's second section is
 * `m=audio 0 … a=bundle-only` with `OPUS` in capitals; a werift WHEP player, a WebSocket
 * participant and webrtcbin as a max-bundle WHEP player must all get its video and its
 * audio.
 *
 * libnice gathers no candidates on loopback interfaces, so inside the test runner's
 * loopback-only namespace this file adds an interface of its own (a bridge without ports,
 * 198.18.0.1/24, benchmark space): still nothing can leave the namespace.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { RTCPeerConnection, type MediaStreamTrack, type RTCRtpTransceiver } from 'werift';
import { LOOPBACK_ICE, peerConfig } from '../src/node-client/peer-config.ts';
import type { EdgeService } from '../src/edge/edge-service.ts';
import type { Service } from '../src/service.ts';
import type { RemoteTrack } from './helpers/client.ts';
import { eventually, TestService } from './helpers/service.ts';

const GST_CLIENT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'helpers', 'gst-webrtc-http.py');
const IFACE = 'scv-gst0';
const IFACE_ADDRESS = '198.18.0.1/24';
const ROOM = 'gst-whip';

/** A python3 that has GStreamer's introspection data and webrtcbin (Debian's, not a pyenv one). */
function gstPython(): string {
  const probe = "import gi; gi.require_version('Gst','1.0'); gi.require_version('GstWebRTC','1.0'); from gi.repository import Gst; Gst.init(None); assert Gst.ElementFactory.find('webrtcbin') and Gst.ElementFactory.find('nicesrc')";
  for (const python of ['/usr/bin/python3', 'python3']) {
    if (spawnSync(python, ['-c', probe], { stdio: 'ignore' }).status === 0) return python;
  }
  throw new Error(
    'no python3 with GStreamer webrtcbin: install gstreamer1.0-plugins-bad, gstreamer1.0-nice and python3-gst-1.0 (scripts/install-system-deps.sh)',
  );
}

function ip(...args: string[]): { status: number | null; stderr: string } {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  return { status: r.status, stderr: r.stderr };
}

/** What the publisher script reports, one JSON object per line. */
type PublisherEvent =
  | { event: 'offer'; sdp: string }
  | { event: 'answer'; status: number; location: string | null; sdp: string }
  | { event: 'ice'; state: string }
  | { event: 'rtp'; video: GstReceived; audio: GstReceived }
  | { event: 'error'; message: string };

interface GstReceived {
  packets: number;
  payload_types: number[];
}

/** test/helpers/gst-webrtc-http.py as a WHIP publisher or a WHEP player. */
class GstClient {
  readonly child: ChildProcess;
  readonly events: PublisherEvent[] = [];
  stderr = '';
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;

  constructor(python: string, role: 'publish' | 'play', url: string, token: string) {
    this.child = spawn(python, [GST_CLIENT, role, url, token], { stdio: ['ignore', 'pipe', 'pipe'] });
    let partial = '';
    this.child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) if (line.trim() !== '') this.events.push(JSON.parse(line) as PublisherEvent);
    });
    this.child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr = (this.stderr + chunk).slice(-4000);
    });
    this.child.on('exit', (code, signal) => {
      this.exit = { code, signal };
    });
  }

  event<E extends PublisherEvent['event']>(name: E): Extract<PublisherEvent, { event: E }> | undefined {
    return this.events.find((e) => e.event === name) as Extract<PublisherEvent, { event: E }> | undefined;
  }

  /** The latest `rtp` report (players). */
  get received(): Extract<PublisherEvent, { event: 'rtp' }> | undefined {
    return this.events.findLast((e) => e.event === 'rtp') as Extract<PublisherEvent, { event: 'rtp' }> | undefined;
  }

  /** Waits for the WHIP/WHEP answer; fails with what the script said if it never came. */
  async answered(): Promise<Extract<PublisherEvent, { event: 'answer' }>> {
    await eventually(() => this.event('answer') !== undefined || this.exit !== undefined, 'the answer', 20_000).catch(() => {});
    const answer = this.event('answer');
    assert.ok(answer !== undefined, this.describe());
    return answer;
  }

  describe(): string {
    const events = this.events.filter((e) => e.event === 'error' || e.event === 'ice').map((e) => JSON.stringify(e));
    return `GStreamer events: ${events.join(' ')}; last rtp ${JSON.stringify(this.received)}; exit ${JSON.stringify(this.exit)}; stderr: ${this.stderr.slice(-1500)}`;
  }

  /** SIGTERM: the script DELETEs its session and exits 0. */
  async stop(): Promise<void> {
    if (this.exit === undefined) {
      this.child.kill('SIGTERM');
      await eventually(() => this.exit !== undefined, 'GStreamer publisher exit', 10_000);
    }
  }
}

/** The payload type each m-section of an SDP maps `codec` (any letter case) to. */
function payloadTypeOf(sdp: string, kind: 'audio' | 'video', codec: string): number | undefined {
  const section = sdp.split(/\r\n(?=m=)/).find((s) => s.startsWith(`m=${kind} `));
  const m = section === undefined ? null : new RegExp(`^a=rtpmap:(\\d+) ${codec}/`, 'im').exec(section);
  return m === null ? undefined : Number(m[1]);
}

/** Counts RTP packets and their payload types on every receiving transceiver of `kind`. */
class Received {
  packets = 0;
  readonly payloadTypes = new Set<number>();
  private readonly hooked = new WeakSet<MediaStreamTrack>();

  hook(track: MediaStreamTrack): void {
    if (this.hooked.has(track)) return;
    this.hooked.add(track);
    track.onReceiveRtp.subscribe((rtp) => {
      this.packets++;
      this.payloadTypes.add(rtp.header.payloadType);
    });
  }

  hookTransceiver(t: RTCRtpTransceiver): void {
    t.onTrack.subscribe((track) => this.hook(track));
    for (const track of t.receiver.tracks) this.hook(track);
  }
}

/** A WHEP player: one werift PeerConnection receiving audio and video over HTTP. */
class WhepPlayer {
  readonly pc = new RTCPeerConnection({ ...peerConfig('subscriber', LOOPBACK_ICE), iceServers: [] });
  readonly audio = new Received();
  readonly video = new Received();
  answer = '';
  private readonly transceivers = {
    video: this.pc.addTransceiver('video', { direction: 'recvonly' }),
    audio: this.pc.addTransceiver('audio', { direction: 'recvonly' }),
  };

  async play(svc: TestService<Service | EdgeService>, url: string, token: string): Promise<void> {
    await this.pc.setLocalDescription(await this.pc.createOffer());
    const res = await svc.fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/sdp', authorization: `Bearer ${token}` },
      body: this.pc.localDescription!.sdp,
    });
    assert.equal(res.status, 201, `WHEP POST: ${JSON.stringify(res.body)}`);
    this.answer = String(res.body);
    await this.pc.setRemoteDescription({ type: 'answer', sdp: this.answer });
    this.video.hookTransceiver(this.transceivers.video);
    this.audio.hookTransceiver(this.transceivers.audio);
  }

  async close(): Promise<void> {
    await this.pc.close().catch(() => {});
  }
}

const inNetns = process.env.TEST_NETNS === '1';

describe('GStreamer webrtcbin as a WHIP publisher (max-bundle)', { skip: inNetns ? false : 'needs the test runner’s private network namespace (npm test)' }, () => {
  let svc: TestService<Service | EdgeService>;
  let python: string;
  let addedIface = false;
  let publisher: GstClient;
  let answer: Extract<PublisherEvent, { event: 'answer' }>;
  let offer: string;
  const cleanups: (() => Promise<void>)[] = [];

  before(async () => {
    python = gstPython();
    const added = ip('link', 'add', IFACE, 'type', 'bridge');
    if (added.status !== 0 && !added.stderr.includes('File exists')) throw new Error(`ip link add ${IFACE}: ${added.stderr}`);
    addedIface = added.status === 0;
    for (const args of [
      ['addr', 'replace', IFACE_ADDRESS, 'dev', IFACE],
      ['link', 'set', IFACE, 'up'],
    ]) {
      const r = ip(...args);
      if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
    }
    svc = await TestService.startEither();
  });

  after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {});
    await svc?.close();
    if (addedIface) ip('link', 'del', IFACE);
  });

  test('its offer (bundle-only Opus in capitals) is answered with both sections active and bundled', async () => {
    publisher = new GstClient(python, 'publish', `${svc.httpUrl}/whip/${ROOM}`, await svc.token('gst', ROOM, ['publish']));
    cleanups.push(() => publisher.stop());
    answer = await publisher.answered();
    assert.equal(answer.status, 201);
    offer = publisher.event('offer')!.sdp;
    // What makes this publisher special: its audio section is bundle-only, its codec name in capitals.
    assert.match(offer, /^m=audio 0 /m);
    assert.match(offer, /^a=bundle-only$/m);
    assert.match(offer, /^a=rtpmap:\d+ OPUS\/48000\/2$/m);
    assert.match(answer.sdp, /^a=group:BUNDLE video0 audio1$/m, answer.sdp);
    assert.doesNotMatch(answer.sdp, /^m=audio 0 /m, answer.sdp);
    assert.doesNotMatch(answer.sdp, /^a=inactive$/m, answer.sdp);
    assert.equal(payloadTypeOf(answer.sdp, 'video', 'VP8'), payloadTypeOf(offer, 'video', 'VP8'), answer.sdp);
    assert.equal(payloadTypeOf(answer.sdp, 'audio', 'opus'), payloadTypeOf(offer, 'audio', 'opus'), answer.sdp);
  });

  test('a WebSocket participant receives its VP8 video and its Opus audio', { timeout: 60_000 }, async () => {
    const watcher = await svc.join('watcher', ROOM, { grants: ['subscribe'] });
    // Tracks published before the join are in `joined`, later ones come as track_published.
    const published = () => [
      ...(watcher.joined?.room.participants.find((p) => p.identity === 'gst')?.tracks ?? []),
      ...watcher.eventsOf('track_published').filter((e) => e.identity === 'gst').map((e) => e.track),
    ];
    await watcher.waitUntil(() => published().length >= 2, 30_000, () => `two tracks published by gst (${publisher.describe()})`);
    assert.deepEqual(published().map((t) => `${t.kind}/${t.codec}`).sort(), ['audio/opus', 'video/vp8']);
    const video = await watcher.waitForTrackFrom('gst', 'video', { minPackets: 30, minKeyframes: 1, timeoutMs: 30_000 });
    const audio = await watcher.waitForTrackFrom('gst', 'audio', { minPackets: 50, timeoutMs: 30_000 });
    const videoPts = new Received();
    const audioPts = new Received();
    videoPts.hookTransceiver(video.transceiver);
    audioPts.hookTransceiver(audio.transceiver);
    await eventually(() => videoPts.packets >= 10 && audioPts.packets >= 10, `more media (video ${videoPts.packets}, audio ${audioPts.packets})`, 15_000);
    // Every packet carries the payload type the subscriber connection negotiated.
    const negotiated = (rec: RemoteTrack, mime: string) => rec.transceiver.codecs.find((c) => c.mimeType.toLowerCase() === mime)?.payloadType;
    assert.deepEqual([...videoPts.payloadTypes], [negotiated(video, 'video/vp8')]);
    assert.deepEqual([...audioPts.payloadTypes], [negotiated(audio, 'audio/opus')]);
    assert.equal(video.codec, 'vp8');
    assert.equal(audio.codec, 'opus');
  });

  test('a WHEP player receives its VP8 video and its Opus audio', { timeout: 60_000 }, async () => {
    const player = new WhepPlayer();
    cleanups.push(() => player.close());
    await player.play(svc, `/whep/${ROOM}/gst`, await svc.token('viewer', ROOM, ['subscribe']));
    const videoPt = payloadTypeOf(player.answer, 'video', 'VP8');
    const audioPt = payloadTypeOf(player.answer, 'audio', 'opus');
    assert.ok(videoPt !== undefined && audioPt !== undefined, player.answer);
    await eventually(
      () => player.video.packets >= 30 && player.audio.packets >= 50,
      `WHEP media from gst (video ${player.video.packets}, audio ${player.audio.packets})`,
      30_000,
    );
    assert.deepEqual([...player.video.payloadTypes], [videoPt]);
    assert.deepEqual([...player.audio.payloadTypes], [audioPt]);
  });

  test('webrtcbin as a max-bundle WHEP player (bundle-only audio) receives both too', { timeout: 60_000 }, async () => {
    const player = new GstClient(python, 'play', `${svc.httpUrl}/whep/${ROOM}/gst`, await svc.token('gst-viewer', ROOM, ['subscribe']));
    cleanups.push(() => player.stop());
    const played = await player.answered();
    assert.equal(played.status, 201);
    assert.match(player.event('offer')!.sdp, /^m=audio 0 [^\r]*\r\n(?:[^m][^\r]*\r\n)*a=bundle-only\r$/m);
    assert.match(played.sdp, /^a=group:BUNDLE video0 audio1$/m, played.sdp);
    const videoPt = payloadTypeOf(played.sdp, 'video', 'VP8');
    const audioPt = payloadTypeOf(played.sdp, 'audio', 'opus');
    await eventually(
      () => (player.received?.video.packets ?? 0) >= 30 && (player.received?.audio.packets ?? 0) >= 50,
      `media at the GStreamer player (${player.describe()})`,
      30_000,
    );
    assert.deepEqual(player.received!.video.payload_types, [videoPt]);
    assert.deepEqual(player.received!.audio.payload_types, [audioPt]);
  });

  test('ending the publisher (it DELETEs its session) removes it from the room for everyone', async () => {
    const watcher = await svc.join('watcher-2', ROOM, { grants: ['subscribe'] });
    await publisher.stop();
    assert.equal(publisher.exit?.code, 0, publisher.describe());
    await watcher.waitUntil(() => watcher.eventsOf('participant_left').find((e) => e.identity === 'gst'), 15_000, () => 'gst leaving');
  });
});
