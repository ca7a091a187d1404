/**
 * The cluster of issue 10 on one machine: one node versus three on Redis, in one run.
 *
 *   npm run bench:cluster                  the full run (3-5 minutes)
 *   npm run bench:cluster -- --quick       a short one, for development
 *   npm run bench:cluster -- --help
 *
 * 1. The same load (the load tool, src/loadtest, as its own process: rooms of publishers
 *    with synthetic VP8 + Opus and subscribers, all entering through one node) against one
 *    node with --single-workers media workers (default 3, no Redis), then against three
 *    nodes with one worker each on one real redis-server. Same number of media processes on
 *    the machine's cores both ways, so what differs is only what the cluster adds: two more
 *    edges, the node-to-node relay of signaling, Redis heartbeats, and placement by room
 *    name (rendezvous hashing) instead of the least-loaded worker. Printed: forwarded
 *    pkt/s, CPU of every node's process tree (bench/proc.ts), the load tool's delivery,
 *    loss and latency, and where the rooms went.
 * 2. Join time through a node that does not host the room (relayed) against the hosting
 *    node, alternating: werift clients (src/node-client) subscribe to a room with a
 *    publisher, timed from WebSocket open to `joined` and to the first media packet.
 * 3. The relay's CPU per signaling message: K joined clients send `ping`s paced under the
 *    per-connection limit; the CPU of the edge process alone (not its workers), less its
 *    idle CPU, per relayed message (a ping or a pong), for the non-hosting edge and the
 *    hosting edge, and for the hosting edge with the same clients connected to it directly.
 * 4. Recovery after `kill -9` of the hosting node (edge and worker in the same instant):
 *    two browser SDK participants (Chromium call pages, test/browser/call-page.ts) in one
 *    room hosted by the victim and two load-tool participants (src/loadtest/participant.ts)
 *    in another, all entering through another node, one kill for both rooms; time from the
 *    kill until each receives the other's video again (both rejoin by themselves, the room
 *    comes back on a surviving node); the victim restarts with the same id between kills.
 * 5. Media again after a drain (`POST /video/nodes/:node/drain` through another node): the
 *    same two pairs in rooms hosted by the node drained; time from the request until each
 *    receives the other's video again on the room's new node (told `room_moved`, both
 *    rejoin at once); the drain is cancelled (`DELETE`) between rounds.
 *
 * Runs in a private loopback-only network namespace (re-executes itself under `unshare -n`,
 * scripts/netns.ts), like the tests, so the nodes' fixed ports are its own.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { buildWeb } from '../scripts/build-web.ts';
import { bringUpLoopback, runInNetns } from '../scripts/netns.ts';
import { TokenService } from '../src/auth/tokens.ts';
import { rendezvousOrder } from '../src/cluster/rendezvous.ts';
import { LatencyRecorder } from '../src/loadtest/latency-recorder.ts';
import { Participant } from '../src/loadtest/participant.ts';
import type { Summary } from '../src/loadtest/report.ts';
import { LOOPBACK_ICE, peerConfig } from '../src/node-client/peer-config.ts';
import { SignalingClient } from '../src/node-client/signaling-client.ts';
import type { Browser } from 'playwright-core';
import { CallPage, launchChromium } from '../test/browser/call-page.ts';
import { RedisServer } from '../test/helpers/redis-server.ts';
import { ClusterNode } from './cluster-node.ts';
import { loadAverage, type TreeUsage, treeUsage } from './proc.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const NETNS_MARKER = 'BENCH_NETNS';
const API_KEY = 'bench';
const API_SECRET = randomBytes(32).toString('base64url');
const CLUSTER_SECRET = randomBytes(24).toString('base64url');
const IDS = ['n1', 'n2', 'n3'];
const SINGLE_PORT = 7880;
const CLUSTER_PORTS = [7881, 7882, 7883];
/** The load tool's default; at 10/s a few publishers of 36 participants time out in DTLS on this machine (see docs/benchmarks.md). */
const JOIN_RATE = 5;
/** Each pinger's interval: 40 messages/s, under the default per-connection limit of 50/s (SCV_SIGNALING_RATE). */
const PING_INTERVAL_MS = 25;
const IDLE_S = 5;
const RECOVERY_TIMEOUT_MS = 30_000;

interface Options {
  quick: boolean;
  rooms: number;
  publishers: number;
  subscribers: number;
  videoBitrate: number;
  duration: number;
  singleWorkers: number;
  joins: number;
  pingers: number;
  pingSeconds: number;
  kills: number;
  drains: number;
  /** Which of the parts to run (all by default). */
  parts: Set<number>;
}

