/**
 * Issue 10, item 6: Redis trouble loses no call. Three edge nodes (one media worker each)
 * and a real redis-server that is killed for 20 s in the middle of calls and started again
 * on its port. Running calls (joined through three nodes, signaling relayed node to node)
 * notice nothing; a new participant of a room known to live on another node is still
 * relayed there; a new room works: one whose first joins reached two nodes during the
 * outage is hosted twice until Redis returns, then merged by moving the smaller side
 * (a Chromium page through the SDK, which rejoins by itself on `room_moved`).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import type { Browser } from 'playwright-core';
import { rendezvousOrder } from '../src/cluster/rendezvous.ts';
import type { EdgeService } from '../src/edge/edge-service.ts';
import { CallPage, launchChromium } from './browser/call-page.ts';
import type { RemoteTrack, TestClient } from './helpers/client.ts';
import { RedisServer } from './helpers/redis-server.ts';
import { eventually, sleep, startCluster, TestService } from './helpers/service.ts';

const API = { SCV_API_KEY: 'outage-test', SCV_API_SECRET: 'outage-test-secret-of-at-least-32-chars!' };
const SECRET = 'cluster-secret-for-outage-tests';
const IDS = ['oa', 'ob', 'oc'];
const OUTAGE_MS = 20_000;

let redis: RedisServer;
let probe: Redis;
let nodes: TestService<EdgeService>[];
let browser: Browser;
let cameraDir: string;
const pages: CallPage[] = [];

before(async () => {
  redis = await RedisServer.start();
  probe = new Redis(redis.url, { maxRetriesPerRequest: 1, lazyConnect: true });
  probe.on('error', () => {});
  await probe.connect();
  nodes = await startCluster(redis.url, SECRET, IDS, () => ({ ...API, SCV_RECONNECT_GRACE: '0' }));
  // A small fake camera: the page's video reaches two werift peers on this test's one event loop.
  cameraDir = mkdtempSync(path.join(tmpdir(), 'scv-outage-camera-'));
  const cameraFile = path.join(cameraDir, 'camera.y4m');
  const ffmpeg = spawnSync('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y', '-f', 'lavfi', '-i', 'testsrc2=size=160x120:rate=15', '-t', '2', '-pix_fmt', 'yuv420p', cameraFile], { encoding: 'utf8' });
  if (ffmpeg.status !== 0) throw new Error(`ffmpeg could not write ${cameraFile}: ${ffmpeg.error?.message ?? ffmpeg.stderr}`);
  browser = await launchChromium({ cameraFile });
});

after(async () => {
  await Promise.all(pages.map((p) => p.close()));
  await browser?.close();
  await Promise.all((nodes ?? []).map((n) => n.close()));
  probe?.disconnect();
  await redis?.close();
  if (cameraDir !== undefined) rmSync(cameraDir, { recursive: true, force: true });
});

const node = (id: string) => nodes[IDS.indexOf(id)]!;

/** The first room `<prefix>-<i>` whose rendezvous order starts with `host`. */
function roomHostedBy(host: string, prefix: string): string {
  for (let i = 0; ; i++) {
    const room = `${prefix}-${i}`;
    if (rendezvousOrder(room, IDS)[0] === host) return room;
  }
}

/** Rooms each node's media worker reports now. */
function workerRooms(): Map<string, string[]> {
  return new Map(IDS.map((id) => [id, node(id).service.pool.workers().flatMap((w) => [...w.rooms])]));
}

/** The nodes whose worker has `room`. */
const hostsOf = (room: string) => [...workerRooms()].filter(([, rooms]) => rooms.includes(room)).map(([id]) => id);

/**
 * Who publishes video as well as audio. The test's one event loop runs six werift peers and
 * the three edges (a browser beside it), so the others publish audio only, and the
 * video is light.
 */
const VIDEO = new Set(['alice', 'bob', 'dave', 'gus']);

async function joinPublishing(at: string, identity: string, room: string): Promise<TestClient> {
  const c = await node(at).join(identity, room);
  await c.publishTracks([{ kind: 'audio' }, ...(VIDEO.has(identity) ? [{ kind: 'video' as const, fps: 15, bitrateKbps: 150 }] : [])]);
  return c;
}

