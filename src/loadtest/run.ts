/**
 * One load-test run: participants join at the join rate (publishers of every room first,
 * then subscribers), then `duration` seconds are measured; a progress line every second,
 * a summary at the end. Every phase is bounded in time, and everything is closed at the end.
 */
import { randomBytes } from 'node:crypto';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { PeerConfig } from 'werift';
import type { Grant } from '../auth/tokens.ts';
import type { Options } from './options.ts';
import { Participant, type ParticipantSpec } from './participant.ts';
import { formatProgress, type Summary } from './report.ts';
import { LatencyRecorder } from './latency-recorder.ts';

export interface LoadTarget {
  /** For the report, e.g. "in-process" or the URL(s). */
  description: string;
  /** One signaling URL, or one per node of a cluster: participants spread round-robin over them. */
  wsUrls: string[];
  mintToken(identity: string, room: string, grants: Grant[]): Promise<string>;
  ice: Partial<PeerConfig>;
  useIceServers: boolean;
}

export interface RunIo {
  /** Progress lines. */
  out(line: string): void;
  /** Aborting ends the run early (the summary still comes). */
  signal: AbortSignal;
}

/** Teardown budget: leaving (2 s) plus closing the PeerConnections. */
const CLOSE_TIMEOUT_MS = 8_000;
/** A track counts as subscribed if packets arrived within this many progress ticks. */
const ACTIVE_TICKS = 2;

interface Totals {
  txBytes: number;
  txPackets: number;
  rxBytes: number;
  rxPackets: number;
  /** rxPackets less duplicates. */
  unique: number;
  late: number;
  duplicates: number;
  expected: number;
  gaps: number;
}

const pause = (ms: number, signal: AbortSignal) => sleep(ms, undefined, { signal }).catch(() => {});

function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

const finite = (v: number) => (Number.isFinite(v) ? Math.round(v * 100) / 100 : null);

/** Packets each publisher has sent so far, by identity. */
function sentByIdentity(participants: Participant[]): Map<string, { video: number; audio: number }> {
  const m = new Map<string, { video: number; audio: number }>();
  for (const p of participants) {
    if (p.spec.publisher) {
      const sent = p.sent();
      m.set(p.spec.identity, { video: sent.videoPackets, audio: sent.audioPackets });
    }
  }
  return m;
}

