/**
 * Recording: real VP8 + Opus (encoded by ffmpeg, sent by werift publishers) recorded to
 * one WebM per participant, checked with ffprobe; participants joining and leaving on
 * the way; shutdown mid-recording; end-to-end encrypted rooms refuse to be recorded.
 */
import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { TestClient } from './helpers/client.ts';
import { FfmpegSource } from './helpers/ffmpeg-source.ts';
import { probeRecording } from './helpers/recording-probe.ts';
import { eventually, sleep, TestService } from './helpers/service.ts';

let svc: TestService;
let dir: string;
const sources: FfmpegSource[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'scv-rec-'));
  svc = await TestService.start({ SCV_RECORDINGS_DIR: dir });
});
after(async () => {
  await Promise.all(sources.map((s) => s.stop()));
  await svc.close();
});

/** A participant publishing ffmpeg's VP8 + Opus; remembers when each video frame was sent. */
async function publisher(identity: string, room: string): Promise<{ client: TestClient; frameTimes: number[]; source: FfmpegSource }> {
  const client = await svc.join(identity, room);
  const [audio, video] = await client.publishTracks([
    { kind: 'audio', startMedia: false },
    { kind: 'video', startMedia: false },
  ]);
  const frameTimes: number[] = [];
  const source = new FfmpegSource();
  sources.push(source);
  await source.start((kind, rtp) => {
    if (kind === 'video' && rtp.header.marker) frameTimes.push(Date.now());
    (kind === 'video' ? video! : audio!).transceiver.sender.sendRtp(rtp).catch(() => {});
  });
  return { client, frameTimes, source };
}

const admin = async () => ({ authorization: `Bearer ${await svc.token('ops', undefined, ['admin'])}` });

test('each participant is recorded to a playable WebM, joiners and leavers included', { timeout: 120_000 }, async () => {
  const room = 'recorded';
  const alice = await publisher('alice', room);
  const bob = await publisher('bob', room);
  const viewer = await svc.join('viewer', room, { grants: ['subscribe'] });
  await viewer.waitForTrackFrom('alice', 'video', { minPackets: 30 });

  const recorder = { authorization: `Bearer ${await svc.token('rec', room, ['record'])}` };
  const started = await svc.fetch(`/video/rooms/${room}/recording`, { method: 'POST', headers: recorder });
  assert.equal(started.status, 201, JSON.stringify(started.body));
  const id = started.body.id as string;
  const status = await viewer.waitForEvent('recording_status', (m) => m.active);
  assert.equal(status.active, true);
  await sleep(4_000);
  const carol = await publisher('carol', room); // joins mid-recording
  await sleep(3_000);
  await bob.client.leave(); // leaves mid-recording
  await bob.source.stop();
  await sleep(4_000);
  const stopped = await svc.fetch(`/video/rooms/${room}/recording`, { method: 'DELETE', headers: recorder });
  assert.equal(stopped.status, 200, JSON.stringify(stopped.body));
  await viewer.waitForEvent('recording_status', (m) => !m.active);

  const meta = (await svc.fetch(`/video/recordings/${id}`, { headers: recorder })).body;
  assert.equal(meta.room, room);
  assert.deepEqual(meta.files.map((f: { identity: string }) => f.identity).sort(), ['alice', 'bob', 'carol']);
  const frames = { alice: alice.frameTimes, bob: bob.frameTimes, carol: carol.frameTimes } as Record<string, number[]>;
  for (const f of meta.files as { identity: string; file: string; startedAt: string; endedAt: string; codecs: string[] }[]) {
    assert.deepEqual([...f.codecs].sort(), ['opus', 'vp8']);
    const download = await fetch(`${svc.httpUrl}/video/recordings/${id}/files/${f.file}`, { headers: recorder });
    assert.equal(download.status, 200);
    assert.equal(download.headers.get('content-type'), 'video/webm');
    const { duration, truth, from, to, videoFrames: decoded, audioFrames } = await probeRecording(join(dir, id, f.file), f);
    assert.ok(Math.abs(duration - truth) <= 1, `${f.file}: duration ${duration}s vs ${truth}s recorded`);
    const sent = frames[f.identity]!.filter((t) => t >= from && t <= to).length;
    assert.ok(decoded >= 0.8 * sent, `${f.file}: decoded ${decoded} of ${sent} frames`);
    assert.ok(audioFrames > 0, `${f.file}: audio frames`);
  }
  const list = await svc.fetch('/video/recordings', { headers: recorder });
  assert.ok(list.body.recordings.some((r: { id: string }) => r.id === id));
  await Promise.all([alice.client, carol.client, viewer].map((c) => c.close({ leave: true })));
});