const USAGE = `Usage: npm run bench:cluster -- [options]
  --quick               a short run for development (fewer rooms, joins, kills; shorter windows)
  --rooms N             rooms of the load (6; quick 3)
  --publishers N        publishers per room (2)
  --subscribers N       subscribers per room (2)
  --video-bitrate KBPS  VP8 bitrate of each publisher (800)
  --duration S          seconds of the load tool's measured window (15; quick 8)
  --single-workers N    media workers of the single node (3: as many media processes as the 3 nodes)
  --joins N             measured joins each way, relayed and direct (100; quick 10)
  --pingers K           clients exchanging pings in the relay CPU part (20; quick 10)
  --ping-seconds S      length of each ping window (10; quick 4)
  --kills N             kill -9 rounds (10; quick 2)
  --drains N            drain rounds (10; quick 2)
  --parts LIST          only these parts, e.g. 1,3 (default 1,2,3,4,5)`;

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      rooms: { type: 'string' },
      publishers: { type: 'string' },
      subscribers: { type: 'string' },
      'video-bitrate': { type: 'string' },
      duration: { type: 'string' },
      'single-workers': { type: 'string' },
      joins: { type: 'string' },
      pingers: { type: 'string' },
      'ping-seconds': { type: 'string' },
      kills: { type: 'string' },
      drains: { type: 'string' },
      parts: { type: 'string', default: '1,2,3,4,5' },
      help: { type: 'boolean' },
    },
  });
  if (values.help === true) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const q = values.quick === true;
  const int = (name: string, v: string | undefined, dflt: number, min: number) => {
    const n = v === undefined ? dflt : Number(v);
    if (!Number.isInteger(n) || n < min) {
      process.stderr.write(`bench:cluster: --${name} must be an integer of at least ${min}\n\n${USAGE}\n`);
      process.exit(2);
    }
    return n;
  };
  return {
    quick: q,
    rooms: int('rooms', values.rooms, q ? 3 : 6, 1),
    publishers: int('publishers', values.publishers, 2, 1),
    subscribers: int('subscribers', values.subscribers, 2, 0),
    videoBitrate: int('video-bitrate', values['video-bitrate'], 800, 50),
    duration: int('duration', values.duration, q ? 8 : 15, 6),
    singleWorkers: int('single-workers', values['single-workers'], 3, 1),
    joins: int('joins', values.joins, q ? 10 : 100, 1),
    pingers: int('pingers', values.pingers, q ? 10 : 20, 1),
    pingSeconds: int('ping-seconds', values['ping-seconds'], q ? 4 : 10, 2),
    kills: int('kills', values.kills, q ? 2 : 10, 1),
    drains: int('drains', values.drains, q ? 2 : 10, 1),
    parts: new Set(
      values.parts.split(',').map((p) => {
        const n = Number(p);
        if (![1, 2, 3, 4, 5].includes(n)) {
          process.stderr.write(`bench:cluster: --parts takes numbers from 1 to 5\n\n${USAGE}\n`);
          process.exit(2);
        }
        return n;
      }),
    ),
  };
}

const say = (line = '') => process.stdout.write(`${line}\n`);
const f0 = (n: number) => (Number.isFinite(n) ? n.toFixed(0) : '–');
const f1 = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : '–');

/** Nearest rank: the smallest sample with at least p % of the samples at or below it. */
function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** The first room `<prefix>-<i>` whose rendezvous order over IDS starts with `host`. */
function roomHostedBy(host: string, prefix: string): string {
  for (let i = 0; ; i++) {
    const room = `${prefix}-${i}`;
    if (rendezvousOrder(room, IDS)[0] === host) return room;
  }
}

/** An admin request to `path` at `via`; its JSON body, or an error naming the status and body. */
async function adminRequest(via: ClusterNode, method: 'GET' | 'POST' | 'DELETE', path: string, tokens: TokenService): Promise<unknown> {
  const res = await fetch(`${via.httpUrl}${path}`, { method, headers: { authorization: `Bearer ${await tokens.mint({ identity: 'bench', grants: ['admin'] })}` } });
  const body = await res.text();
  if (!res.ok) throw new Error(`${method} ${path} at ${via.id}: ${res.status} ${body}`);
  return JSON.parse(body);
}

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs: number, everyMs = 100): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return;
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
}

function nodeEnv(opts: Options, extra: Record<string, string>): Record<string, string> {
  return {
    SCV_API_KEY: API_KEY,
    SCV_API_SECRET: API_SECRET,
    // Kept in memory (the last lines) and shown when the load tool reports failures.
    SCV_LOG_LEVEL: 'warn',
    // Every client of the bench is 127.0.0.1: the per-IP HTTP limit would count them all as one.
    SCV_HTTP_RATE_LIMIT: 'off',
    SCV_MAX_PARTICIPANTS: String(Math.max(50, opts.publishers + opts.subscribers + 10, opts.pingers + 10)),
    ...extra,
  };
}

// ---- 1. the same load against one node and three ------------------------------------------

interface LoadResult {
  label: string;
  forwardedPerS: number;
  /** Each node's whole process tree (edge and workers), % of a core. */
  nodeCpuPct: number[];
  /** Each edge process alone. */
  edgeCpuPct: number[];
  /** Each media worker process, over all nodes. */
  workerCpuPct: number[];
  toolCpuPct: number;
  /** CPU of every node process per forwarded packet. */
  usPerPacket: number;
  /** What it could forward with its busiest worker at 100 % of a core (rooms stay where they are placed). */
  capacityPerS: number;
  rooms: number[];
  summary: Summary;
}

