/**
 * End-to-end encryption and recording with real Chromium pages (the call page and the SDK)
 * against the real service.
 *
 * - A plain room is recorded for about 10 s through the HTTP API while one page leaves and
 *   another joins: every file is read back by `ffprobe -count_frames` (VP8 + Opus, the
 *   duration of its metadata within a second, at least 80% of the frames the page encoded
 *   in that span decoded); then the same room is recorded from the page's Record button
 *   (signaling, the record grant).
 * - An E2EE room: pages with the same passphrase decode each other (one through
 *   `RTCRtpScriptTransform`, one through Chromium's encoded insertable streams); a werift
 *   subscriber in the room gets only ciphertext past the clear header (frame by frame:
 *   the trailer, decryption with the right key, the plaintext nowhere on the wire); a page
 *   with the wrong passphrase decodes nothing and is told, without harm to the others;
 *   recording is refused over HTTP and over signaling.
 * - The SDK used directly: raw key material, key rotation without a gap, and publishing
 *   without a key refused.
 *
 * At most four pages at once (two cores run the SFU and every page).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import type { Browser } from 'playwright-core';
import type { RtpPacket } from 'werift';
import { clearBytes, DecryptError, decryptFrame, deriveKey } from '../client/e2ee/frame-crypto.ts';
import { buildWeb } from '../scripts/build-web.ts';
import { assertReceives, CallPage, launchChromium } from './browser/call-page.ts';
import { TestClient, type RemoteTrack } from './helpers/client.ts';
import { probeRecording } from './helpers/recording-probe.ts';
import { eventually, sleep, TestService } from './helpers/service.ts';

const run = promisify(execFile);
/** Where a recording that fails a check is kept, for a look after the run (CI keeps test-artifacts/). */
const ARTIFACTS = join(import.meta.dirname, '..', 'test-artifacts', 'recordings');

let svc: TestService;
let browser: Browser;
let dir: string;
const pages: CallPage[] = [];

before(async () => {
  await buildWeb();
  dir = await mkdtemp(join(tmpdir(), 'scv-rec-browser-'));
  svc = await TestService.start({ SCV_RECORDINGS_DIR: dir });
  browser = await launchChromium();
});