test('a participant with the record grant starts and stops recording over signaling', async () => {
  const room = 'self-recorded';
  const host = await svc.join('host', room, { grants: ['publish', 'subscribe', 'record'] });
  const guest = await svc.join('guest', room);
  await assert.rejects(guest.call({ type: 'recording', active: true }), (e: { code?: string }) => e.code === 'FORBIDDEN');
  await host.call({ type: 'recording', active: true });
  assert.equal((await guest.waitForEvent('recording_status', (m) => m.active)).active, true);
  await host.call({ type: 'recording', active: false });
  await guest.waitForEvent('recording_status', (m) => !m.active);
  await Promise.all([host.close({ leave: true }), guest.close({ leave: true })]);
});

test('an end-to-end encrypted room is never recorded, and its mode never changes', async () => {
  const room = 'secret';
  const created = await svc.fetch('/video/rooms', { method: 'POST', headers: { ...(await admin()), 'content-type': 'application/json' }, body: JSON.stringify({ name: room, e2ee: true }) });
  assert.equal(created.status, 201);
  assert.equal(created.body.e2ee, true);
  const a = await svc.join('a', room, { grants: ['publish', 'subscribe', 'record'] });
  assert.equal(a.joined!.room.e2ee, true, 'participants are told');
  const http = await svc.fetch(`/video/rooms/${room}/recording`, { method: 'POST', headers: await admin() });
  assert.equal(http.status, 409);
  assert.equal(http.body.error.code, 'E2EE_RECORDING_FORBIDDEN');
  await assert.rejects(a.call({ type: 'recording', active: true }), (e: { code?: string }) => e.code === 'E2EE_RECORDING_FORBIDDEN');
  assert.equal(svc.service.recordings.active(svc.service.sfu.getRoom(room)), undefined, 'no recorder was created');
  const plainToken = await svc.service.tokens.mint({ identity: 'b', room, grants: ['subscribe'], e2ee: false });
  const s = await import('./helpers/client.ts').then((m) => m.rawSocket(svc.service.wsUrl));
  s.send({ type: 'join', protocol: 1, token: plainToken });
  const reply = await s.nextJson();
  assert.equal(reply.code, 'E2EE_MODE_MISMATCH');
  s.close();
  const again = await svc.fetch('/video/rooms', { method: 'POST', headers: { ...(await admin()), 'content-type': 'application/json' }, body: JSON.stringify({ name: room, e2ee: false }) });
  assert.equal(again.status, 409);
  await a.close({ leave: true });
});

test('a server shutdown mid-recording leaves playable files', { timeout: 60_000 }, async () => {
  const own = await TestService.start({ SCV_RECORDINGS_DIR: dir });
  const client = await own.join('solo', 'shutdown');
  const [audio, video] = await client.publishTracks([
    { kind: 'audio', startMedia: false },
    { kind: 'video', startMedia: false },
  ]);
  const source = new FfmpegSource();
  sources.push(source);
  await source.start((kind, rtp) => (kind === 'video' ? video! : audio!).transceiver.sender.sendRtp(rtp).catch(() => {}));
  await eventually(() => source.videoPackets > 30, 'ffmpeg to send video');
  const meta = await own.service.recordings.start('shutdown');
  await sleep(4_000);
  await own.close();
  const { body } = { body: JSON.parse(await import('node:fs/promises').then((fs) => fs.readFile(join(dir, meta.id, 'recording.json'), 'utf8'))) };
  assert.equal(body.files.length, 1);
  const probe = await probeRecording(join(dir, meta.id, body.files[0].file), body.files[0]);
  assert.ok(probe.duration >= 1.5, `duration ${probe.duration}`);
  assert.ok(probe.videoFrames > 20, `video frames ${probe.videoFrames}`);
});
