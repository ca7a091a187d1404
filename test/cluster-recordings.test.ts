/**
 * Issue 10, item 3: recordings of a room hosted elsewhere are reached through any node.
 * Two edge nodes (one media worker each), each with its own recordings folder, and one
 * real redis-server: a room hosted by one node is recorded through the other; the list
 * at either node has it once with its node, and its metadata and file come through the
 * node that does not have them, as a file ffprobe plays.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { rendezvousOrder } from '../src/cluster/rendezvous.ts';
import type { EdgeService } from '../src/edge/edge-service.ts';
import { FfmpegSource } from './helpers/ffmpeg-source.ts';
import { probeRecording } from './helpers/recording-probe.ts';
import { RedisServer } from './helpers/redis-server.ts';
import { sleep, startCluster, TestService } from './helpers/service.ts';

const API = { SCV_API_KEY: 'recordings-test', SCV_API_SECRET: 'recordings-test-secret-of-at-least-32-chars' };
const SECRET = 'cluster-secret-for-recording-tests';
const IDS = ['ka', 'kb'];

let redis: RedisServer;
let dirs: string[];
let nodes: TestService<EdgeService>[];
let source: FfmpegSource | undefined;

before(async () => {
  redis = await RedisServer.start();
  dirs = await Promise.all(IDS.map((id) => mkdtemp(join(tmpdir(), `scv-rec-${id}-`))));
  nodes = await startCluster(redis.url, SECRET, IDS, (_, i) => ({ ...API, SCV_RECORDINGS_DIR: dirs[i]! }));
});

after(async () => {
  await source?.stop();
  await Promise.all((nodes ?? []).map((n) => n.close()));
  await redis?.close();
  await Promise.all((dirs ?? []).map((d) => rm(d, { recursive: true, force: true })));
});

const node = (id: string) => nodes[IDS.indexOf(id)]!;

async function as(n: TestService<EdgeService>, identity: string, room: string | undefined, grants: ('admin' | 'record')[]) {
  return { authorization: `Bearer ${await n.token(identity, room, grants)}` };
}

test('a room hosted on one node is recorded through the other; its recording is listed once and fetched through either node', async () => {
  const room = (() => {
    for (let i = 0; ; i++) if (rendezvousOrder(`rec-${i}`, IDS)[0] === 'ka') return `rec-${i}`;
  })();
  // The publisher and every recording request reach kb; the room and its files are on ka.
  const publisher = await node('kb').join('alice', room);
  const [audio, video] = await publisher.publishTracks([
    { kind: 'audio', startMedia: false },
    { kind: 'video', startMedia: false },
  ]);
  source = new FfmpegSource();
  await source.start((kind, rtp) => void (kind === 'video' ? video! : audio!).transceiver.sender.sendRtp(rtp).catch(() => {}));
  const record = await as(node('kb'), 'ops', room, ['record']);
  const started = await node('kb').fetch(`/video/rooms/${room}/recording`, { method: 'POST', headers: record });
  assert.equal(started.status, 201, JSON.stringify(started.body));
  await sleep(3000);
  const stopped = await node('kb').fetch(`/video/rooms/${room}/recording`, { method: 'DELETE', headers: record });
  assert.equal(stopped.status, 200, JSON.stringify(stopped.body));
  await source.stop();
  await publisher.close({ leave: true });

  for (const at of IDS) {
    const list = await node(at).fetch('/video/recordings', { headers: await as(node(at), 'ops', undefined, ['admin']) });
    assert.equal(list.status, 200);
    const ours = (list.body.recordings as { id: string; room: string; node: string }[]).filter((r) => r.room === room);
    assert.equal(ours.length, 1, `listed once at ${at}: ${JSON.stringify(list.body)}`);
    assert.equal(ours[0]!.node, 'ka');
    assert.deepEqual(list.body.unreachable, []);
  }
  // A token with the record grant for another room sees none of it, on either node.
  const other = await node('kb').fetch('/video/recordings', { headers: await as(node('kb'), 'ops', 'another-room', ['record']) });
  assert.equal(other.status, 200);
  assert.equal((other.body.recordings as { room: string }[]).filter((r) => r.room === room).length, 0);

  const id = ((await node('kb').fetch('/video/recordings', { headers: await as(node('kb'), 'ops', undefined, ['admin']) })).body.recordings as { id: string; room: string }[]).find(
    (r) => r.room === room,
  )!.id;
  const meta = await node('kb').fetch(`/video/recordings/${id}`, { headers: record });
  assert.equal(meta.status, 200, JSON.stringify(meta.body));
  assert.equal(meta.body.room, room);
  const record0 = (meta.body.files as { file: string; startedAt: string; endedAt: string }[])[0]!;
  const file = record0.file;
  const res = await fetch(`${node('kb').httpUrl}/video/recordings/${id}/files/${file}`, { headers: record });
  assert.equal(res.status, 200);
  const copy = join(dirs[1]!, `fetched-${file}`);
  await writeFile(copy, Buffer.from(await res.arrayBuffer()));
  const probed = await probeRecording(copy, record0);
  assert.ok(probed.videoFrames > 5 && probed.audioFrames > 10, `the file fetched through kb plays: ${JSON.stringify(probed)}`);

  // One that no node has is the ordinary 404, whichever node is asked.
  const missing = await node('kb').fetch('/video/recordings/RC_000000000000', { headers: record });
  assert.equal(missing.status, 404);
  assert.equal(missing.body.error.code, 'RECORDING_NOT_FOUND');
  // Another room's record grant is refused by the node that has the recording.
  const forbidden = await node('kb').fetch(`/video/recordings/${id}`, { headers: await as(node('kb'), 'ops', 'another-room', ['record']) });
  assert.equal(forbidden.status, 403);
  assert.equal(forbidden.body.error.code, 'FORBIDDEN');
});
