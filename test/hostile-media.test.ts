/**
 * Hostile datagrams at a live room's media ports (issue 8): 200,000 spoofed DTLS alerts and
 * ClientHellos, forged STUN from thousands of source addresses, never-completing DTLS
 * handshake fragments and random junk of every class (test/helpers/datagram-flood.ts),
 * from foreign addresses, at every server port of one room's sessions. Meanwhile every
 * session of that room and of a second room on the same media process must keep receiving
 * media in every one-second window, /healthz must answer within 100 ms throughout, and the
 * media process's resident memory must come back to within 10 % of where it started.
 * Runs against the edge with a media worker and against one process (SCV_MEDIA_WORKERS=0).
 * A third test sends junk from peers that hold the keys (test/helpers/hostile-peer.ts).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import type { FloodResult, FloodTarget } from './helpers/datagram-flood.ts';
import { TestClient } from './helpers/client.ts';
import { rssBytes, startHealthProbe } from './helpers/health-probe.ts';
import { HostilePeer } from './helpers/hostile-peer.ts';
import { sleep, TestService } from './helpers/service.ts';

const FLOOD_SCRIPT = fileURLToPath(new URL('./helpers/datagram-flood.ts', import.meta.url));
const DATAGRAMS = 200_000;
const RATE = 8_000;
const HEALTH_LIMIT_MS = 100;
const HEALTH_POLL_MS = 50;
const MEMORY_TOLERANCE = 0.1;
/** How long memory may take to come back once the flood stops (GC, freed buffers). */
const SETTLE_MS = 20_000;
const WARM_UP_MS = 6_000;
/** The warm-up flood before the memory baseline: a fifth of the flood, from source addresses the flood never uses. */
const WARM_UP_DATAGRAMS = DATAGRAMS / 5;
const WARM_UP_FIRST_SOURCE = 100_000;
const WARM_UP_SETTLE_MS = 3_000;
const AUTHENTICATED_FUZZ_MS = 15_000;

/** What the scenario needs of a running server, however its media is hosted. */
interface Node {
  label: string;
  wsUrl: string;
  /** /healthz of every process involved: the edge's and the worker's, or the one process's. */
  healthUrls: string[];
  /** /metrics of the process that carries the media. */
  metricsUrl: string;
  mediaPid: number;
  token(identity: string, room: string): Promise<string>;
  close(): Promise<void>;
}

async function edgeNode(): Promise<Node> {
  const svc = await TestService.startEdge(1);
  const worker = svc.service.pool.workers()[0]!;
  return {
    label: 'edge + 1 media worker',
    wsUrl: svc.service.wsUrl,
    healthUrls: [`${svc.httpUrl}/healthz`, `${worker.httpUrl}/healthz`],
    metricsUrl: `${worker.httpUrl}/metrics`,
    mediaPid: worker.pid!,
    token: (identity, room) => svc.token(identity, room),
    close: () => svc.close(),
  };
}

