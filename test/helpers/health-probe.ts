/**
 * Polls /healthz URLs every `intervalMs` and samples a process's RSS, in a process of its
 * own so that the test's peers (which share the test's event loop) do not add to the
 * latencies it measures. Runs until its stdin closes, then prints one JSON line
 * (`HealthProbeResult`). Started by `startHealthProbe`, which resolves once it measures.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface HealthProbeOptions {
  urls: string[];
  /** Process whose resident memory is sampled on every round. */
  pid: number;
  intervalMs: number;
  /** Answers slower than this (or not 200) are listed in `slow`. */
  limitMs: number;
}

export interface HealthProbeResult {
  polls: number;
  maxMs: number;
  slow: string[];
  rssPeakBytes: number;
}

export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : Number.NaN;
}

/**
 * Starts the probe and resolves once it has started (its own start-up, a node process,
 * costs the cores everything else runs on) and measures; `stop()` ends it and resolves
 * with what it saw.
 */
export async function startHealthProbe(opts: HealthProbeOptions): Promise<{ stop(): Promise<HealthProbeResult> }> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), JSON.stringify(opts)], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8');
  const measuring = new Promise<void>((resolve) => {
    child.stdout.on('data', (d: string) => {
      out += d;
      if (out.startsWith(`${MEASURING}\n`)) {
        out = out.slice(MEASURING.length + 1);
        resolve();
      }
    });
  });
  const done = new Promise<HealthProbeResult>((resolve, reject) => {
    child.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as HealthProbeResult) : reject(new Error(`health probe exited with ${code}: ${out}`))));
  });
  await Promise.race([measuring, done]);
  return {
    stop() {
      child.stdin.end();
      return done;
    },
  };
}

const MEASURING = 'measuring';

if (import.meta.main) {
  const opts = JSON.parse(process.argv[2] ?? '{}') as HealthProbeOptions;
  const result: HealthProbeResult = { polls: 0, maxMs: 0, slow: [], rssPeakBytes: rssBytes(opts.pid) };
  let running = true;
  process.stdin.on('end', () => (running = false));
  process.stdin.resume();
  // Untimed rounds first: connection set-up and the first requests' compilation are not what is measured.
  for (let round = 0; round < 5; round++) {
    for (const url of opts.urls) await fetch(url).then((r) => r.arrayBuffer(), () => undefined);
  }
  process.stdout.write(`${MEASURING}\n`);
  while (running) {
    for (const url of opts.urls) {
      const t0 = performance.now();
      let status: number;
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
        await res.arrayBuffer();
        status = res.status;
      } catch {
        status = -1;
      }
      const ms = performance.now() - t0;
      result.polls++;
      result.maxMs = Math.max(result.maxMs, ms);
      if (ms > opts.limitMs || status !== 200) result.slow.push(`${url}: ${status} in ${ms.toFixed(0)} ms`);
    }
    result.rssPeakBytes = Math.max(result.rssPeakBytes, rssBytes(opts.pid));
    await new Promise((r) => setTimeout(r, opts.intervalMs));
  }
  result.maxMs = Math.round(result.maxMs * 10) / 10;
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
