/**
 * Do two media workers carry twice what one carries? The same load, two rooms of one
 * publisher (VP8 + Opus) and N subscribers each, runs against the service with
 * SCV_MEDIA_WORKERS=1 (both rooms in one worker) and then =2 (one room each), and the
 * CPU of the edge and of each worker process is read from /proc over the same window,
 * along with the packets forwarded (the edge's merged /metrics) and the load tool's loss
 * and latency.
 *
 *   npm run bench:workers                         N = 30, 20 s measured per run
 *   npm run bench:workers -- --subscribers 40 --duration 30
 *
 * Nothing is pinned: on a 2-core machine the load tool needs about as much CPU per packet
 * as the SFU (it decrypts what the SFU encrypts), so a load that saturates one worker's
 * core cannot be generated next to two workers. What this measures instead is what each
 * worker spends for its share: if a worker's CPU per forwarded packet stays the same when
 * the rooms are split, and the edge adds nothing per packet, each worker can fill its own
 * core and N workers carry N times what one carries.
 *
 * Runs in a private loopback-only network namespace (re-executes itself under
 * `unshare -n`, scripts/netns.ts), like the tests.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { bringUpLoopback, runInNetns } from '../scripts/netns.ts';
import type { Summary } from '../src/loadtest/report.ts';
import { loadAverage, treeUsage } from './proc.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const NETNS_MARKER = 'BENCH_NETNS';
const PORT = 7880;
const ROOMS = 2;
/** The window is read this long after the tool starts (joins at 20/s, then media settles) … */
const SETTLE_S = 8;
const JOIN_RATE = 20;

interface Options {
  subscribers: number;
  duration: number;
}

interface Run {
  workers: number;
  forwardedPerS: number;
  lossPct: number;
  p50Ms: number;
  p99Ms: number;
  edgeCpuPct: number;
  workerCpuPct: number[];
  usPerPacket: number;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: { subscribers: { type: 'string', default: '30' }, duration: { type: 'string', default: '20' }, help: { type: 'boolean' } },
  });
  if (values.help === true) {
    process.stdout.write('Usage: npm run bench:workers -- [--subscribers N (30)] [--duration S (20)]\n');
    process.exit(0);
  }
  const subscribers = Number(values.subscribers);
  const duration = Number(values.duration);
  if (!Number.isInteger(subscribers) || subscribers < 1 || !(duration >= 10)) {
    process.stderr.write('bench:workers: --subscribers must be a positive integer and --duration at least 10\n');
    process.exit(2);
  }
  return { subscribers, duration };
}

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${PORT}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? Number.NaN : Number(line.split(' ').pop());
}

async function workerPids(): Promise<number[]> {
  for (let i = 0; i < 100; i++) {
    try {
      const h = (await (await fetch(`http://127.0.0.1:${PORT}/healthz`)).json()) as { status: string; workers: { pid: number }[] };
      if (h.status === 'ok') return h.workers.map((w) => w.pid);
    } catch {
      // not listening yet
    }
    await sleep(200);
  }
  throw new Error('the service did not come up');
}