/** `node src/main.ts` with SCV_MEDIA_WORKERS=0: its RSS is the media's alone (no test peers in it). */
async function singleProcessNode(): Promise<Node> {
  const env = { ...process.env, SCV_MEDIA_WORKERS: '0' };
  const child: ChildProcess = spawn(process.execPath, ['src/main.ts', '--http-port', '0', '--log-level', 'info'], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let out = '';
  const keep = (d: string) => {
    out = (out + d).slice(-20_000);
  };
  child.stdout!.setEncoding('utf8');
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', keep);
  const wsUrl = await new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (d: string) => {
      keep(d);
      const m = /"signaling":"(ws:[^"]+)"/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.once('exit', () => reject(new Error(`server exited early: ${out}`)));
  });
  const httpUrl = wsUrl.replace('ws:', 'http:').replace('/video/ws', '');
  return {
    label: 'one process (SCV_MEDIA_WORKERS=0)',
    wsUrl,
    healthUrls: [`${httpUrl}/healthz`],
    metricsUrl: `${httpUrl}/metrics`,
    mediaPid: child.pid!,
    token: async (identity, room) => {
      const res = await fetch(`${httpUrl}/dev/token?room=${room}&identity=${identity}`);
      return ((await res.json()) as { token: string }).token;
    },
    close: async () => {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;

/** Every UDP port the server offered this client, with the ICE credentials of that session. */
function serverTargets(c: TestClient): FloodTarget[] {
  const out: FloodTarget[] = [];
  for (const target of ['publisher', 'subscriber'] as const) {
    const pc = target === 'publisher' ? c.publisherPc : c.subscriberPc;
    const remote = pc?.remoteDescription?.sdp ?? '';
    const local = pc?.localDescription?.sdp ?? '';
    const serverUfrag = /a=ice-ufrag:(\S+)/.exec(remote)?.[1];
    const clientUfrag = /a=ice-ufrag:(\S+)/.exec(local)?.[1];
    const lines = [
      ...remote.split(/\r?\n/).filter((l) => l.startsWith('a=candidate:')),
      ...c.messages.flatMap((m) =>
        m.type === 'candidate' && m.target === target && m.candidate !== null ? [m.candidate.candidate] : [],
      ),
    ];
    for (const line of lines) {
      // candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type>
      const f = line.replace(/^a=/, '').split(' ');
      if (f[2]?.toLowerCase() !== 'udp' || f[4] === undefined) continue;
      const t = { host: f[4], port: Number(f[5]), serverUfrag, clientUfrag };
      if (!out.some((o) => o.host === t.host && o.port === t.port)) out.push(t);
    }
  }
  return out;
}

/** Sum of every sample of a Prometheus metric (all label sets). */
async function metricSum(url: string, name: string): Promise<{ total: number; samples: string[] }> {
  const text = await (await fetch(url)).text();
  const samples = text.split('\n').filter((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return { total: samples.reduce((n, l) => n + Number(l.split(' ').pop()), 0), samples };
}

function runFlood(targets: FloodTarget[], total: number, firstSource = 0): Promise<FloodResult> {
  const child = spawn(process.execPath, [FLOOD_SCRIPT, JSON.stringify({ targets, total, rate: RATE, firstSource })], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d: string) => (out += d));
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => {
      if (code !== 0) reject(new Error(`flood exited with ${code}: ${out}`));
      else resolve(JSON.parse(out) as FloodResult);
    });
  });
}