async function runLoad(label: string, nodes: ClusterNode[], opts: Options, dir: string): Promise<LoadResult> {
  const json = path.join(dir, `${label}.json`);
  const tool = spawn(
    process.execPath,
    [
      'src/loadtest/cli.ts',
      ...['--url', nodes[0]!.wsUrl, '--api-key', API_KEY, '--api-secret', API_SECRET],
      ...['--rooms', String(opts.rooms), '--publishers', String(opts.publishers), '--subscribers', String(opts.subscribers)],
      ...['--video-bitrate', String(opts.videoBitrate), '--duration', String(opts.duration), '--join-rate', String(JOIN_RATE), '--room-prefix', label, '--json', json],
    ],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const exited = new Promise<number>((resolve) => tool.once('exit', (code) => resolve(code ?? 1)));
  // The tool measures its own window (after its joins and settle phase) and says in its
  // summary when it began (setupS after its start) and how long it lasted; its progress
  // lines carry the time since its start. So: sample every second, and afterwards take the
  // samples inside the tool's window.
  let toolStart = Number.POSITIVE_INFINITY;
  tool.stdout!.on('data', (d: Buffer) => {
    const now = performance.now();
    for (const m of d.toString().matchAll(/^\[\s*([\d.]+)s\] participants/gm)) toolStart = Math.min(toolStart, now - Number(m[1]) * 1000);
  });
  const workers = nodes.flatMap((n) => n.workerPids);
  // Roots: each node's tree, each worker alone, the tool.
  const roots = [...nodes.map((n) => n.pid!), ...workers, tool.pid!];
  const toolAt = roots.length - 1;
  const samples: { at: number; forwarded: number; usage: TreeUsage[]; rooms: number[] }[] = [];
  while (tool.exitCode === null) {
    const at = performance.now();
    try {
      const [forwarded, health] = await Promise.all([
        Promise.all(nodes.map((n) => n.metric('scv_rtp_packets_forwarded_total'))),
        Promise.all(nodes.map((n) => n.health())),
      ]);
      samples.push({
        at,
        forwarded: forwarded.reduce((x, y) => x + y, 0),
        usage: treeUsage(roots),
        // One node: rooms per worker; a cluster: rooms per node.
        rooms: nodes.length === 1 ? health[0]!.workers.map((w) => w.rooms) : health.map((h) => h.rooms),
      });
    } catch (err) {
      say(`  (${label}: a sample failed: ${(err as Error).message})`);
    }
    await Promise.race([sleep(Math.max(0, at + 1000 - performance.now())), exited]);
  }
  const code = await exited;
  const summary = JSON.parse(await readFile(json, 'utf8')) as Summary;
  if (code !== 0) {
    say(`  (${label}: the load tool exited with ${code}: ${JSON.stringify(summary.joinFailureReasons)} ${JSON.stringify(summary.problems)} ${summary.missingTracks.slice(0, 3).join('; ')})`);
    for (const n of nodes) if (n.tail.length > 0) say(`  (${n.id}'s last log lines:\n${n.tail.slice(-8).join('\n')})`);
  }
  const windowStart = toolStart + summary.setupS * 1000;
  const inside = samples.filter((x) => x.at >= windowStart && x.at <= windowStart + summary.windowS * 1000);
  if (inside.length < 2) throw new Error(`${label}: fewer than two samples inside the load tool's window`);
  const a = inside[0]!;
  const b = inside.at(-1)!;
  const seconds = (b.at - a.at) / 1000;
  const cpu = (i: number) => b.usage[i]!.cpuS - a.usage[i]!.cpuS;
  const pct = (c: number) => (100 * c) / seconds;
  const nodeCpu = nodes.map((_, i) => cpu(i));
  const workerCpuPct = workers.map((_, i) => pct(cpu(nodes.length + i)));
  const forwarded = b.forwarded - a.forwarded;
  return {
    label,
    forwardedPerS: forwarded / seconds,
    nodeCpuPct: nodeCpu.map(pct),
    edgeCpuPct: nodes.map((_, i) => pct(b.usage[i]!.rootCpuS - a.usage[i]!.rootCpuS)),
    workerCpuPct,
    toolCpuPct: pct(cpu(toolAt)),
    usPerPacket: (1e6 * nodeCpu.reduce((x, y) => x + y, 0)) / forwarded,
    capacityPerS: (forwarded / seconds) * (100 / Math.max(...workerCpuPct)),
    // One node: rooms per worker; a cluster: rooms per node.
    rooms: b.rooms,
    summary,
  };
}

function printLoad(r: LoadResult): void {
  const s = r.summary;
  const total = r.nodeCpuPct.reduce((a, b) => a + b, 0);
  say(
    `  ${r.label}: forwarded ${f0(r.forwardedPerS)} pkt/s; node CPU ${f1(total)} % (${r.nodeCpuPct.map(f1).join(' + ')}: edges ${r.edgeCpuPct.map(f1).join(' + ')}, ` +
      `workers ${r.workerCpuPct.map(f1).join(' + ')}), ${f1(r.usPerPacket)} µs per forwarded packet, capacity ${f0(r.capacityPerS)} pkt/s; ` +
      `load tool ${f1(r.toolCpuPct)} %; delivered ${s.receive.deliveredPercent ?? '–'} %, loss ${s.loss.percent} %, latency p50/p99 ${s.latencyMs.p50}/${s.latencyMs.p99} ms; ` +
      `joined ${s.participants.joined}/${s.participants.expected}, tracks ${s.tracks.subscribed}/${s.tracks.expected}; rooms ${r.rooms.join('/')}`,
  );
}

// ---- 2. join time, relayed and direct ---------------------------------------------------------

interface JoinSample {
  joinedMs: number;
  mediaMs: number;
}

async function joinOnce(wsUrl: string, token: string, identity: string): Promise<JoinSample> {
  let firstPacket: number | undefined;
  let gotPacket: () => void = () => {};
  const packet = new Promise<void>((resolve) => (gotPacket = resolve));
  const client = new SignalingClient({
    wsUrl,
    peerConfig: (role) => peerConfig(role, LOOPBACK_ICE),
    sinkFor: () => ({
      onPacket: () => {
        if (firstPacket !== undefined) return;
        firstPacket = performance.now();
        gotPacket();
      },
    }),
  });
  try {
    await client.connect();
    const open = performance.now();
    await client.join({ token, name: identity });
    const joined = performance.now();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([packet, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`${identity}: no media within 10 s`)), 10_000)))]);
    clearTimeout(timer);
    return { joinedMs: joined - open, mediaMs: firstPacket! - open };
  } finally {
    await client.close({ leave: true });
  }
}