export async function runLoadTest(opts: Options, target: LoadTarget, io: RunIo): Promise<Summary> {
  const runId = randomBytes(3).toString('hex');
  const latency = new LatencyRecorder();
  const problems = new Map<string, number>();
  const problem = (what: string) => problems.set(what, (problems.get(what) ?? 0) + 1);
  const tracksPerPublisher = opts.audio ? 2 : 1;

  const specs: ParticipantSpec[] = [];
  const roomName = (r: number) => `${opts.roomPrefix}-${runId}-${r + 1}`;
  for (let i = 0; i < opts.publishers; i++) {
    for (let r = 0; r < opts.rooms; r++) {
      specs.push({ room: roomName(r), identity: `pub-${r + 1}-${i + 1}`, publisher: true, expectedTracks: (opts.publishers - 1) * tracksPerPublisher });
    }
  }
  for (let i = 0; i < opts.subscribers; i++) {
    for (let r = 0; r < opts.rooms; r++) {
      specs.push({ room: roomName(r), identity: `sub-${r + 1}-${i + 1}`, publisher: false, expectedTracks: opts.publishers * tracksPerPublisher });
    }
  }
  const env = {
    wsUrls: target.wsUrls,
    ice: target.ice,
    useIceServers: target.useIceServers,
    publish: { videoBitrateKbps: opts.videoBitrate, fps: opts.fps, audio: opts.audio },
    latency,
    problem,
  };
  const participants = specs.map((s, i) => new Participant(s, env, i));
  const tracksExpected = specs.reduce((a, s) => a + s.expectedTracks, 0);

  // ---- figures -----------------------------------------------------------------------

  let tickNo = 0;
  const totals = (): Totals => {
    const t: Totals = { txBytes: 0, txPackets: 0, rxBytes: 0, rxPackets: 0, unique: 0, late: 0, duplicates: 0, expected: 0, gaps: 0 };
    for (const p of participants) {
      const sent = p.sent();
      t.txBytes += sent.bytes;
      t.txPackets += sent.videoPackets + sent.audioPackets;
      for (const tr of p.tracks) {
        t.rxBytes += tr.bytes;
        t.rxPackets += tr.packets;
        t.unique += tr.unique;
        t.late += tr.late;
        t.duplicates += tr.duplicates;
        t.expected += tr.expected;
        t.gaps += tr.gaps;
      }
    }
    return t;
  };
  /** Marks tracks that received packets since the last tick. */
  const updateActivity = () => {
    tickNo++;
    for (const p of participants) {
      for (const tr of p.tracks) {
        if (tr.packets !== tr.tickPackets) tr.lastActiveTick = tickNo;
        tr.tickPackets = tr.packets;
      }
    }
  };
  /** Per participant, live tracks with recent packets (at most what it expects). */
  const subscribedTracks = () => {
    let n = 0;
    for (const p of participants) {
      let live = 0;
      for (const tr of p.client.subscriber.live()) if (tickNo - tr.lastActiveTick < ACTIVE_TICKS) live++;
      n += Math.min(live, p.spec.expectedTracks);
    }
    return n;
  };
  /** What each participant lacks (for the summary when tracks are missing), at most 20 lines. */
  const missingTracks = (): string[] => {
    const out: string[] = [];
    const kinds = opts.audio ? ['video', 'audio'] : ['video'];
    for (const p of participants) {
      if (p.state !== 'joined') continue; // its failure is reported as such
      const have = new Set<string>();
      for (const tr of p.client.subscriber.live()) {
        if (tickNo - tr.lastActiveTick < ACTIVE_TICKS) have.add(`${tr.identity}/${tr.video ? 'video' : 'audio'}`);
      }
      const lacks: string[] = [];
      for (const q of participants) {
        if (q === p || !q.spec.publisher || q.spec.room !== p.spec.room) continue;
        for (const k of kinds) if (!have.has(`${q.spec.identity}/${k}`)) lacks.push(`${q.spec.identity}/${k}`);
      }
      if (lacks.length === 0) continue;
      const sub = p.client.subscriber;
      out.push(
        `${p.spec.identity} (${p.state}) lacks ${lacks.join(' ')}; subscriber connection ${sub.connectionState}, ` +
          `${sub.offers} offer(s), ${p.tracks.length} track(s) mapped`,
      );
      if (out.length >= 20) break;
    }
    return out;
  };
  const count = (state: Participant['state']) => participants.reduce((a, p) => a + (p.state === state ? 1 : 0), 0);

  const runStart = performance.now();
  let last = { at: runStart, t: totals() };
  const progress = () => {
    const now = performance.now();
    const t = totals();
    updateActivity();
    const dt = (now - last.at) / 1000;
    const dExpected = t.expected - last.t.expected;
    const dReceived = t.unique - last.t.unique;
    io.out(
      formatProgress({
        elapsedS: (now - runStart) / 1000,
        joined: count('joined'),
        participants: participants.length,
        failed: count('failed'),
        tracksSubscribed: subscribedTracks(),
        tracksExpected,
        rxBps: dt > 0 ? ((t.rxBytes - last.t.rxBytes) * 8) / dt : 0,
        txBps: dt > 0 ? ((t.txBytes - last.t.txBytes) * 8) / dt : 0,
        lossPct: dExpected > 0 ? (Math.max(0, dExpected - dReceived) / dExpected) * 100 : 0,
        latencyP50Ms: latency.tick.percentile(50),
      }),
    );
    latency.tick.reset();
    last = { at: now, t };
  };
  const ticker = setInterval(progress, 1000);

  // ---- join ramp ---------------------------------------------------------------------

  const joins: Promise<void>[] = [];
  const intervalMs = 1000 / opts.joinRate;
  let notStarted = 0;
  for (let i = 0; i < participants.length; i++) {
    const wait = runStart + i * intervalMs - performance.now();
    if (wait > 0) await pause(wait, io.signal);
    if (io.signal.aborted) {
      notStarted = participants.length - i;
      break;
    }
    const p = participants[i]!;
    joins.push(
      target.mintToken(p.spec.identity, p.spec.room, p.spec.publisher ? ['publish', 'subscribe'] : ['subscribe']).then(
        (token) => p.join(token, opts.joinTimeout * 1000),
        (err: Error) => {
          p.state = 'failed';
          p.failure = `token: ${err.message}`;
        },
      ),
    );
  }
  await Promise.all(joins); // each bounded by --join-timeout

  // ---- settle: subscriber connections come up after the joins -------------------------

  // Until every joined participant receives media from every publisher that joined (at
  // most --join-timeout), so the measured window holds the steady state only.
  const joinedPublishers = new Map<string, number>();
  for (const p of participants) {
    if (p.spec.publisher && p.state === 'joined') joinedPublishers.set(p.spec.room, (joinedPublishers.get(p.spec.room) ?? 0) + 1);
  }
  const flowing = () =>
    participants.every((p) => {
      if (p.state !== 'joined') return true;
      const want = ((joinedPublishers.get(p.spec.room) ?? 0) - (p.spec.publisher ? 1 : 0)) * tracksPerPublisher;
      let have = 0;
      for (const tr of p.client.subscriber.live()) if (tr.packets > 0) have++;
      return have >= want;
    });
  const settleEnd = performance.now() + opts.joinTimeout * 1000;
  while (!io.signal.aborted && !flowing() && performance.now() < settleEnd) await pause(100, io.signal);

  // ---- measured window ---------------------------------------------------------------

  const windowStart = performance.now();
  const cpuStart = process.cpuUsage();
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  const start = totals();
  const sentAtStart = sentByIdentity(participants);
  latency.window.reset();
  // Nothing to measure when nobody got in.
  if (!io.signal.aborted && participants.some((p) => p.state === 'joined')) await pause(opts.duration * 1000, io.signal);
  clearInterval(ticker);
  // A last line, unless one just went out (a few ms of figures would be noise).
  if (performance.now() - last.at >= 500) progress();
  else updateActivity();
  const windowEnd = performance.now();
  const cpu = process.cpuUsage(cpuStart);
  loopDelay.disable();
  const end = totals();
  const tracksSubscribed = subscribedTracks();
  const missing = tracksSubscribed < tracksExpected ? missingTracks() : [];
  // End to end: what subscribers got of what their publishers sent in the window (each
  // subscription is one copy), whatever the server did to sequence numbers.
  const sentAtEnd = sentByIdentity(participants);
  let copiesSent = 0;
  for (const p of participants) {
    for (const tr of p.tracks) {
      const a = sentAtStart.get(tr.identity);
      const b = sentAtEnd.get(tr.identity);
      if (a !== undefined && b !== undefined) copiesSent += tr.video ? b.video - a.video : b.audio - a.audio;
    }
  }
  const unmapped = participants.reduce((a, p) => a + p.unmapped, 0);
  const invalidTimes = latency.invalid;

  // ---- teardown ----------------------------------------------------------------------

  for (const p of participants) p.stopMedia();
  let closeTimer: NodeJS.Timeout | undefined;
  const closedAll = await Promise.race([
    Promise.all(participants.map((p) => p.close())).then(() => true),
    new Promise<false>((resolve) => {
      closeTimer = setTimeout(() => resolve(false), CLOSE_TIMEOUT_MS);
    }),
  ]);
  clearTimeout(closeTimer);
  if (!closedAll) problem(`participants not closed within ${CLOSE_TIMEOUT_MS / 1000} s`);

  // ---- summary -----------------------------------------------------------------------

  const windowS = (windowEnd - windowStart) / 1000;
  const joinFailureReasons: Record<string, number> = {};
  let failures = notStarted;
  if (notStarted > 0) joinFailureReasons['not started (interrupted)'] = notStarted;
  for (const p of participants) {
    if (p.state !== 'failed') continue;
    failures++;
    const why = p.failure ?? 'unknown';
    joinFailureReasons[why] = (joinFailureReasons[why] ?? 0) + 1;
  }
  const joinTimes = participants.flatMap((p) => (p.joinMs === undefined ? [] : [p.joinMs])).sort((a, b) => a - b);
  const droppedByServer = participants.filter((p) => p.dropped !== undefined).length;
  const rejoins = participants.flatMap((p) => p.rejoins);
  const recoveries = rejoins.flatMap((r) => (r.recoveredMs === undefined ? [] : [r.recoveredMs])).sort((a, b) => a - b);
  for (const p of participants) if (p.dropped !== undefined) problem(`dropped by server: ${p.dropped}`);
  if (invalidTimes > 0) problem('video packets without a plausible send time');
  const dExpected = end.expected - start.expected;
  const dReceived = end.rxPackets - start.rxPackets;
  const dUnique = end.unique - start.unique;
  const lost = Math.max(0, dExpected - dUnique);
  const rate = (bytes: number) => (windowS > 0 ? (bytes * 8) / windowS / 1e6 : 0);
  const pps = (n: number) => (windowS > 0 ? n / windowS : 0);
  const h = latency.window;
  const summary: Summary = {
    config: {
      target: target.description,
      rooms: opts.rooms,
      publishersPerRoom: opts.publishers,
      subscribersPerRoom: opts.subscribers,
      videoBitrateKbps: opts.videoBitrate,
      fps: opts.fps,
      audio: opts.audio,
      durationS: opts.duration,
      joinRate: opts.joinRate,
    },
    participants: {
      expected: participants.length,
      joined: participants.filter((p) => p.joinMs !== undefined).length,
      joinFailures: failures,
      droppedByServer,
    },
    rejoins: {
      count: rejoins.length,
      recovered: recoveries.length,
      reasons: rejoins.reduce<Record<string, number>>((m, r) => ({ ...m, [r.reason]: (m[r.reason] ?? 0) + 1 }), {}),
      recoveryMs: { p50: finite(percentile(recoveries, 50) ?? Number.NaN), max: finite(recoveries.at(-1) ?? Number.NaN) },
    },
    joinFailureReasons,
    tracks: { subscribed: tracksSubscribed, expected: tracksExpected },
    setupS: Math.round(((windowStart - runStart) / 1000) * 100) / 100,
    windowS: Math.round(windowS * 100) / 100,
    send: { bitrateMbps: finite(rate(end.txBytes - start.txBytes)) ?? 0, packets: end.txPackets - start.txPackets, packetsPerSecond: Math.round(pps(end.txPackets - start.txPackets)) },
    receive: {
      bitrateMbps: finite(rate(end.rxBytes - start.rxBytes)) ?? 0,
      packets: dReceived,
      packetsPerSecond: Math.round(pps(dReceived)),
      deliveredPercent: copiesSent > 0 ? Math.round((dUnique / copiesSent) * 1e5) / 1e3 : null,
    },
    loss: {
      packetsExpected: dExpected,
      packetsLost: lost,
      percent: dExpected > 0 ? Math.round((lost / dExpected) * 1e5) / 1e3 : 0,
      gaps: end.gaps - start.gaps,
      recovered: end.late - start.late,
      duplicates: end.duplicates - start.duplicates,
    },
    latencyMs: { samples: h.count, p50: finite(h.percentile(50)), p99: finite(h.percentile(99)), mean: finite(h.mean), max: h.count > 0 ? finite(h.max) : null },
    joinMs: { p50: finite(percentile(joinTimes, 50) ?? Number.NaN), max: finite(joinTimes.at(-1) ?? Number.NaN) },
    tool: {
      cpuPercent: windowS > 0 ? Math.round(((cpu.user + cpu.system) / 1e3 / (windowS * 1000)) * 1000) / 10 : 0,
      rssMiB: Math.round(process.memoryUsage.rss() / 1048576),
      eventLoopDelayMs: {
        p50: finite(loopDelay.percentile(50) / 1e6),
        p99: finite(loopDelay.percentile(99) / 1e6),
        max: finite(loopDelay.max / 1e6),
      },
    },
    missingTracks: missing,
    unmappedPackets: unmapped,
    problems: Object.fromEntries(problems),
    ok: failures === 0 && tracksSubscribed >= tracksExpected && recoveries.length === rejoins.length,
  };
  return summary;
}