async function scenario(node: Node): Promise<void> {
  const clients: TestClient[] = [];
  const join = async (identity: string, room: string) => {
    const c = await TestClient.join({ wsUrl: node.wsUrl, token: await node.token(identity, room), name: identity, timeoutMs: 20_000 });
    clients.push(c);
    return c;
  };
  try {
    // Two rooms of two, everyone publishing audio and video to the other.
    const rooms = { hostile: ['h1', 'h2'], bystander: ['b1', 'b2'] } as const;
    const pairs: { client: TestClient; from: string }[] = [];
    for (const [room, ids] of Object.entries(rooms)) {
      const [a, b] = [await join(ids[0], room), await join(ids[1], room)];
      await Promise.all([a.publishTracks([{ kind: 'audio' }, { kind: 'video' }]), b.publishTracks([{ kind: 'audio' }, { kind: 'video' }])]);
      pairs.push({ client: a, from: ids[1] }, { client: b, from: ids[0] });
    }
    for (const { client, from } of pairs) {
      await client.waitForTrackFrom(from, 'video', { minPackets: 30, minKeyframes: 1 });
      await client.waitForTrackFrom(from, 'audio', { minPackets: 20 });
    }
    const targets = clients.slice(0, 2).flatMap(serverTargets);
    assert.ok(targets.length >= 4, `the hostile room's sessions use at least 4 server ports (got ${JSON.stringify(targets)})`);
    assert.ok(targets.every((t) => t.serverUfrag !== undefined && t.clientUfrag !== undefined), 'every target has its ICE credentials');

    // A fresh process's RSS still climbs for a few seconds once media flows (allocator, JIT),
    // and the first hostile datagrams of each kind make it take pages and compile code once
    // (seen here as a step of 8-24 MiB that differs from run to run). So the
    // baseline is taken after a warm-up flood of a fifth of the size from other addresses:
    // memory kept per datagram or per source address still shows, five times over.
    await sleep(WARM_UP_MS);
    await runFlood(targets, WARM_UP_DATAGRAMS, WARM_UP_FIRST_SOURCE);
    await sleep(WARM_UP_SETTLE_MS);
    const rssBefore = rssBytes(node.mediaPid);

    // Watchers: health latency and memory (in a process of their own), media per one-second window.
    const probe = await startHealthProbe({ urls: node.healthUrls, pid: node.mediaPid, intervalMs: HEALTH_POLL_MS, limitMs: HEALTH_LIMIT_MS });
    await metricSum(node.metricsUrl, 'scv_process_nodejs_eventloop_lag_max_seconds'); // starts a new maximum
    let watching = true;
    const tracks = pairs.flatMap(({ client, from }) =>
      (['audio', 'video'] as const).map((kind) => ({ name: `${client.identity} ← ${from} ${kind}`, client, rec: client.tracksFrom(from, kind)[0]! })),
    );
    const starved: string[] = [];
    let windows = 0;
    let minPerWindow = Number.POSITIVE_INFINITY;
    const mediaLoop = (async () => {
      let last = tracks.map((t) => t.rec.packets);
      while (watching) {
        await sleep(1_000);
        windows++;
        const now = tracks.map((t) => t.rec.packets);
        tracks.forEach((t, i) => {
          const got = now[i]! - last[i]!;
          minPerWindow = Math.min(minPerWindow, got);
          if (got === 0) starved.push(`${t.name}: no packets in second ${windows}`);
        });
        last = now;
      }
    })();
    const ownLoop = monitorEventLoopDelay({ resolution: 10 });
    ownLoop.enable();

    const result = await runFlood(targets, DATAGRAMS);
    await sleep(2_000); // media must also survive the flood's tail
    watching = false;
    await mediaLoop;
    ownLoop.disable();
    const health = await probe.stop();
    const loopLag = await metricSum(node.metricsUrl, 'scv_process_nodejs_eventloop_lag_max_seconds');

    const settleEnd = Date.now() + SETTLE_MS;
    let rssAfter = rssBytes(node.mediaPid);
    while (rssAfter > rssBefore * (1 + MEMORY_TOLERANCE) && Date.now() < settleEnd) {
      await sleep(500);
      rssAfter = rssBytes(node.mediaPid);
    }
    const dropped = await metricSum(node.metricsUrl, 'scv_media_packets_dropped_total').catch(() => ({ total: Number.NaN, samples: [] }));

    const figures =
      `${node.label}: ${result.sent} datagrams from ${result.sourceAddresses} source addresses in ${result.durationMs} ms (${result.rate}/s) ` +
      `at ${targets.length} ports; by class ${JSON.stringify(result.byClass)}; /healthz max ${health.maxMs} ms over ${health.polls} polls; ` +
      `media RSS before ${mib(rssBefore)}, peak ${mib(health.rssPeakBytes)}, after ${mib(rssAfter)}; ` +
      `media event-loop delay max ${(loopLag.total * 1000).toFixed(1)} ms (test process ${(ownLoop.max / 1e6).toFixed(1)} ms); ` +
      `fewest packets of one track in a second ${minPerWindow}; dropped ${dropped.samples.join(', ') || 'no counter'}`;
    process.stdout.write(`# ${figures}\n`);

    assert.ok(result.sent >= DATAGRAMS, figures);
    assert.deepEqual(starved, [], `every session keeps receiving media in every second (${figures})`);
    for (const c of clients) {
      assert.equal(c.publisherPc?.connectionState, 'connected', `${c.identity}'s publisher connection (${figures})`);
      assert.equal(c.subscriberPc?.connectionState, 'connected', `${c.identity}'s subscriber connection (${figures})`);
      assert.deepEqual(c.eventsOf('left'), [], `${c.identity} stays in the room`);
    }
    assert.deepEqual(health.slow, [], `/healthz answers 200 within ${HEALTH_LIMIT_MS} ms throughout (${figures})`);
    assert.ok(rssAfter <= rssBefore * (1 + MEMORY_TOLERANCE), `media memory returns to within 10 % (${figures})`);
    assert.ok(dropped.total > 0, `the media process counts what it drops (${figures})`);
    // And the calls are still whole afterwards.
    for (const t of tracks) await t.client.waitForMorePackets(t.rec, t.rec.kind === 'video' ? 30 : 20, 5_000);
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await node.close();
  }
}