interface JoinResult {
  direct: JoinSample[];
  relayed: JoinSample[];
  /** Joins that failed or got no media within 10 s (not in the samples). */
  failures: number;
}

async function joinTimes(host: ClusterNode, relay: ClusterNode, opts: Options, tokens: TokenService): Promise<JoinResult> {
  const room = roomHostedBy(host.id, 'bench-join');
  const publisher = new SignalingClient({ wsUrl: host.wsUrl, peerConfig: (role) => peerConfig(role, LOOPBACK_ICE), sinkFor: () => ({ onPacket: () => {} }) });
  const result: JoinResult = { direct: [], relayed: [], failures: 0 };
  try {
    await publisher.connect();
    await publisher.join({ token: await tokens.mint({ identity: 'publisher', room, grants: ['publish', 'subscribe'] }) });
    await publisher.publish([
      { kind: 'video', codec: 'vp8', source: 'camera', bitrateKbps: 500, fps: 30 },
      { kind: 'audio', codec: 'opus', source: 'microphone' },
    ]);
    await publisher.publisher!.connected();
    // Two warm-ups each way (JIT, first relay sockets), then alternating so drift hits both alike.
    for (let i = 0; i < 2 * opts.joins + 4; i++) {
      const relayed = i % 2 === 1;
      const identity = `joiner-${i}`;
      const token = await tokens.mint({ identity, room, grants: ['subscribe'] });
      try {
        const s = await joinOnce((relayed ? relay : host).wsUrl, token, identity);
        if (i >= 4) (relayed ? result.relayed : result.direct).push(s);
      } catch (err) {
        result.failures++;
        say(`  (${relayed ? 'relayed' : 'direct'} join ${i}: ${(err as Error).message})`);
      }
    }
  } finally {
    await publisher.close({ leave: true });
  }
  return result;
}

// ---- 3. the relay's CPU per signaling message ---------------------------------------------------

interface PingPhase {
  messages: number;
  /** CPU seconds of each edge process (root only) in the window, less its idle CPU over as long. */
  edgeCpuS: Map<string, number>;
  workerCpuS: number;
  seconds: number;
}

async function pingPhase(via: ClusterNode, host: ClusterNode, edges: ClusterNode[], idleRate: Map<string, number>, room: string, opts: Options, tokens: TokenService): Promise<PingPhase> {
  const clients = await Promise.all(
    Array.from({ length: opts.pingers }, async (_, i) => {
      const c = new SignalingClient({ wsUrl: via.wsUrl, peerConfig: (role) => peerConfig(role, LOOPBACK_ICE), sinkFor: () => ({ onPacket: () => {} }) });
      await c.connect();
      await c.join({ token: await tokens.mint({ identity: `pinger-${via.id}-${i}`, room, grants: ['subscribe'] }) });
      return c;
    }),
  );
  try {
    await sleep(500);
    const roots = [...edges.map((n) => n.pid!), host.workerPids[0]!];
    const a = { at: performance.now(), usage: treeUsage(roots) };
    let pongs = 0;
    let failures = 0;
    const inflight = new Set<Promise<void>>();
    const timers = clients.map((c, i) =>
      setTimeout(() => {
        timers[i] = setInterval(() => {
          const p = c.request({ type: 'ping', t: Date.now() }).then(
            (reply) => {
              if (reply.type === 'pong') pongs++;
              else failures++;
            },
            () => {
              failures++;
            },
          );
          inflight.add(p);
          void p.finally(() => inflight.delete(p));
        }, PING_INTERVAL_MS);
      }, (i * PING_INTERVAL_MS) / clients.length),
    );
    await sleep(opts.pingSeconds * 1000);
    for (const t of timers) clearTimeout(t);
    await Promise.all(inflight);
    const b = { at: performance.now(), usage: treeUsage(roots) };
    if (failures > 0) say(`  (${failures} pings through ${via.id} got no pong)`);
    const seconds = (b.at - a.at) / 1000;
    const edgeCpuS = new Map<string, number>();
    edges.forEach((n, i) => edgeCpuS.set(n.id, b.usage[i]!.rootCpuS - a.usage[i]!.rootCpuS - idleRate.get(n.id)! * seconds));
    const w = edges.length;
    return { messages: 2 * pongs, edgeCpuS, workerCpuS: b.usage[w]!.cpuS - a.usage[w]!.cpuS, seconds };
  } finally {
    await Promise.all(clients.map((c) => c.close({ leave: true })));
  }
}

