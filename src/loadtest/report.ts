/**
 * Figures of a load-test run: the latency histogram, the progress line and the summary
 * (table and JSON).
 */

/**
 * Latency histogram without keeping samples: 0.05 ms buckets up to 100 ms, 1 ms buckets up
 * to 10 s, then one overflow bucket. Percentiles report a bucket's upper edge.
 */
export class Histogram {
  private static readonly FINE_MS = 0.05;
  private static readonly FINE_LIMIT_MS = 100;
  private static readonly COARSE_LIMIT_MS = 10_000;
  private static readonly FINE = Histogram.FINE_LIMIT_MS / Histogram.FINE_MS; // 2000
  private static readonly BUCKETS = Histogram.FINE + (Histogram.COARSE_LIMIT_MS - Histogram.FINE_LIMIT_MS) + 1;
  private readonly counts = new Uint32Array(Histogram.BUCKETS);
  count = 0;
  sum = 0;
  max = 0;

  record(ms: number): void {
    const v = ms > 0 ? ms : 0;
    let i: number;
    if (v < Histogram.FINE_LIMIT_MS) i = Math.floor(v / Histogram.FINE_MS);
    else if (v < Histogram.COARSE_LIMIT_MS) i = Histogram.FINE + Math.floor(v - Histogram.FINE_LIMIT_MS);
    else i = Histogram.BUCKETS - 1;
    this.counts[i]!++;
    this.count++;
    this.sum += v;
    if (v > this.max) this.max = v;
  }

  /** p in [0, 100]; NaN when empty. */
  percentile(p: number): number {
    if (this.count === 0) return Number.NaN;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    let seen = 0;
    for (let i = 0; i < Histogram.BUCKETS; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) {
        if (i < Histogram.FINE) return (i + 1) * Histogram.FINE_MS;
        if (i < Histogram.BUCKETS - 1) return Histogram.FINE_LIMIT_MS + (i - Histogram.FINE) + 1;
        return this.max;
      }
    }
    return this.max;
  }

  get mean(): number {
    return this.count === 0 ? Number.NaN : this.sum / this.count;
  }

  reset(): void {
    this.counts.fill(0);
    this.count = 0;
    this.sum = 0;
    this.max = 0;
  }
}

export interface ProgressFigures {
  elapsedS: number;
  joined: number;
  participants: number;
  failed: number;
  tracksSubscribed: number;
  tracksExpected: number;
  rxBps: number;
  txBps: number;
  lossPct: number;
  latencyP50Ms: number;
}

export interface Summary {
  /** What ran: the options that shape the load, and the target. */
  config: {
    target: string;
    rooms: number;
    publishersPerRoom: number;
    subscribersPerRoom: number;
    videoBitrateKbps: number;
    fps: number;
    audio: boolean;
    durationS: number;
    joinRate: number;
  };
  participants: { expected: number; joined: number; joinFailures: number; droppedByServer: number };
  /**
   * Automatic rejoins (socket lost, or `left` for a node or media worker that died or a room
   * that moved), by reason; `recovered`: those after which media from every expected track
   * came again within the join timeout; `recoveryMs`: from the drop to that moment.
   */
  rejoins: { count: number; recovered: number; reasons: Record<string, number>; recoveryMs: { p50: number | null; max: number | null } };
  /** Why joins failed (message → count). */
  joinFailureReasons: Record<string, number>;
  tracks: { subscribed: number; expected: number };
  /** From the start to the measured window: joins, then until every subscription has media. */
  setupS: number;
  /** The measured window (--duration): send, receive, loss and latency figures cover it. */
  windowS: number;
  send: { bitrateMbps: number; packets: number; packetsPerSecond: number };
  /** `deliveredPercent`: packets received / packets the publishers sent × their subscriptions. */
  receive: { bitrateMbps: number; packets: number; packetsPerSecond: number; deliveredPercent: number | null };
  /**
   * Sequence numbers missing at the end of the window (expected - distinct received, as in
   * RFC 3550); `gaps`: forward jumps seen; `recovered`: packets that arrived late and filled
   * a gap (NACK retransmissions); `duplicates`: packets received twice.
   */
  loss: { packetsExpected: number; packetsLost: number; percent: number; gaps: number; recovered: number; duplicates: number };
  /** One-way delay of video packets, publisher send to subscriber receive, same clock. */
  latencyMs: { samples: number; p50: number | null; p99: number | null; mean: number | null; max: number | null };
  /** Join time (socket open → joined, published and connected), ms. */
  joinMs: { p50: number | null; max: number | null };
  /**
   * This process during the window (the participants, and the server too when in-process):
   * CPU (100 = one core), resident memory, and how late its timers ran (event-loop delay).
   * A busy or stalled tool inflates latency and lowers send rates by itself.
   */
  tool: { cpuPercent: number; rssMiB: number; eventLoopDelayMs: { p50: number | null; p99: number | null; max: number | null } };
  /** When tracks are missing at the end: who lacks what, and the state of its subscriber connection. */
  missingTracks: string[];
  /** Packets on subscriber m-lines that no offer mapped to a track (should be 0). */
  unmappedPackets: number;
  /** Signaling errors the server sent outside replies, and failed negotiations (counts). */
  problems: Record<string, number>;
  ok: boolean;
}