test('a hostile datagram flood at one room leaves both rooms whole (edge + media worker)', async () => {
  await scenario(await edgeNode());
});

test('a hostile datagram flood at one room leaves both rooms whole (one process)', async () => {
  await scenario(await singleProcessNode());
});

/**
 * Point 9 of the issue: junk from peers that hold the keys. An attacker publishes a track
 * and sends hostile RTP on it (sequence wraps and jumps, foreign SSRCs, CSRC lists,
 * extension blocks, padding, codec-looking payloads) while the room is being recorded,
 * and sends hostile RTCP on both of its connections (NACK storms, overrunning compounds,
 * transport-cc with the largest counts, SR/RR/SDES/REMB with the largest counts, bad
 * lengths and padding), then the recording stops (its jitter buffer full of junk is
 * flushed). A victim in the room and a second room on the same media worker keep receiving
 * media every second, /healthz keeps answering within 100 ms, and memory comes back to
 * within 10 %.
 */
test('junk from authenticated peers (RTP into the SFU and the recorder, RTCP on both connections) stalls nothing', async () => {
  const svc = await TestService.startEdge(1);
  const worker = svc.service.pool.workers()[0]!;
  try {
    const legit = await svc.join('legit', 'fuzzed');
    const attacker = await svc.join('attacker', 'fuzzed');
    const victim = await svc.join('victim', 'fuzzed');
    const b1 = await svc.join('b1', 'calm');
    const b2 = await svc.join('b2', 'calm');
    await Promise.all([legit, b1, b2].map((c) => c.publishTracks([{ kind: 'audio' }, { kind: 'video' }])));
    const [attackerVideo] = await attacker.publishTracks([{ kind: 'video' }]);
    attacker.stopMedia(attackerVideo!);
    const watched = [
      ...(['audio', 'video'] as const).map((kind) => ({ client: victim, from: 'legit', kind })),
      ...(['audio', 'video'] as const).map((kind) => ({ client: attacker, from: 'legit', kind })),
      ...(['audio', 'video'] as const).flatMap((kind) => [
        { client: b1, from: 'b2', kind },
        { client: b2, from: 'b1', kind },
      ]),
    ];
    for (const w of watched) await w.client.waitForTrackFrom(w.from, w.kind, { minPackets: 20 });
    const admin = await svc.token('ops', undefined, ['admin']);
    const rec = await svc.fetch('/video/rooms/fuzzed/recording', { method: 'POST', headers: { authorization: `Bearer ${admin}` } });
    assert.equal(rec.status, 201, JSON.stringify(rec.body));

    const sender = attackerVideo!.transceiver.sender;
    const rtpPeer = new HostilePeer({ dtls: sender.dtlsTransport, ssrc: sender.ssrc, payloadType: sender.codec!.payloadType, mediaSsrcs: [] });
    const fromLegit = attacker.tracksFrom('legit');
    const rtcpPeer = new HostilePeer({ dtls: fromLegit[0]!.transceiver.receiver.dtlsTransport, mediaSsrcs: fromLegit.map((t) => t.ssrc!) });

    await sleep(WARM_UP_MS);
    const rssBefore = rssBytes(worker.pid!);
    const probe = await startHealthProbe({ urls: [`${svc.httpUrl}/healthz`, `${worker.httpUrl}/healthz`], pid: worker.pid!, intervalMs: HEALTH_POLL_MS, limitMs: HEALTH_LIMIT_MS });
    await metricSum(`${worker.httpUrl}/metrics`, 'scv_process_nodejs_eventloop_lag_max_seconds');
    const tracks = watched.map((w) => ({ name: `${w.client.identity} ← ${w.from} ${w.kind}`, rec: w.client.tracksFrom(w.from, w.kind)[0]! }));
    const starved: string[] = [];
    let last = tracks.map((t) => t.rec.packets);
    const end = Date.now() + AUTHENTICATED_FUZZ_MS;
    let nextWindow = Date.now() + 1_000;
    let window = 0;
    while (Date.now() < end) {
      // Up to 5 RTP and 5 RTCP datagrams every 10 ms: making them costs this process, whose
      // peers (and the edge) share the 2 cores with the worker being measured.
      for (let i = 0; i < 5; i++) {
        rtpPeer.sendRtp();
        rtcpPeer.sendRtcp();
        if (i % 2 === 0) new HostilePeer({ dtls: sender.dtlsTransport, mediaSsrcs: [] }).sendRtcp();
      }
      await sleep(10);
      if (Date.now() >= nextWindow) {
        nextWindow += 1_000;
        window++;
        const now = tracks.map((t) => t.rec.packets);
        tracks.forEach((t, i) => {
          if (now[i] === last[i]) starved.push(`${t.name}: no packets in second ${window}`);
        });
        last = now;
      }
    }
    await sleep(1_000);
    // Stopping the recording flushes its jitter buffer full of junk: still under the probe.
    const stopped = await svc.fetch('/video/rooms/fuzzed/recording', { method: 'DELETE', headers: { authorization: `Bearer ${admin}` } });
    await sleep(500);
    const health = await probe.stop();
    const lag = await metricSum(`${worker.httpUrl}/metrics`, 'scv_process_nodejs_eventloop_lag_max_seconds');
    const settleEnd = Date.now() + SETTLE_MS;
    let rssAfter = rssBytes(worker.pid!);
    while (rssAfter > rssBefore * (1 + MEMORY_TOLERANCE) && Date.now() < settleEnd) {
      await sleep(500);
      rssAfter = rssBytes(worker.pid!);
    }
    const figures =
      `${rtpPeer.rtpSent} hostile RTP and ${rtcpPeer.rtcpSent} hostile RTCP datagrams in ${AUTHENTICATED_FUZZ_MS} ms; /healthz max ${health.maxMs} ms over ${health.polls} polls; ` +
      `media event-loop delay max ${(lag.total * 1000).toFixed(1)} ms; worker RSS before ${mib(rssBefore)}, peak ${mib(health.rssPeakBytes)}, after ${mib(rssAfter)}`;
    process.stdout.write(`# authenticated junk: ${figures}\n`);
    assert.ok(rtpPeer.rtpSent > 5_000, figures);
    assert.deepEqual(starved, [], `the victim and the other room keep receiving media (${figures})`);
    assert.deepEqual(health.slow, [], `/healthz answers 200 within ${HEALTH_LIMIT_MS} ms throughout (${figures})`);
    assert.ok(rssAfter <= rssBefore * (1 + MEMORY_TOLERANCE), `media memory returns to within 10 % (${figures})`);
    assert.equal(stopped.status, 200, 'the recorder of the fuzzed room still answers');
  } finally {
    await svc.close();
  }
});