after(async () => {
  await Promise.all(pages.map((p) => p.close().catch(() => {})));
  await browser?.close();
  await svc?.close();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

async function open(room: string, name: string, opts: { passphrase?: string; query?: Record<string, string>; connected?: boolean } = {}): Promise<CallPage> {
  const p = await CallPage.open(browser, { baseUrl: svc.httpUrl, room, name, passphrase: opts.passphrase, query: opts.query });
  pages.push(p);
  if (opts.connected !== false) await eventually(async () => (await p.state()) === 'connected', `${name} to connect`, 15_000);
  return p;
}

async function close(p: CallPage): Promise<void> {
  await p.close();
  pages.splice(pages.indexOf(p), 1);
}

/** The identity a page's participant got (the page derives it from the name, plus a random tail). */
async function identityOf(p: CallPage, seenBy: CallPage): Promise<string> {
  let identity: string | undefined;
  await eventually(async () => {
    identity = (await seenBy.participants()).find((x) => x.name === p.name)?.identity;
    return identity !== undefined;
  }, `${seenBy.name} to see ${p.name}`);
  return identity!;
}

// ---- recording ---------------------------------------------------------------------------

/** Per stream: packets, first and last timestamp (s), and the largest gap between packets (s). */
async function packetTimes(path: string): Promise<string> {
  const { stdout } = await run('ffprobe', ['-v', 'error', '-show_entries', 'packet=stream_index,pts_time', '-of', 'csv=p=0', path]);
  const byStream = new Map<string, number[]>();
  for (const line of stdout.split('\n')) {
    const [stream, pts] = line.split(',');
    if (stream === undefined || pts === undefined || pts === '' || Number.isNaN(Number(pts))) continue;
    let list = byStream.get(stream);
    if (list === undefined) byStream.set(stream, (list = []));
    list.push(Number(pts));
  }
  return [...byStream]
    .map(([stream, ts]) => {
      ts.sort((a, b) => a - b);
      let gap = 0;
      for (let i = 1; i < ts.length; i++) gap = Math.max(gap, ts[i]! - ts[i - 1]!);
      return `stream ${stream}: ${ts.length} packets ${ts[0]?.toFixed(3)}…${ts[ts.length - 1]?.toFixed(3)} s, largest gap ${gap.toFixed(3)} s`;
    })
    .join('; ');
}

/**
 * Samples every 400 ms, with the time of each sample, how many video frames each page has
 * encoded and sent (outbound-rtp `framesEncoded`) and decoded of each other page
 * (inbound-rtp `framesDecoded`), so the frames sent or decoded during any time span can be
 * read back by interpolation. What the other pages decoded of a publisher in a file's span
 * is the control for the recorder: the same packets, through the SFU to a browser.
 */
class FrameCounter {
  /** Per page: series `sent` and `from:<name>`. */
  private readonly samples = new Map<CallPage, Map<string, { t: number; frames: number }[]>>();
  private stopped = false;
  private readonly loop: Promise<void>;
  private readonly pages: () => CallPage[];

  constructor(pages: () => CallPage[]) {
    this.pages = pages;
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      await Promise.all(
        this.pages().map(async (p) => {
          const before = Date.now();
          const read = await Promise.all([p.stats(), p.participants()]).catch(() => undefined);
          if (read === undefined) return;
          const t = (before + Date.now()) / 2;
          const [stats, people] = read;
          let series = this.samples.get(p);
          if (series === undefined) this.samples.set(p, (series = new Map()));
          const add = (key: string, frames: number | undefined) => {
            if (frames === undefined) return;
            let list = series.get(key);
            if (list === undefined) series.set(key, (list = []));
            list.push({ t, frames });
          };
          for (const st of stats) {
            const frames = st.tracks.find((x) => x.kind === 'video')?.frames;
            if (st.local) add('sent', frames);
            else add(`from:${people.find((x) => x.sid === st.participantSid)?.name}`, frames);
          }
        }),
      );
      await sleep(400);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }

  /** Frames of series `key` (`sent`, `from:<name>`) of page `p` between `from` and `to` (ms since the epoch). */
  between(p: CallPage, key: string, from: number, to: number): number {
    const s = this.samples.get(p)?.get(key) ?? [];
    const at = (t: number): number => {
      if (s.length === 0) return 0;
      if (t <= s[0]!.t) return s[0]!.frames;
      for (let i = 1; i < s.length; i++) {
        const a = s[i - 1]!;
        const b = s[i]!;
        if (t <= b.t) return a.frames + ((b.frames - a.frames) * (t - a.t)) / (b.t - a.t);
      }
      return s[s.length - 1]!.frames;
    };
    return at(to) - at(from);
  }
}

describe('recording a call of Chromium pages', () => {
  test('a plain room recorded for ~10 s over HTTP: one playable WebM per page, the right duration, ≥ 80% of the frames sent; a leaver and a joiner included', { timeout: 150_000 }, async (t) => {
    const room = 'recorded-call';
    const alice = await open(room, 'Alice', { query: { grants: 'publish,subscribe,record' } });
    const bob = await open(room, 'Bob');
    await Promise.all([assertReceives(alice, 'Bob'), assertReceives(bob, 'Alice')]);
    assert.equal((await alice.e2ee()).enabled, false);
    assert.ok(await alice.page.locator('#e2ee-badge').isHidden(), 'no E2EE badge in a plain room');

    const live: CallPage[] = [alice, bob];
    const counter = new FrameCounter(() => live);
    const recorder = { authorization: `Bearer ${await svc.token('rec', room, ['record'])}` };
    const started = await svc.fetch(`/video/rooms/${room}/recording`, { method: 'POST', headers: recorder });
    assert.equal(started.status, 201, JSON.stringify(started.body));
    const id = started.body.id as string;
    await eventually(async () => (await alice.recording()) && (await bob.recording()), 'both pages to learn the room is recorded');
    assert.ok(await bob.page.locator('#recording-badge').isVisible(), 'the recording badge shows');

    await sleep(3_500);
    const carol = await open(room, 'Carol', { connected: false }); // joins mid-recording
    live.push(carol);
    await eventually(async () => (await carol.state()) === 'connected', 'Carol to connect', 15_000);
    await eventually(async () => carol.recording(), 'Carol to learn the room is recorded on joining');
    await assertReceives(alice, 'Carol');
    await sleep(2_000);
    await bob.page.click('#leave-button'); // leaves mid-recording
    const bobLeft = Date.now();
    live.splice(live.indexOf(bob), 1);
    await sleep(3_500);
    const stopped = await svc.fetch(`/video/rooms/${room}/recording`, { method: 'DELETE', headers: recorder });
    assert.equal(stopped.status, 200, JSON.stringify(stopped.body));
    await eventually(async () => !(await alice.recording()) && !(await carol.recording()), 'the pages to learn the recording stopped');
    assert.ok(await alice.page.locator('#recording-badge').isHidden());
    await counter.stop();

    const meta = (await svc.fetch(`/video/recordings/${id}`, { headers: recorder })).body;
    const byPrefix = (identity: string) => [alice, bob, carol].find((p) => identity.startsWith(`${p.name.toLowerCase()}-`));
    assert.deepEqual(meta.files.map((f: { identity: string }) => byPrefix(f.identity)?.name).sort(), ['Alice', 'Bob', 'Carol'], JSON.stringify(meta.files));
    for (const f of meta.files as { identity: string; file: string; startedAt: string; endedAt: string; codecs: string[] }[]) {
      const page = byPrefix(f.identity)!;
      assert.deepEqual([...f.codecs].sort(), ['opus', 'vp8'], `${f.file}: codecs ${f.codecs}`);
      const { duration, truth, from, to, videoFrames: decoded, audioFrames } = await probeRecording(join(dir, id, f.file), f);
      const sent = counter.between(page, 'sent', from, to);
      // The control: what the other pages' decoders made of the same publisher in that span.
      const control = [alice, bob, carol]
        .filter((p) => p !== page)
        .map((p) => `${p.name} ${counter.between(p, `from:${page.name}`, from, to).toFixed(0)}`)
        .join(', ');
      t.diagnostic(
        `${page.name}: ${f.file} duration ${duration.toFixed(2)} s (metadata ${truth.toFixed(2)} s), video ${decoded} frames decoded of ${sent.toFixed(0)} sent (${((100 * decoded) / sent).toFixed(0)}%; decoded in that span by ${control}), audio ${audioFrames} frames`,
      );
      const fail = async (what: string): Promise<never> => {
        await mkdir(ARTIFACTS, { recursive: true });
        await copyFile(join(dir, id, f.file), join(ARTIFACTS, f.file));
        assert.fail(`${f.file}: ${what} (${f.startedAt} … ${f.endedAt}); ${await packetTimes(join(dir, id, f.file))}; decoded by the other pages: ${control}; kept in ${ARTIFACTS}`);
      };
      if (Math.abs(duration - truth) > 1) await fail(`duration ${duration} s vs ${truth} s recorded`);
      assert.ok(sent > 50, `${f.file}: ${page.name} sent only ${sent} frames in the file's span`);
      if (decoded < 0.8 * sent) await fail(`decoded ${decoded} of ${sent.toFixed(0)} frames sent`);
      assert.ok(audioFrames >= 0.8 * truth * 50, `${f.file}: ${audioFrames} audio frames for ${truth} s`);
      if (page === bob) assert.ok(to <= bobLeft + 1000, "Bob's file ends when he leaves");
      if (page === carol) assert.ok(from > Date.parse(meta.startedAt) + 2000, "Carol's file starts when she joined");
    }

    // The other way in: Alice (record grant) starts and stops it from the page, over signaling.
    const button = alice.page.locator('#record-button');
    assert.ok(await button.isVisible(), 'a page with the record grant has a Record button');
    assert.ok(await carol.page.locator('#record-button').isHidden(), 'one without it has none');
    await button.click();
    await eventually(async () => (await carol.recording()) && (await alice.recording()), 'both pages to see the recording Alice started');
    assert.equal(await button.textContent(), 'Stop recording');
    await button.click();
    await eventually(async () => !(await carol.recording()) && !(await alice.recording()), 'both pages to see it stop');
    const list = (await svc.fetch('/video/recordings', { headers: recorder })).body.recordings as { id: string }[];
    assert.equal(list.length, 2, 'the HTTP one and the one started from the page');
    await Promise.all([alice, bob, carol].map((p) => close(p)));
  });
});

// ---- end-to-end encryption -----------------------------------------------------------------

/** One RTP packet as the werift subscriber got it. */
interface Captured {
  seq: number;
  ts: number;
  marker: boolean;
  payload: Buffer;
}

function capture(track: RemoteTrack): { packets: Captured[]; stop: () => void } {
  const packets: Captured[] = [];
  const recv = track.transceiver.receiver.tracks[0];
  assert.ok(recv !== undefined, `no receiving track on ${track.summary()}`);
  const sub = recv.onReceiveRtp.subscribe((rtp: RtpPacket) => {
    packets.push({ seq: rtp.header.sequenceNumber, ts: rtp.header.timestamp, marker: rtp.header.marker, payload: Buffer.from(rtp.payload) });
  });
  return { packets, stop: () => sub.unSubscribe() };
}

/** RFC 7741 payload descriptor: its length, and whether it starts a frame (S bit, partition 0). */
function vp8Descriptor(p: Buffer): { length: number; frameStart: boolean } {
  const b0 = p[0]!;
  let i = 1;
  if (b0 & 0x80) {
    const x = p[1]!;
    i = 2;
    if (x & 0x80) i += (p[i]! & 0x80) !== 0 ? 2 : 1;
    if (x & 0x40) i += 1;
    if (x & 0x30) i += 1;
  }
  return { length: i, frameStart: (b0 & 0x10) !== 0 && (b0 & 0x07) === 0 };
}

/** Whole VP8 frames (all packets of one timestamp, contiguous, start to marker) with the descriptors removed. */
function vp8Frames(packets: Captured[]): Uint8Array<ArrayBuffer>[] {
  const byTs = new Map<number, Captured[]>();
  for (const p of packets) {
    if (p.payload.length === 0) continue;
    let list = byTs.get(p.ts);
    if (list === undefined) byTs.set(p.ts, (list = []));
    if (!list.some((x) => x.seq === p.seq)) list.push(p);
  }
  const frames: Uint8Array<ArrayBuffer>[] = [];
  for (const list of byTs.values()) {
    list.sort((a, b) => ((a.seq - b.seq + 0x8000) & 0xffff) - 0x8000);
    const contiguous = list.every((p, i) => i === 0 || ((p.seq - list[i - 1]!.seq) & 0xffff) === 1);
    if (!contiguous || !vp8Descriptor(list[0]!.payload).frameStart || !list[list.length - 1]!.marker) continue;
    frames.push(Uint8Array.from(Buffer.concat(list.map((p) => p.payload.subarray(vp8Descriptor(p.payload).length)))));
  }
  return frames;
}

const isVp8Key = (frame: Uint8Array) => (frame[0]! & 0x01) === 0;

/** One VP8 frame in an IVF file, for ffmpeg. */
function ivf(frame: Uint8Array, width: number, height: number): Buffer {
  const header = Buffer.alloc(32);
  header.write('DKIF', 0, 'ascii');
  header.writeUInt16LE(0, 4);
  header.writeUInt16LE(32, 6);
  header.write('VP80', 8, 'ascii');
  header.writeUInt16LE(width, 12);
  header.writeUInt16LE(height, 14);
  header.writeUInt32LE(30, 16);
  header.writeUInt32LE(1, 20);
  header.writeUInt32LE(1, 24);
  const fh = Buffer.alloc(12);
  fh.writeUInt32LE(frame.length, 0);
  return Buffer.concat([header, fh, Buffer.from(frame)]);
}

/**
 * Decodes one VP8 frame with ffmpeg (errors fatal): the MD5 of each picture it made (none
 * when it refuses the frame), and its first error line.
 */
async function decodeVp8(frame: Uint8Array, width: number, height: number): Promise<{ pictures: string[]; error: string }> {
  const file = join(dir, `frame-${process.hrtime.bigint()}.ivf`);
  await writeFile(file, ivf(frame, width, height));
  try {
    const { stdout, stderr } = await run('ffmpeg', ['-v', 'error', '-xerror', '-err_detect', 'explode', '-i', file, '-f', 'framemd5', '-']);
    const pictures = stdout
      .split('\n')
      .filter((l) => l !== '' && !l.startsWith('#'))
      .map((l) => l.split(',').pop()!.trim());
    return { pictures, error: stderr.trim().split('\n')[0] ?? '' };
  } catch (err) {
    return { pictures: [], error: String((err as { stderr?: string }).stderr ?? err).trim().split('\n')[0] ?? '' };
  } finally {
    await rm(file, { force: true });
  }
}

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  return Buffer.from(haystack.buffer, haystack.byteOffset, haystack.byteLength).indexOf(Buffer.from(needle)) !== -1;
}

describe('an end-to-end encrypted call in Chromium', () => {
  const room = 'secret-call';
  const passphrase = 'correct horse battery staple';
  let alice: CallPage;
  let bob: CallPage;

  test('pages with the same passphrase decode each other, through RTCRtpScriptTransform and through insertable streams', async (t) => {
    // Alice may record (to be refused); Bob uses Chromium's other encoded-frame API.
    alice = await open(room, 'Alice', { passphrase, query: { grants: 'publish,subscribe,record' } });
    bob = await open(room, 'Bob', { passphrase, query: { e2eeApi: 'insertable-streams' } });
    assert.equal(svc.service.sfu.getRoom(room).e2ee, true, "the page's dev token created the room end-to-end encrypted");
    const [ae, be] = [await alice.e2ee(), await bob.e2ee()];
    assert.deepEqual(ae, { enabled: true, api: 'script-transform', keyIndex: 0 });
    assert.deepEqual(be, { enabled: true, api: 'insertable-streams', keyIndex: 0 });
    for (const p of [alice, bob]) assert.ok(await p.page.locator('#e2ee-badge').isVisible(), `${p.name} shows the E2EE badge`);
    const [ab, ba] = await Promise.all([assertReceives(alice, 'Bob', 30), assertReceives(bob, 'Alice', 30)]);
    t.diagnostic(`Alice decoded ${ab.frames} frames of Bob's video (${ab.width} px wide); Bob decoded ${ba.frames} of Alice's (${ba.width} px)`);
    assert.deepEqual(await alice.e2eeErrors(), []);
    assert.deepEqual(await bob.e2eeErrors(), []);
  });

  test('a werift subscriber in the room gets only ciphertext past the clear header', { timeout: 120_000 }, async (t) => {
    const aliceId = await identityOf(alice, bob);
    // The subscriber is the instrument here, not what is tested: if its connection does not
    // come up (seen once on a machine loaded far beyond its two cores), it gets one more go.
    let eve: TestClient | undefined;
    let video: RemoteTrack | undefined;
    let audio: RemoteTrack | undefined;
    for (let attempt = 1; video === undefined || audio === undefined; attempt++) {
      const token = await svc.service.tokens.mint({ identity: `werift-eve-${attempt}`, room, grants: ['subscribe', 'record'], e2ee: true });
      eve = svc.track(await TestClient.join({ wsUrl: svc.service.wsUrl, token, name: 'werift-eve', keepPayloads: 64 }));
      assert.equal(eve.joined!.room.e2ee, true);
      try {
        video = await eve.waitForTrackFrom(aliceId, 'video', { minPackets: 10, timeoutMs: 20_000 });
        audio = await eve.waitForTrackFrom(aliceId, 'audio', { minPackets: 10, timeoutMs: 20_000 });
      } catch (err) {
        const state = `${(err as Error).message}\n${eve.describe()}`;
        await eve.close({ leave: true });
        if (attempt === 2) assert.fail(`the werift subscriber got no media from Alice: ${state}`);
        t.diagnostic(`werift subscriber attempt ${attempt} got no media, trying again: ${state.replace(/\n/g, ' ')}`);
      }
    }
    assert.equal(video.codec, 'vp8', 'an E2EE room negotiates VP8');
    assert.equal(audio.codec, 'opus');
    // Capture until there are 30 whole frames, a keyframe and 50 Opus packets (3 s when the
    // machine keeps up; longer when the encoder slows down under load).
    const v = capture(video);
    const a = capture(audio);
    await sleep(500);
    await eve!.sendPli(video.trackSid); // a keyframe inside the capture
    const enough = () => {
      const frames = vp8Frames(v.packets);
      return frames.length >= 30 && frames.some(isVp8Key) && a.packets.length >= 50;
    };
    const end = Date.now() + 20_000;
    for (let n = 0; !enough() && Date.now() < end; n++) {
      await sleep(500);
      if (n % 6 === 5 && !vp8Frames(v.packets).some(isVp8Key)) await eve!.sendPli(video.trackSid);
    }
    v.stop();
    a.stop();

    const key = await deriveKey(passphrase, room);
    const keys = new Map([[0, key]]);
    const wrongKeys = new Map([[0, await deriveKey('not the passphrase', room)]]);

    // Video: every whole frame carries the trailer, decrypts with the room key and only with it.
    const frames = vp8Frames(v.packets);
    const keyframes = frames.filter(isVp8Key);
    assert.ok(frames.length >= 30, `only ${frames.length} whole frames in ${v.packets.length} packets`);
    assert.ok(keyframes.length >= 1, 'a keyframe was captured');
    let plainBytes = 0;
    for (const wire of frames) {
      const clear = clearBytes('video/VP8', isVp8Key(wire) ? 'video-key' : 'video-delta');
      assert.equal(wire[wire.length - 2], 12, 'trailer: IV length 12');
      assert.equal(wire[wire.length - 1], 0, 'trailer: key slot 0');
      const plain = await decryptFrame(wire, clear, keys);
      plainBytes += plain.length;
      assert.equal(wire.length, plain.length + 16 + 12 + 2, 'ciphertext = plaintext + tag + IV + 2');
      assert.deepEqual(wire.subarray(0, clear), plain.subarray(0, clear), 'the clear header is the frame header');
      await assert.rejects(decryptFrame(wire, clear, wrongKeys), (e: unknown) => e instanceof DecryptError && e.reason === 'auth-failed');
      // The plaintext after the header appears nowhere on the wire.
      if (plain.length >= clear + 24) assert.ok(!contains(wire, plain.subarray(clear, clear + 24)), 'plaintext bytes on the wire');
    }

    // A keyframe: the 10 clear bytes are a real VP8 keyframe header; the decrypted frame
    // decodes to a picture, the frame as it crossed the server does not (the decoder
    // refuses it, or, if the random bits happen to parse, makes some other picture).
    const wire = keyframes[0]!;
    assert.deepEqual([...wire.subarray(3, 6)], [0x9d, 0x01, 0x2a], 'VP8 start code in the clear');
    const width = (wire[6]! | (wire[7]! << 8)) & 0x3fff;
    const height = (wire[8]! | (wire[9]! << 8)) & 0x3fff;
    assert.ok(width > 0 && height > 0, `keyframe size ${width}x${height}`);
    const plain = await decryptFrame(wire, 10, keys);
    const decodedPlain = await decodeVp8(plain, width, height);
    const decodedWire = await decodeVp8(wire, width, height);
    assert.equal(decodedPlain.pictures.length, 1, `the decrypted keyframe decodes (${decodedPlain.error})`);
    t.diagnostic(
      `werift subscriber: ${v.packets.length} video packets → ${frames.length} whole frames (${keyframes.length} keyframes, ${width}x${height}), all with trailer [12, 0], all decrypt with the passphrase's key (${plainBytes} bytes of plaintext), none with another; ` +
        `ffmpeg's VP8 decoder on the keyframe as received: ${decodedWire.pictures.length} pictures (${decodedWire.error || 'no error'}), on the decrypted keyframe: ${decodedPlain.pictures.length}`,
    );
    assert.ok(!decodedWire.pictures.includes(decodedPlain.pictures[0]!), 'the keyframe as the server saw it decodes to the picture');

    // Audio: each RTP payload is one Opus frame: TOC byte in the clear, the rest sealed.
    const opus = a.packets.filter((p) => p.payload.length > 0);
    assert.ok(opus.length >= 50, `only ${opus.length} audio packets`);
    for (const p of opus) {
      const frame = Uint8Array.from(p.payload);
      assert.equal(frame[frame.length - 2], 12);
      assert.equal(frame[frame.length - 1], 0);
      const plainAudio = await decryptFrame(frame, clearBytes('audio/opus', 'audio'), keys);
      assert.equal(plainAudio[0], frame[0], 'the TOC byte is the clear header');
    }
    t.diagnostic(`werift subscriber: ${opus.length} Opus payloads, all with trailer [12, 0], all decrypt`);

    // Recording is refused over signaling (werift, with the record grant) as over HTTP.
    await assert.rejects(eve!.call({ type: 'recording', active: true }), (e: { code?: string }) => e.code === 'E2EE_RECORDING_FORBIDDEN');
    await eve!.close({ leave: true });
  });

  test('recording is refused: over HTTP (record grant and admin) and from the page (signaling); no recorder is created', async () => {
    const recorder = { authorization: `Bearer ${await svc.token('rec', room, ['record'])}` };
    const admin = { authorization: `Bearer ${await svc.token('ops', undefined, ['admin'])}` };
    for (const headers of [recorder, admin]) {
      const r = await svc.fetch(`/video/rooms/${room}/recording`, { method: 'POST', headers });
      assert.equal(r.status, 409, JSON.stringify(r.body));
      assert.equal(r.body.error.code, 'E2EE_RECORDING_FORBIDDEN');
    }
    const button = alice.page.locator('#record-button');
    assert.ok(await button.isVisible(), 'a page with the record grant has a Record button');
    await button.click();
    await eventually(async () => /E2EE_RECORDING_FORBIDDEN/.test((await alice.page.textContent('#message')) ?? ''), 'the refusal on the page');
    assert.match((await alice.page.textContent('#message')) ?? '', /end-to-end encrypted: the server cannot/);
    assert.equal(await alice.recording(), false);
    assert.ok(await alice.page.locator('#recording-badge').isHidden());
    assert.equal(svc.service.recordings.active(svc.service.sfu.getRoom(room)), undefined, 'no recorder was created');
  });

  test('a page with the wrong passphrase decodes nothing and is told; the others are unaffected', { timeout: 90_000 }, async (t) => {
    const aliceErrors0 = (await alice.e2eeErrors()).length;
    // Keyframe requests the SFU receives from subscribers and sends to publishers, over 4 s, before Mallory.
    const pli = async () => ({ fromSubscribers: await svc.metric('scv_plis_received_total'), toPublishers: await svc.metric('scv_keyframe_requests_sent_total') });
    const pli0 = await pli();
    await sleep(4_000);
    const pli1 = await pli();
    const mallory = await open(room, 'Mallory', { passphrase: 'wrong passphrase' });
    const malloryId = await identityOf(mallory, alice);
    await eventually(async () => (await mallory.e2eeErrors()).some((e) => e.reason === 'auth-failed'), "Mallory's e2eeError event", 15_000);
    await eventually(async () => /cannot be decrypted: their passphrase is probably different/.test((await mallory.page.textContent('#message')) ?? ''), "the message on Mallory's page");
    await eventually(async () => (await mallory.page.locator('.tile.remote[data-decrypt-failing="true"]').count()) === 2, "Mallory's two remote tiles marked");
    // Give her decoder every chance: media flows for a while, nothing decodes.
    const before = { alice: await mallory.received('Alice'), bob: await mallory.received('Bob') };
    const pli2 = await pli();
    await sleep(4_000);
    const pli3 = await pli();
    const got = { alice: await mallory.received('Alice'), bob: await mallory.received('Bob') };
    t.diagnostic(
      `keyframe requests in 4 s: before Mallory ${pli1.fromSubscribers - pli0.fromSubscribers} PLIs from subscribers, ${pli1.toPublishers - pli0.toPublishers} sent to publishers; ` +
        `with Mallory ${pli3.fromSubscribers - pli2.fromSubscribers} from subscribers, ${pli3.toPublishers - pli2.toPublishers} to publishers`,
    );
    // Her decoder asks ~10 times a second per track, and Alice's and Bob's ask for her video
    // just as often; each subscriber's backoff lets few of those through: the three
    // publishers get about one keyframe request every 2 s each (without it, two a second).
    assert.ok(pli3.toPublishers - pli2.toPublishers <= 12, `keyframe requests to publishers in 4 s with Mallory: ${pli3.toPublishers - pli2.toPublishers}`);
    for (const who of ['alice', 'bob'] as const) {
      // Not many on a loaded machine (the encoder adapts to the CPU), but media flows to her.
      assert.ok((got[who].video?.packets ?? 0) > (before[who].video?.packets ?? 0) + 20, `Mallory receives ${who}'s video packets (${JSON.stringify(got[who])})`);
      assert.ok((got[who].audio?.packets ?? 0) > (before[who].audio?.packets ?? 0) + 50, `Mallory receives ${who}'s audio packets`);
      assert.equal(got[who].video?.frames ?? 0, 0, `Mallory decoded none of ${who}'s frames`);
      assert.equal(got[who].video?.frameWidth ?? 0, 0);
    }
    const errs = await mallory.e2eeErrors();
    const whose = new Set(errs.map((e) => `${e.identity?.replace(/-[0-9a-f]{8}$/, '')}/${e.kind}/${e.reason}`));
    t.diagnostic(`Mallory: ${errs.length} e2eeError events (${[...whose].join(', ')}); received from Alice ${JSON.stringify(got.alice)}`);
    assert.ok(whose.has('alice/video/auth-failed') && whose.has('bob/video/auth-failed'), [...whose].join(', '));
    assert.equal(await mallory.state(), 'connected', 'her call goes on');
    assert.deepEqual(mallory.errors, [], 'no page errors');

    // Alice and Bob go on decoding each other, and cannot decode Mallory either.
    const [ab, ba] = await Promise.all([assertReceives(alice, 'Bob', 30), assertReceives(bob, 'Alice', 30)]);
    t.diagnostic(`meanwhile Alice decoded Bob up to frame ${ab.frames}, Bob decoded Alice up to ${ba.frames}`);
    const aliceErrors = (await alice.e2eeErrors()).slice(aliceErrors0);
    assert.ok(aliceErrors.length > 0 && aliceErrors.every((e) => e.identity === malloryId), `Alice's errors name only Mallory: ${JSON.stringify(aliceErrors)}`);
    assert.equal((await alice.received('Mallory')).video?.frames ?? 0, 0);
    assert.deepEqual([...alice.errors, ...bob.errors], []);
    await close(mallory);
  });

  test('a page without the passphrase is told the call is encrypted; a passphrase for a plain room is refused clearly', async () => {
    const eve = await open(room, 'Eve', { connected: false });
    await eventually(async () => /end-to-end encrypted\. Enter its passphrase/.test((await eve.page.textContent('#message')) ?? ''), 'the passphrase message');
    assert.ok(await eve.page.locator('#join-view').isVisible());
    await close(eve);

    const admin = { authorization: `Bearer ${await svc.token('ops', undefined, ['admin'])}`, 'content-type': 'application/json' };
    assert.equal((await svc.fetch('/video/rooms', { method: 'POST', headers: admin, body: JSON.stringify({ name: 'plain-room' }) })).status, 201);
    const trudy = await open('plain-room', 'Trudy', { passphrase, connected: false });
    await eventually(async () => /not end-to-end encrypted, so it cannot be joined with a passphrase/.test((await trudy.page.textContent('#message')) ?? ''), 'the mode mismatch message');
    await close(trudy);
  });
});

// ---- the SDK's key API, without the call page ----------------------------------------------

/**
 * A tab that uses the SDK bundle directly (`import('/dist/sdk.js')`), as an application
 * would: `Room.connect(…, { e2ee })`, `setE2eeKey`, `useE2eeKey`, the `e2eeError` event.
 */
class SdkPage {
  readonly name: string;
  readonly page: CallPage['page'];
  private readonly context: { close(): Promise<void> };

  private constructor(name: string, page: CallPage['page'], context: { close(): Promise<void> }) {
    this.name = name;
    this.page = page;
    this.context = context;
  }

  static async open(name: string, room: string, e2ee: { key?: number[]; passphrase?: string } | undefined, publish = true): Promise<SdkPage> {
    const context = await browser.newContext();
    const page = await context.newPage();
    // Any page of the service: same origin for /dist/sdk.js and /dev/token; the app stays idle without autojoin.
    await page.goto(`${svc.httpUrl}/?`);
    await page.evaluate(
      async ({ name, room, e2ee, publish }) => {
        const sdk = '/dist/sdk.js';
        const { Room } = await import(sdk);
        const identity = `${name.toLowerCase()}-${crypto.randomUUID().slice(0, 8)}`;
        const res = await fetch(`/dev/token?${new URLSearchParams({ room, identity, name, e2ee: '1' })}`);
        const { token } = (await res.json()) as { token: string };
        const opts = e2ee === undefined ? undefined : { passphrase: e2ee.passphrase, key: e2ee.key === undefined ? undefined : Uint8Array.from(e2ee.key) };
        const origin = (globalThis as unknown as { location: { origin: string } }).location.origin;
        const r = await Room.connect(origin, token, { name, e2ee: opts });
        const errors: { reason: string; keyIndex: number | undefined; from: string | undefined }[] = [];
        r.on('e2eeError', (e: { reason: string; keyIndex: number | undefined; participant?: { name: string } }) =>
          errors.push({ reason: e.reason, keyIndex: e.keyIndex, from: e.participant?.name }),
        );
        (globalThis as Record<string, unknown>).__sdk = { room: r, errors };
        if (publish) await r.publish({ audio: true, video: { width: 320, height: 240 } });
      },
      { name, room, e2ee, publish },
    );
    const p = new SdkPage(name, page, context);
    sdkPages.push(p);
    return p;
  }

  /** Video frames we decoded of `from` (by name). */
  decoded(from: string): Promise<number> {
    return this.page.evaluate(async (from) => {
      const { room } = (globalThis as unknown as { __sdk: { room: any } }).__sdk;
      const sid = [...room.participants.values()].find((p: { name: string }) => p.name === from)?.sid;
      const stats = (await room.getStats()) as { participantSid: string; local: boolean; tracks: { kind: string; frames?: number }[] }[];
      return stats.find((s) => !s.local && s.participantSid === sid)?.tracks.find((t) => t.kind === 'video')?.frames ?? 0;
    }, from);
  }

  errors(): Promise<{ reason: string; keyIndex: number | undefined; from: string | undefined }[]> {
    return this.page.evaluate(() => (globalThis as unknown as { __sdk: { errors: [] } }).__sdk.errors);
  }

  /** Runs `room[method](...args)` in the page and returns its result (or `{ error: code }`). */
  call(method: string, ...args: unknown[]): Promise<unknown> {
    return this.page.evaluate(
      async ({ method, args }) => {
        const { room } = (globalThis as unknown as { __sdk: { room: Record<string, (...a: unknown[]) => unknown> } }).__sdk;
        try {
          return { ok: await room[method]!(...args) };
        } catch (err) {
          return { error: (err as { code?: string }).code, message: (err as Error).message };
        }
      },
      { method, args },
    );
  }

  close(): Promise<void> {
    sdkPages.splice(sdkPages.indexOf(this), 1);
    return this.context.close();
  }
}

const sdkPages: SdkPage[] = [];
after(async () => {
  await Promise.all([...sdkPages].map((p) => p.close().catch(() => {})));
});

async function decodesMore(rx: SdkPage, from: string, frames: number, timeoutMs = 20_000): Promise<number> {
  const start = await rx.decoded(from);
  let now = start;
  await eventually(async () => (now = await rx.decoded(from)) >= start + frames, `${rx.name} to decode ${frames} more frames of ${from}'s video (at ${now})`, timeoutMs);
  return now;
}

describe("the SDK's end-to-end encryption API", () => {
  test('raw key material, and a key rotation without a gap; publishing without a key fails clearly', { timeout: 90_000 }, async (t) => {
    const room = 'rotating-call';
    const raw = Array.from({ length: 32 }, (_, i) => (i * 37 + 11) & 0xff);
    const dave = await SdkPage.open('Dave', room, { key: raw });
    const erin = await SdkPage.open('Erin', room, { key: raw });
    await Promise.all([decodesMore(erin, 'Dave', 20), decodesMore(dave, 'Erin', 20)]);

    // Rotate: everyone installs the new key in slot 1, then Dave switches to it.
    assert.deepEqual(await dave.call('setE2eeKey', 'the second key', 1), { ok: undefined });
    assert.deepEqual(await erin.call('setE2eeKey', 'the second key', 1), { ok: undefined });
    assert.deepEqual(await dave.call('useE2eeKey', 1), { ok: undefined });
    assert.equal(await dave.page.evaluate(() => (globalThis as unknown as { __sdk: { room: { e2eeKeyIndex: number } } }).__sdk.room.e2eeKeyIndex), 1);
    const after = await decodesMore(erin, 'Dave', 60);
    t.diagnostic(`Erin decoded Dave's video up to frame ${after} across the switch to key slot 1`);
    assert.deepEqual(await erin.errors(), [], 'no frame was lost to the rotation');
    assert.deepEqual(await dave.errors(), []);

    // Someone with only the old key: Erin (still on slot 0) decodes, Dave (slot 1) does not.
    const frank = await SdkPage.open('Frank', room, { key: raw });
    await decodesMore(frank, 'Erin', 20);
    await eventually(async () => (await frank.errors()).some((e) => e.from === 'Dave' && e.reason === 'unknown-key' && e.keyIndex === 1), "Frank's unknown-key error for Dave's slot 1");
    assert.equal(await frank.decoded('Dave'), 0);
    assert.ok((await frank.errors()).every((e) => e.from === 'Dave'), JSON.stringify(await frank.errors()));
    await frank.close();

    // No key at all: the room can be joined, publishing is refused.
    const gina = await SdkPage.open('Gina', room, undefined, false);
    assert.equal(await gina.page.evaluate(() => (globalThis as unknown as { __sdk: { room: { e2ee: boolean } } }).__sdk.room.e2ee), true);
    const refused = (await gina.call('publish', { audio: true, video: true })) as { error?: string; message?: string };
    assert.equal(refused.error, 'E2EE_KEY_REQUIRED', JSON.stringify(refused));
    t.diagnostic(`publish without a key: ${refused.error}: ${refused.message}`);
    await Promise.all([gina.close(), dave.close(), erin.close()]);
  });
});