async function measure(workers: number, opts: Options, secret: string, dir: string): Promise<Run> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SCV_') && k !== NETNS_MARKER) env[k] = v;
  Object.assign(env, {
    SCV_HTTP_PORT: String(PORT),
    SCV_LOG_LEVEL: 'warn',
    SCV_API_KEY: 'bench',
    SCV_API_SECRET: secret,
    SCV_MEDIA_WORKERS: String(workers),
    SCV_MAX_PARTICIPANTS: String(opts.subscribers + 10),
  });
  const service = spawn(process.execPath, ['src/main.ts'], { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'inherit'] });
  try {
    const pids = await workerPids();
    const json = path.join(dir, `workers-${workers}.json`);
    const tool = spawn(
      process.execPath,
      [
        'src/loadtest/cli.ts',
        ...['--url', `ws://127.0.0.1:${PORT}/video/ws`, '--api-key', 'bench', '--api-secret', secret],
        ...['--rooms', String(ROOMS), '--publishers', '1', '--subscribers', String(opts.subscribers)],
        ...['--duration', String(opts.duration + SETTLE_S), '--join-rate', String(JOIN_RATE), '--json', json],
      ],
      { cwd: ROOT, stdio: 'ignore' },
    );
    const toolDone = new Promise<void>((resolve) => tool.once('exit', () => resolve()));
    await sleep(SETTLE_S * 1000 + ((ROOMS * (opts.subscribers + 1)) / JOIN_RATE) * 1000);
    const read = async () => ({ at: performance.now(), forwarded: await metric('scv_rtp_packets_forwarded_total'), usage: treeUsage([service.pid!, ...pids]) });
    const a = await read();
    await sleep(opts.duration * 1000 - 2000);
    const b = await read();
    await toolDone;
    const summary = JSON.parse(await readFile(json, 'utf8')) as Summary;
    const seconds = (b.at - a.at) / 1000;
    const forwarded = b.forwarded - a.forwarded;
    const cpu = (i: number) => b.usage[i]!.cpuS - a.usage[i]!.cpuS;
    const edgeOwn = b.usage[0]!.rootCpuS - a.usage[0]!.rootCpuS;
    return {
      workers,
      forwardedPerS: forwarded / seconds,
      lossPct: summary.loss.percent,
      p50Ms: summary.latencyMs.p50 ?? Number.NaN,
      p99Ms: summary.latencyMs.p99 ?? Number.NaN,
      edgeCpuPct: (100 * edgeOwn) / seconds,
      workerCpuPct: pids.map((_, i) => (100 * cpu(i + 1)) / seconds),
      usPerPacket: (1e6 * cpu(0)) / forwarded,
    };
  } finally {
    service.kill('SIGTERM');
    await new Promise((resolve) => service.once('exit', resolve));
  }
}

async function main(opts: Options): Promise<void> {
  bringUpLoopback();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'scv-bench-workers-'));
  const secret = randomBytes(32).toString('base64url');
  const say = (line: string) => process.stdout.write(`${line}\n`);
  say(`media workers: ${ROOMS} rooms × (1 publisher → ${opts.subscribers} subscribers), ${opts.duration} s measured; load average ${loadAverage().join(' ')}`);
  try {
    const runs: Run[] = [];
    for (const workers of [1, 2]) {
      const r = await measure(workers, opts, secret, dir);
      runs.push(r);
      say(
        `workers ${r.workers}: forwarded ${r.forwardedPerS.toFixed(0)} pkt/s, loss ${r.lossPct.toFixed(3)} %, latency p50/p99 ${r.p50Ms.toFixed(1)}/${r.p99Ms.toFixed(1)} ms, ` +
          `edge ${r.edgeCpuPct.toFixed(1)} % CPU, workers ${r.workerCpuPct.map((c) => `${c.toFixed(1)} %`).join(' + ')}, ${r.usPerPacket.toFixed(1)} µs CPU per forwarded packet (all processes)`,
      );
    }
    const [one, two] = runs as [Run, Run];
    const busiest = (r: Run) => Math.max(...r.workerCpuPct);
    // What each configuration could forward with its busiest worker at 100 % of a core.
    const capacity = (r: Run) => (r.forwardedPerS * 100) / busiest(r);
    say('');
    say('| workers | forwarded pkt/s | loss | p50 / p99 | edge CPU | worker CPU | µs/packet | capacity (busiest worker at 100 %) |');
    say('|---|---|---|---|---|---|---|---|');
    for (const r of runs) {
      say(
        `| ${r.workers} | ${r.forwardedPerS.toFixed(0)} | ${r.lossPct.toFixed(3)} % | ${r.p50Ms.toFixed(1)} / ${r.p99Ms.toFixed(1)} ms | ${r.edgeCpuPct.toFixed(1)} % | ` +
          `${r.workerCpuPct.map((c) => `${c.toFixed(1)} %`).join(' + ')} | ${r.usPerPacket.toFixed(1)} | ${capacity(r).toFixed(0)} pkt/s |`,
      );
    }
    say('');
    say(`two workers carry ${(capacity(two) / capacity(one)).toFixed(2)}× what one carries (capacity ratio, same load, one run)`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const opts = parseOptions(process.argv.slice(2));
await runInNetns(NETNS_MARKER, 'bench:workers', () => main(opts));