interface RelayCpuResult {
  idlePct: Map<string, number>;
  relayed: PingPhase;
  direct: PingPhase;
}

async function relayCpu(host: ClusterNode, relay: ClusterNode, opts: Options, tokens: TokenService): Promise<RelayCpuResult> {
  const room = roomHostedBy(host.id, 'bench-ping');
  const edges = [relay, host];
  const a = { at: performance.now(), usage: treeUsage(edges.map((n) => n.pid!)) };
  await sleep(IDLE_S * 1000);
  const b = { at: performance.now(), usage: treeUsage(edges.map((n) => n.pid!)) };
  const idleRate = new Map<string, number>();
  edges.forEach((n, i) => idleRate.set(n.id, (b.usage[i]!.rootCpuS - a.usage[i]!.rootCpuS) / ((b.at - a.at) / 1000)));
  const relayed = await pingPhase(relay, host, edges, idleRate, room, opts, tokens);
  const direct = await pingPhase(host, host, edges, idleRate, room, opts, tokens);
  return { idlePct: new Map([...idleRate].map(([k, v]) => [k, 100 * v])), relayed, direct };
}

// ---- 4. and 5. media again after kill -9, and after a drain -----------------------------------

interface RecoveryResult {
  label: string;
  recoveryMs: number[];
  /** Per round: where the room went. */
  newHosts: string[];
  failures: number;
}

/** What happens to the hosting node in each round, and how it is brought back before the next. */
interface Disruption {
  /** In the printout: "kill", "drain". */
  verb: string;
  rounds: number;
  apply(): Promise<void>;
  restore(): Promise<void>;
}

/** The participants of one round, entering through a node that survives. */
interface RoundSubjects {
  readonly names: readonly string[];
  /** Joins them to `room`; resolves once each receives the others' media. */
  start(room: string): Promise<void>;
  /** Just before the disruption: what "anew" is measured against (the participants' sids, packet counts). */
  mark(): Promise<void>;
  /** Per participant: it receives the others' media again, from their rejoined selves. */
  back(): Promise<boolean[]>;
  close(): Promise<void>;
}

/** Two browser SDK participants: call pages in headless Chromium that publish camera and microphone. */
class SdkPair implements RoundSubjects {
  readonly names = ['alice', 'bob'] as const;
  private readonly pages: CallPage[] = [];
  private sids: (string | undefined)[] = [];
  private readonly browser: Browser;
  private readonly entry: ClusterNode;
  private readonly tokens: TokenService;

  constructor(browser: Browser, entry: ClusterNode, tokens: TokenService) {
    this.browser = browser;
    this.entry = entry;
    this.tokens = tokens;
  }

  async start(room: string): Promise<void> {
    for (const name of this.names) {
      const token = await this.tokens.mint({ identity: name, room, grants: ['publish', 'subscribe'] });
      this.pages.push(await CallPage.open(this.browser, { baseUrl: this.entry.httpUrl, room, name, query: { token } }));
    }
    await until(async () => (await this.receiving()).every(Boolean), 'the two pages to receive each other', 20_000);
  }

  async mark(): Promise<void> {
    this.sids = await Promise.all(this.pages.map((p) => p.localSid()));
  }

  back(): Promise<boolean[]> {
    return this.receiving();
  }

  /** Whether each page receives video from the other, from a participant whose sid is not the marked one. */
  private receiving(): Promise<boolean[]> {
    return Promise.all(
      this.pages.map(async (page, i) => {
        const other = 1 - i;
        const [stats, people] = await Promise.all([page.stats(), page.participants()]);
        const sid = people.find((p) => p.name === this.names[other] && p.sid !== this.sids[other])?.sid;
        const s = sid === undefined ? undefined : stats.find((x) => !x.local && x.participantSid === sid);
        return s?.tracks.some((t) => t.kind === 'video' && t.packets > 0) === true;
      }),
    );
  }

  async close(): Promise<void> {
    await Promise.all(this.pages.map((p) => p.close()));
  }
}

/**
 * Two load-tool participants (src/loadtest/participant.ts), both publishing VP8 + Opus and
 * receiving each other, which rejoin by themselves with the SDK's schedule.
 */
class LoadToolPair implements RoundSubjects {
  readonly names = ['pub-a', 'pub-b'] as const;
  private participants: Participant[] = [];
  private marks: number[] = [];
  private readonly entry: ClusterNode;
  private readonly tokens: TokenService;

  constructor(entry: ClusterNode, tokens: TokenService) {
    this.entry = entry;
    this.tokens = tokens;
  }