async function openPage(at: string, identity: string, room: string): Promise<CallPage> {
  const token = await node(at).token(identity, room);
  const page = await CallPage.open(browser, { baseUrl: node(at).httpUrl, room, name: identity, query: { token } });
  pages.push(page);
  return page;
}

/**
 * Every received track of the watched clients, sampled every 50 ms for stalls and for
 * sequence numbers lost for good. The werift peers share this test's event loop: when the
 * loop itself is held up (the sampler runs late), packets wait in the socket and every
 * track seems to stall at once, so the time the loop was held up during a stall is
 * reported apart and does not count as the call's.
 */
class FlowWatch {
  private readonly watched: {
    label: string;
    rec: RemoteTrack;
    packets: number;
    lastAt: number;
    /** The loop's hold-ups since the last packet. */
    heldSince: number;
    stall: number;
    held: number;
    skipped: number;
    late: number;
    /** When (ms since `t0`) sequence numbers were skipped. */
    skips: number[];
    lastSkipped: number;
    /** Unrecovered, and the longest stall net of the loop's hold-ups, at `mark()`. */
    marked: { unrecovered: number; netStall: number } | undefined;
  }[] = [];
  private readonly timer: NodeJS.Timeout;
  private lastSampleAt = Date.now();
  /** The longest hold-up of this process's event loop seen by the sampler. */
  maxLoopHold = 0;
  t0 = Date.now();

  constructor() {
    this.timer = setInterval(() => this.sample(), 50);
  }

  watch(client: TestClient, label: string, from: string[]): void {
    for (const identity of from) {
      for (const rec of client.tracksFrom(identity)) {
        this.watched.push({
          label: `${label}<-${identity}/${rec.kind}`,
          rec,
          packets: rec.packets,
          lastAt: Date.now(),
          heldSince: 0,
          stall: 0,
          held: 0,
          skipped: rec.skipped,
          late: rec.late,
          skips: [],
          lastSkipped: rec.skipped,
          marked: undefined,
        });
      }
    }
  }

  private sample(): void {
    const now = Date.now();
    const hold = Math.max(0, now - this.lastSampleAt - 50);
    this.lastSampleAt = now;
    this.maxLoopHold = Math.max(this.maxLoopHold, hold);
    for (const w of this.watched) {
      w.heldSince += hold;
      if (w.rec.packets > w.packets) {
        if (now - w.lastAt - w.heldSince > w.stall - w.held) {
          w.stall = now - w.lastAt;
          w.held = w.heldSince;
        }
        w.packets = w.rec.packets;
        w.lastAt = now;
        w.heldSince = 0;
      }
      if (w.rec.skipped > w.lastSkipped) {
        w.skips.push(now - this.t0);
        w.lastSkipped = w.rec.skipped;
      }
    }
  }

  private unrecovered(w: FlowWatch['watched'][number]): number {
    return w.rec.skipped - w.skipped - (w.rec.late - w.late);
  }

  /** Notes what each track has lost for good and its longest stall so far. */
  mark(): void {
    this.sample();
    for (const w of this.watched) w.marked = { unrecovered: this.unrecovered(w), netStall: Math.max(w.stall - w.held, Date.now() - w.lastAt - w.heldSince) };
  }

  /**
   * Per track: the longest time without a packet (`stallMs`, of which `heldMs` this
   * process's loop was held up), sequence numbers skipped and never filled since watching
   * began (and at `mark()`), and when skips happened.
   */
  stop(): { label: string; stallMs: number; heldMs: number; unrecovered: number; atMark: { unrecovered: number; netStall: number }; skipsAt: number[]; packets: number; ended: boolean }[] {
    clearInterval(this.timer);
    this.sample();
    return this.watched.map((w) => ({
      label: w.label,
      stallMs: w.stall,
      heldMs: w.held,
      unrecovered: this.unrecovered(w),
      atMark: w.marked ?? { unrecovered: this.unrecovered(w), netStall: w.stall - w.held },
      skipsAt: w.skips,
      packets: w.rec.packets,
      ended: w.rec.ended,
    }));
  }
}