const mbps = (bps: number) => `${(bps / 1e6).toFixed(2)} Mbps`;
const ms = (v: number | null) => (v === null || !Number.isFinite(v) ? '-' : `${v.toFixed(1)} ms`);

export function formatProgress(f: ProgressFigures): string {
  const elapsed = `${f.elapsedS.toFixed(1)}s`.padStart(6);
  return (
    `[${elapsed}] participants ${f.joined}/${f.participants}${f.failed > 0 ? ` (${f.failed} failed)` : ''}` +
    `  tracks ${f.tracksSubscribed}/${f.tracksExpected}` +
    `  rx ${mbps(f.rxBps)}  tx ${mbps(f.txBps)}` +
    `  loss ${Number.isFinite(f.lossPct) ? f.lossPct.toFixed(2) : '0.00'}%` +
    `  delay p50 ${ms(Number.isFinite(f.latencyP50Ms) ? f.latencyP50Ms : null)}`
  );
}

export function formatSummary(s: Summary): string {
  const rows: [string, string][] = [
    ['target', s.config.target],
    [
      'load',
      `${s.config.rooms} room(s) × (${s.config.publishersPerRoom} pub + ${s.config.subscribersPerRoom} sub), ` +
        `VP8 ${s.config.videoBitrateKbps} kbps @ ${s.config.fps} fps${s.config.audio ? ' + Opus' : ''}`,
    ],
    ['setup / measured', `${s.setupS.toFixed(1)} s / ${s.windowS.toFixed(1)} s`],
    ['participants joined', `${s.participants.joined} / ${s.participants.expected}`],
    ['join failures', String(s.participants.joinFailures)],
    ['dropped by server', String(s.participants.droppedByServer)],
    [
      'rejoins',
      s.rejoins.count === 0
        ? '0'
        : `${s.rejoins.count} (${s.rejoins.recovered} with media back; drop → media p50 / max ${ms(s.rejoins.recoveryMs.p50)} / ${ms(s.rejoins.recoveryMs.max)})`,
    ],
    ['join time p50 / max', `${ms(s.joinMs.p50)} / ${ms(s.joinMs.max)}`],
    ['tracks subscribed', `${s.tracks.subscribed} / ${s.tracks.expected}`],
    ['send bitrate', `${mbps(s.send.bitrateMbps * 1e6)}  (${Math.round(s.send.packetsPerSecond)} pkt/s)`],
    [
      'receive bitrate',
      `${mbps(s.receive.bitrateMbps * 1e6)}  (${Math.round(s.receive.packetsPerSecond)} pkt/s` +
        `${s.receive.deliveredPercent === null ? '' : `, ${s.receive.deliveredPercent.toFixed(2)} % of sent × fan-out`})`,
    ],
    [
      'packet loss',
      `${s.loss.percent.toFixed(3)} %  (${s.loss.packetsLost} of ${s.loss.packetsExpected}; ${s.loss.gaps} gaps, ` +
        `${s.loss.recovered} recovered, ${s.loss.duplicates} duplicates)`,
    ],
    ['latency p50 / p99', `${ms(s.latencyMs.p50)} / ${ms(s.latencyMs.p99)}  (max ${ms(s.latencyMs.max)}, ${s.latencyMs.samples} samples)`],
  ];
  rows.push([
    'load tool',
    `CPU ${s.tool.cpuPercent.toFixed(0)} % of a core, RSS ${s.tool.rssMiB} MiB, event-loop delay p99 ${ms(s.tool.eventLoopDelayMs.p99)} (max ${ms(s.tool.eventLoopDelayMs.max)})`,
  ]);
  if (s.unmappedPackets > 0) rows.push(['unmapped packets', String(s.unmappedPackets)]);
  for (const [k, v] of Object.entries(s.problems)) rows.push([`problem`, `${k}: ${v}`]);
  for (const m of s.missingTracks) rows.push(['missing', m]);
  for (const [k, v] of Object.entries(s.joinFailureReasons)) rows.push([`join failure`, `${v}× ${k}`]);
  for (const [k, v] of Object.entries(s.rejoins.reasons)) rows.push([`rejoin`, `${v}× ${k}`]);
  rows.push(['result', s.ok ? 'OK' : 'FAILED']);
  const w = Math.max(...rows.map(([k]) => k.length));
  const line = '-'.repeat(w + 2 + Math.max(...rows.map(([, v]) => v.length)));
  return [line, ...rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`), line].join('\n');
}