  async start(room: string): Promise<void> {
    const env = {
      // Like the SDK, which rejoins through the page's own origin.
      wsUrls: [this.entry.wsUrl],
      ice: LOOPBACK_ICE,
      useIceServers: false,
      publish: { videoBitrateKbps: 500, fps: 30, audio: true },
      latency: new LatencyRecorder(),
      problem: () => {},
    };
    this.participants = this.names.map((identity) => new Participant({ room, identity, publisher: true, expectedTracks: 2 }, env));
    await Promise.all(
      this.participants.map(async (p) => {
        await p.join(await this.tokens.mint({ identity: p.spec.identity, room, grants: ['publish', 'subscribe'] }), 20_000);
        if (p.state !== 'joined') throw new Error(`${p.spec.identity} did not join: ${p.failure}`);
      }),
    );
    await until(async () => (await this.receiving()).every(Boolean), 'the two participants to receive each other', 20_000);
  }

  async mark(): Promise<void> {
    this.marks = this.participants.map((p) => p.tracks.length);
  }

  back(): Promise<boolean[]> {
    return this.receiving();
  }

  /** Whether each receives the other's video on a track made after the mark (a rejoin makes new ones). */
  private receiving(): Promise<boolean[]> {
    return Promise.resolve(
      this.participants.map((p, i) => p.tracks.slice(this.marks[i] ?? 0).some((t) => t.video && t.packets > 0 && t.identity === this.names[1 - i])),
    );
  }

  async close(): Promise<void> {
    await Promise.all(this.participants.map((p) => p.close()));
  }
}

interface SubjectKind {
  label: string;
  make(): RoundSubjects;
}

/**
 * `d.rounds` rounds. In each, every kind of participants joins its own room hosted by the
 * victim (so one disruption measures them all, as a node with several rooms would fail or
 * drain), the disruption is applied, and each participant's time until it receives media
 * again is taken; then the victim is restored (restarted with the same id and port, or its
 * drain cancelled) before the next round.
 */
async function disrupt(d: Disruption, kinds: SubjectKind[], victim: ClusterNode, redis: Redis): Promise<RecoveryResult[]> {
  const results = kinds.map((k): RecoveryResult => ({ label: k.label, recoveryMs: [], newHosts: [], failures: 0 }));
  for (let k = 0; k < d.rounds; k++) {
    const rounds = kinds.map((kind) => ({ kind, room: roomHostedBy(victim.id, `bench-${d.verb}-${kind.label}-${k}`), subjects: kind.make(), back: [] as (number | undefined)[], ok: false }));
    try {
      await Promise.all(
        rounds.map(async (r, i) => {
          try {
            await r.subjects.start(r.room);
            const host = await redis.get(`scv:room:${r.room}`);
            if (host !== victim.id) throw new Error(`room ${r.room} is hosted by ${host}, not ${victim.id}`);
            await r.subjects.mark();
            r.back = r.subjects.names.map(() => undefined);
            r.ok = true;
          } catch (err) {
            results[i]!.failures++;
            say(`  ${d.verb} ${k + 1} ${r.kind.label}: ${(err as Error).message} (before the ${d.verb})`);
          }
        }),
      );
      const live = rounds.filter((r) => r.ok);
      if (live.length === 0) continue;
      const disruptedAt = performance.now();
      await d.apply();
      const end = disruptedAt + RECOVERY_TIMEOUT_MS;
      while (performance.now() < end && live.some((r) => r.back.some((ms) => ms === undefined))) {
        await Promise.all(
          live.map(async (r) => {
            const now = await r.subjects.back();
            now.forEach((b, i) => (r.back[i] ??= b ? performance.now() - disruptedAt : undefined));
          }),
        );
        await sleep(50);
      }
      for (const r of live) {
        const result = results[rounds.indexOf(r)]!;
        const times = r.subjects.names.map((n, i) => `${n} ${r.back[i] === undefined ? 'not back' : `${f0(r.back[i])} ms`}`).join(', ');
        const newHost = (await redis.get(`scv:room:${r.room}`)) ?? '?';
        if (r.back.every((ms) => ms !== undefined)) {
          result.recoveryMs.push(Math.max(...(r.back as number[])));
          result.newHosts.push(newHost);
          say(`  ${d.verb} ${k + 1} ${r.kind.label}: media again after ${times}; room now on ${newHost}`);
        } else {
          result.failures++;
          say(`  ${d.verb} ${k + 1} ${r.kind.label}: not back within ${RECOVERY_TIMEOUT_MS / 1000} s (${times}; room on ${newHost})`);
        }
      }
    } finally {
      await Promise.all(rounds.map((r) => r.subjects.close()));
      await d.restore();
    }
  }
  return results;
}

function printRecovery(d: Disruption, r: RecoveryResult): string {
  const p50 = percentile(r.recoveryMs, 50);
  const byHost = IDS.flatMap((id) => {
    const ms = r.recoveryMs.filter((_, i) => r.newHosts[i] === id);
    return ms.length === 0 ? [] : [`${ms.length} to ${id} (p50 ${f0(percentile(ms, 50))} ms)`];
  });
  say(
    `  ${r.label}: ${d.verb} → every participant receives media again: p50 ${f0(p50)} ms, min ${f0(Math.min(...r.recoveryMs))} ms, max ${f0(Math.max(...r.recoveryMs))} ms ` +
      `over ${r.recoveryMs.length} rounds${r.failures > 0 ? `, ${r.failures} failed` : ''}; rooms moved: ${byHost.join(', ')}`,
  );
  return `media again after a ${d.verb} (${r.label}): p50 ${f0(p50)} ms, max ${f0(Math.max(...r.recoveryMs))} ms`;
}