/**
 * Waits until the page receives `count` more video and audio packets from `identity`
 * (all its tracks counted, whatever the SDK renegotiated). Packets, not decoded frames:
 * the werift clients' synthetic VP8 carries test markers, not pictures Chromium decodes.
 */
async function pageReceives(page: CallPage, identity: string, count = 30): Promise<void> {
  const packets = async (kind: 'audio' | 'video') =>
    (await page.stats())
      .filter((s) => !s.local && s.identity === identity)
      .flatMap((s) => s.tracks)
      .filter((t) => t.kind === kind)
      .reduce((n, t) => n + t.packets, 0);
  const video = VIDEO.has(identity) ? count : 0;
  const [v0, a0] = [await packets('video'), await packets('audio')];
  await eventually(async () => (await packets('video')) >= v0 + video && (await packets('audio')) >= a0 + count, `${page.name} to receive ${identity}'s media`, 30_000);
}

async function receivesAll(clients: Record<string, TestClient>): Promise<void> {
  const names = Object.keys(clients);
  await Promise.all(
    names.flatMap((rx) =>
      names
        .filter((tx) => tx !== rx)
        .flatMap((tx) => [
          clients[rx]!.waitForTrackFrom(tx, 'audio', { minPackets: 30, minVerified: 30, timeoutMs: 30_000 }),
          ...(VIDEO.has(tx) ? [clients[rx]!.waitForTrackFrom(tx, 'video', { minPackets: 30, minVerified: 30, minKeyframes: 1, timeoutMs: 30_000 })] : []),
        ]),
    ),
  );
}