// ---- the run -----------------------------------------------------------------------------------

async function main(opts: Options): Promise<void> {
  bringUpLoopback();
  if (opts.parts.has(4)) await buildWeb();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'scv-bench-cluster-'));
  const tokens = new TokenService(API_KEY, API_SECRET);
  const started = performance.now();
  say(
    `cluster bench: ${os.availableParallelism()} cores (${os.cpus()[0]?.model ?? '?'}), load average ${loadAverage().join(' ')}; ` +
      `load ${opts.rooms} rooms × (${opts.publishers} publishers + ${opts.subscribers} subscribers), VP8 ${opts.videoBitrate} kbps + Opus, ${opts.duration} s window`,
  );
  const redisServer = await RedisServer.start();
  const redis = new Redis(redisServer.url, { maxRetriesPerRequest: 1 });
  const nodes = IDS.map(
    (id, i) => new ClusterNode(id, CLUSTER_PORTS[i]!, nodeEnv(opts, { SCV_MEDIA_WORKERS: '1', SCV_REDIS_URL: redisServer.url, SCV_CLUSTER_SECRET: CLUSTER_SECRET, SCV_NODE_ID: id })),
  );
  const [n1, n2] = nodes as [ClusterNode, ClusterNode];
  const conclusions: string[] = [];
  try {
    let one: LoadResult | undefined;
    if (opts.parts.has(1)) {
      const partStart = performance.now();
      say(`\n1. the same load, one node × ${opts.singleWorkers} workers (no Redis) vs three nodes × 1 worker (Redis), the tool entering through the first node`);
      const single = new ClusterNode('single', SINGLE_PORT, nodeEnv(opts, { SCV_MEDIA_WORKERS: String(opts.singleWorkers) }));
      try {
        single.start();
        await single.ready();
        one = await runLoad('one-node', [single], opts, dir);
      } finally {
        await single.stop();
      }
      printLoad(one);
      say(`  (one node: ${f0((performance.now() - partStart) / 1000)} s)`);
    }

    // One at a time: six processes booting at once on two cores can miss the worker start deadline.
    for (const n of nodes) {
      n.start();
      await n.ready();
    }
    await Promise.all(nodes.map((n) => n.ready(nodes.length)));

    if (one !== undefined) {
      const partStart = performance.now();
      const three = await runLoad('three-nodes', nodes, opts, dir);
      printLoad(three);
      say(`  (three nodes: ${f0((performance.now() - partStart) / 1000)} s)`);
      say(`\n| | one node × ${opts.singleWorkers} workers | three nodes × 1 worker | ratio (three / one) |`);
      say('|---|--:|--:|--:|');
      const sum = (r: LoadResult) => r.nodeCpuPct.reduce((a, b) => a + b, 0);
      const row = (what: string, a: number, b: number, fmt: (n: number) => string) => say(`| ${what} | ${fmt(a)} | ${fmt(b)} | ${(b / a).toFixed(2)} |`);
      row('forwarded pkt/s', one.forwardedPerS, three.forwardedPerS, f0);
      row('CPU of the nodes, % of a core', sum(one), sum(three), f1);
      row('edge CPU (all edges), %', one.edgeCpuPct.reduce((a, b) => a + b, 0), three.edgeCpuPct.reduce((a, b) => a + b, 0), f1);
      row('busiest media worker, %', Math.max(...one.workerCpuPct), Math.max(...three.workerCpuPct), f1);
      row('µs CPU per forwarded packet', one.usPerPacket, three.usPerPacket, f1);
      row('capacity (busiest worker at 100 %), pkt/s', one.capacityPerS, three.capacityPerS, f0);
      row('load tool CPU, %', one.toolCpuPct, three.toolCpuPct, f1);
      say(`| delivered / loss | ${one.summary.receive.deliveredPercent} % / ${one.summary.loss.percent} % | ${three.summary.receive.deliveredPercent} % / ${three.summary.loss.percent} % | |`);
      say(`| latency p50 / p99, ms | ${one.summary.latencyMs.p50} / ${one.summary.latencyMs.p99} | ${three.summary.latencyMs.p50} / ${three.summary.latencyMs.p99} | |`);
      say(`| rooms per worker / per node | ${one.rooms.join(' / ')} | ${three.rooms.join(' / ')} | |`);
      conclusions.push(
        `load: three nodes spend ${(three.usPerPacket / one.usPerPacket).toFixed(2)}× the CPU per forwarded packet of one node; ` +
          `capacity with the rooms where they were placed: ${(three.capacityPerS / one.capacityPerS).toFixed(2)}×`,
      );
    }

    if (opts.parts.has(2)) {
      const partStart = performance.now();
      say(`\n2. join time, ${opts.joins} joins each way to a room hosted by ${n1.id} with one publisher: direct (at ${n1.id}) vs relayed (at ${n2.id})`);
      const joins = await joinTimes(n1, n2, opts, tokens);
      const jp = (s: JoinSample[], k: keyof JoinSample, p: number) => percentile(s.map((x) => x[k]), p);
      if (joins.failures > 0) say(`  (${joins.failures} joins failed and are not counted)`);
      for (const [label, s] of [['direct', joins.direct], ['relayed', joins.relayed]] as const) {
        say(`  ${label.padEnd(7)}: open → joined p50/p99 ${f1(jp(s, 'joinedMs', 50))} / ${f1(jp(s, 'joinedMs', 99))} ms; open → first media packet p50/p99 ${f1(jp(s, 'mediaMs', 50))} / ${f1(jp(s, 'mediaMs', 99))} ms`);
      }
      say(`  (${f0((performance.now() - partStart) / 1000)} s)`);
      conclusions.push(
        `join: relayed − direct p50 = ${f1(jp(joins.relayed, 'joinedMs', 50) - jp(joins.direct, 'joinedMs', 50))} ms to joined, ` +
          `${f1(jp(joins.relayed, 'mediaMs', 50) - jp(joins.direct, 'mediaMs', 50))} ms to first media`,
      );
    }

    if (opts.parts.has(3)) {
      const partStart = performance.now();
      say(`\n3. relay CPU per signaling message: ${opts.pingers} clients × ${1000 / PING_INTERVAL_MS} pings/s for ${opts.pingSeconds} s to a room on ${n1.id}, through ${n2.id}, then at ${n1.id} directly`);
      const cpu = await relayCpu(n1, n2, opts, tokens);
      const us = (p: PingPhase, id: string) => (1e6 * p.edgeCpuS.get(id)!) / p.messages;
      say(`  idle edge CPU: ${[...cpu.idlePct].map(([id, v]) => `${id} ${v.toFixed(2)} %`).join(', ')} (subtracted below)`);
      say(
        `  relayed: ${cpu.relayed.messages} messages (${f0(cpu.relayed.messages / cpu.relayed.seconds)}/s); non-hosting edge ${n2.id} ${f1(us(cpu.relayed, n2.id))} µs/message, ` +
          `hosting edge ${n1.id} ${f1(us(cpu.relayed, n1.id))} µs/message, worker ${f1((1e6 * cpu.relayed.workerCpuS) / cpu.relayed.messages)} µs/message`,
      );
      say(
        `  direct:  ${cpu.direct.messages} messages (${f0(cpu.direct.messages / cpu.direct.seconds)}/s); hosting edge ${n1.id} ${f1(us(cpu.direct, n1.id))} µs/message, ` +
          `worker ${f1((1e6 * cpu.direct.workerCpuS) / cpu.direct.messages)} µs/message`,
      );
      say(`  (${f0((performance.now() - partStart) / 1000)} s)`);
      conclusions.push(`relay CPU: the non-hosting edge spends ${(us(cpu.relayed, n2.id) / us(cpu.direct, n1.id)).toFixed(2)}× what the hosting edge spends per message with its clients connected directly`);
    }

    if (opts.parts.has(4) || opts.parts.has(5)) {
      const browser = await launchChromium();
      try {
        const kinds: SubjectKind[] = [
          { label: 'sdk', make: () => new SdkPair(browser, n2, tokens) },
          { label: 'load-tool', make: () => new LoadToolPair(n2, tokens) },
        ];
        const kill: Disruption = {
          verb: 'kill',
          rounds: opts.kills,
          apply: () => n1.kill9(),
          restore: async () => {
            n1.start();
            await n1.ready(nodes.length);
            await until(async () => (await Promise.all(nodes.map((n) => n.health()))).every((h) => h.cluster?.nodes === nodes.length), 'every node to see the restarted victim', 10_000);
          },
        };
        const drain: Disruption = {
          verb: 'drain',
          rounds: opts.drains,
          apply: async () => void (await adminRequest(n2, 'POST', `/video/nodes/${n1.id}/drain`, tokens)),
          restore: async () => {
            await adminRequest(n2, 'DELETE', `/video/nodes/${n1.id}/drain`, tokens);
            const takesRooms = async (via: ClusterNode) => {
              const { nodes: seen } = (await adminRequest(via, 'GET', '/video/nodes', tokens)) as { nodes: { id: string; draining: boolean }[] };
              return seen.some((n) => n.id === n1.id && !n.draining);
            };
            await until(async () => (await Promise.all(nodes.map(takesRooms))).every(Boolean), `every node to see ${n1.id} take rooms again`, 10_000);
          },
        };
        for (const [part, d, what] of [
          [4, kill, `kill -9 of ${n1.id} (edge and worker), ${opts.kills} kills`],
          [5, drain, `a drain of ${n1.id} requested at ${n2.id}, ${opts.drains} drains`],
        ] as const) {
          if (!opts.parts.has(part)) continue;
          const partStart = performance.now();
          say(`\n${part}. media again after ${what}, participants entering through ${n2.id}`);
          for (const r of await disrupt(d, kinds, n1, redis)) conclusions.push(printRecovery(d, r));
          say(`  (${f0((performance.now() - partStart) / 1000)} s)`);
        }
      } finally {
        await browser.close();
      }
    }

    say('');
    for (const c of conclusions) say(c);
    say(`whole run: ${f0((performance.now() - started) / 1000)} s`);
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
    redis.disconnect();
    await redisServer.close();
    await rm(dir, { recursive: true, force: true });
  }
}

const opts = parseOptions(process.argv.slice(2));
await runInNetns(NETNS_MARKER, 'bench:cluster', () => main(opts));