// Three nodes, six werift peers and a browser on a shared machine: a longer budget than the runner's default.
test('Redis stopped for 20 s mid-call and started again: no participant notices, a new room works, a room placed on two nodes is merged into one', { timeout: 300_000 }, async () => {
  // A call joined through three nodes: only oa hosts it, ob and oc relay signaling (and so remember where it lives).
  const call = roomHostedBy('oa', 'call');
  const inCall = { alice: await joinPublishing('oa', 'alice', call), bob: await joinPublishing('ob', 'bob', call), carol: await joinPublishing('oc', 'carol', call) };
  await receivesAll(inCall);
  const flow = new FlowWatch();
  for (const [name, c] of Object.entries(inCall)) flow.watch(c, name, Object.keys(inCall).filter((n) => n !== name));

  await redis.stop();
  const stoppedAt = Date.now();
  await eventually(async () => (await Promise.all(nodes.map((n) => n.fetch('/healthz')))).every((h) => h.status === 200 && h.body.cluster.redis === 'down'), 'every node to report redis down, still live', 3000);

  // A new participant of the running call, through a node that does not host it: relayed to oa (its last known node), no twin on ob.
  const dave = await joinPublishing('ob', 'dave', call);
  await dave.waitForTrackFrom('alice', 'video', { minPackets: 30, minKeyframes: 1, timeoutMs: 20_000 });
  await Promise.all(Object.values(inCall).map((c) => c.waitForTrackFrom('dave', 'audio', { minPackets: 30, timeoutMs: 30_000 })));
  assert.deepEqual(hostsOf(call), ['oa'], 'the call is hosted on oa only');

  // A new room whose first joins reach two nodes: each places its own twin, and media flows in each. The
  // smaller side is a Chromium page (the SDK rejoins by itself); which node takes the claim first decides whether
  // the page's side moves at once or the larger side takes the claim over first (the log says which).
  const twin = `twin-${Date.now()}`;
  const big = { gus: await joinPublishing('ob', 'gus', twin), hal: await joinPublishing('ob', 'hal', twin) };
  const pia = await openPage('oc', 'pia', twin);
  await receivesAll(big);
  await eventually(() => hostsOf(twin).length === 2, 'the room to be hosted on ob and oc', 30_000);
  for (const [name, c] of Object.entries(big)) flow.watch(c, name, Object.keys(big).filter((n) => n !== name));
  flow.watch(dave, 'dave', Object.keys(inCall));

  await sleep(Math.max(0, OUTAGE_MS - (Date.now() - stoppedAt)));
  await redis.start();
  const startedAt = Date.now();
  flow.t0 = startedAt;
  console.log(`redis was down ${startedAt - stoppedAt} ms`);

  // The merge: the room ends on one node, the holder of its claim, and the page rejoins there by itself.
  await eventually(async () => hostsOf(twin).length === 1 && (await probe.get(`scv:room:${twin}`)) === hostsOf(twin)[0], 'the room to be hosted once, on its claim holder', 60_000);
  const mergedMs = Date.now() - startedAt;
  assert.deepEqual(hostsOf(twin), ['ob'], 'the larger side (ob) keeps the room');
  await Promise.all(Object.values(big).map((c) => c.waitForTrackFrom('pia', 'video', { minPackets: 30, minKeyframes: 1, timeoutMs: 30_000 })));
  const mediaMs = Date.now() - startedAt;
  flow.mark();
  await Promise.all(Object.keys(big).map((n) => pageReceives(pia, n)));
  console.log(`${twin}: on one node ${mergedMs} ms after redis started; the moved page's video at the other side ${mediaMs} ms`);

  // A few more seconds of everyone talking after the merge, then the flows are read.
  await sleep(3000);
  const flows = flow.stop();
  console.log(`times below are ms since redis started; this process's event loop was held up ${flow.maxLoopHold} ms at most`);
  for (const f of flows) {
    console.log(
      `  ${f.label}: ${f.packets} packets, longest stall ${f.stallMs} ms (loop held ${f.heldMs} ms of it), until the merge ${f.atMark.netStall} ms net and ${f.atMark.unrecovered} unrecovered, in all ${f.unrecovered} unrecovered, skips at ${f.skipsAt.join(' ') || '-'}`,
    );
  }
  const watchedClients = { ...inCall, dave, ...big };
  for (const [name, c] of Object.entries(watchedClients)) {
    assert.equal(c.socketOpen, true, `${name}'s socket stayed open`);
    assert.deepEqual(c.eventsOf('left'), [], `${name} was never told left`);
  }
  for (const f of flows) {
    assert.equal(f.ended, false, `${f.label} never ended`);
    // Up to the merge (the moved page's media reaching the other side) no track stalls or loses anything, and the
    // call the merge does not touch never does. Afterwards the browser's video reaches the twin's two werift peers on
    // this test's one event loop, which then falls behind on a loaded machine: printed above, not asserted.
    assert.ok(f.atMark.netStall < 500, `${f.label} stalled ${f.atMark.netStall} ms (net of this process's hold-ups) before the merge was done`);
    assert.equal(f.atMark.unrecovered, 0, `${f.label} lost sequence numbers for good before the merge was done`);
    if (!(f.label.split('<-')[0]! in big)) {
      assert.ok(f.stallMs - f.heldMs < 500, `${f.label} had a ${f.stallMs} ms stall, ${f.heldMs} ms of it this process's loop held up`);
      assert.equal(f.unrecovered, 0, `${f.label} lost sequence numbers for good`);
    }
  }

  // Nothing hosted twice: every worker's room is claimed by its node, and each room is on one node.
  await eventually(
    async () => {
      const all = [...workerRooms()].flatMap(([id, rooms]) => rooms.map((room) => ({ id, room })));
      if (new Set(all.map((r) => r.room)).size !== all.length) return false;
      const owners = await Promise.all(all.map((r) => probe.get(`scv:room:${r.room}`)));
      return all.length === 2 && all.every((r, i) => owners[i] === r.id);
    },
    'each of the two rooms hosted by the one node holding its claim',
    10_000,
  );
  const health = await Promise.all(nodes.map((n) => n.fetch('/healthz')));
  assert.equal(
    health.reduce((n, h) => n + h.body.rooms, 0),
    2,
    JSON.stringify(health.map((h) => h.body.rooms)),
  );
  const mergedCount = (await Promise.all(nodes.map((n) => n.metric('scv_cluster_rooms_merged_total')))).reduce((a, b) => a + b, 0);
  assert.equal(mergedCount, 1, 'one merge, counted by the side that moved');
});
