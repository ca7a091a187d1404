/**
 * Join time: from the click on Join to the first remote video frame painted on the call
 * page (requestVideoFrameCallback), in headless Chromium with a fake camera, against the
 * real service in this process.
 *
 *   npm run bench:join                 12 measured joins (after one warm-up)
 *   npm run bench:join -- --joins 20
 *
 * A host page publishes in the room; each joiner opens the page, clicks Join, publishes
 * its own camera and microphone, and waits for the host's first frame; then it leaves.
 * Prints median, p90, min and max. Like the tests, it runs in a private loopback-only
 * network namespace: it re-executes itself under `unshare -n` and brings `lo` up there
 * (the approach of scripts/run-tests.ts), so ICE never touches a real interface.
 */
import { spawn, spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { buildWeb } from '../scripts/build-web.ts';
import { CallPage, launchChromium } from '../test/browser/call-page.ts';
import { eventually, sleep, TestService } from '../test/helpers/service.ts';

const { values } = parseArgs({ options: { joins: { type: 'string', default: '12' } } });
const joins = Number(values.joins);
if (!Number.isInteger(joins) || joins < 1) throw new Error('--joins must be a positive integer');

function reexecInNamespace(): Promise<number> {
  const probe = spawnSync('unshare', ['-n', 'true']);
  if (probe.error !== undefined || probe.status !== 0) {
    process.stderr.write('join-time: "unshare -n" failed; it needs root or CAP_SYS_ADMIN (see scripts/run-tests.ts)\n');
    return Promise.resolve(1);
  }
  return new Promise((resolve) => {
    const child = spawn('unshare', ['-n', '--', process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
      stdio: 'inherit',
      env: { ...process.env, BENCH_NETNS: '1' },
    });
    child.on('close', (code) => resolve(code ?? 1));
  });
}

function percentile(sorted: number[], p: number): number {
  // Nearest rank: the smallest value with at least p% of the samples at or below it.
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function measure(): Promise<void> {
  const up = spawnSync('ip', ['link', 'set', 'lo', 'up']);
  if (up.status !== 0) throw new Error(`"ip link set lo up" failed: ${up.stderr}`);
  await buildWeb();
  const svc = await TestService.start();
  const browser = await launchChromium();
  try {
    const host = await CallPage.open(browser, { baseUrl: svc.httpUrl, room: 'bench', name: 'Host' });
    await eventually(async () => (await host.sent())?.tracks.some((t) => t.kind === 'video' && (t.frames ?? 0) > 0) === true, 'the host to publish', 15_000);
    const samples: number[] = [];
    for (let i = 0; i <= joins; i++) {
      const p = await CallPage.open(browser, { baseUrl: svc.httpUrl, room: 'bench', name: `Joiner ${i}`, autojoin: false });
      await p.page.click('#join-button');
      let ms = Number.NaN;
      await eventually(async () => {
        const t = await p.timings();
        if (t.joinClicked === undefined || t.firstRemoteFrame === undefined) return false;
        ms = t.firstRemoteFrame - t.joinClicked;
        return true;
      }, `join ${i} to show the host's video`, 20_000);
      await p.page.click('#leave-button');
      await p.close();
      // Join 0 warms up the browser, the JIT and the bundle cache; it is not counted.
      if (i > 0) samples.push(ms);
      process.stdout.write(`join ${i}${i === 0 ? ' (warm-up)' : ''}: ${ms.toFixed(0)} ms\n`);
      await sleep(300);
    }
    const sorted = [...samples].sort((a, b) => a - b);
    process.stdout.write(
      `\njoins: ${sorted.length}  median: ${percentile(sorted, 50).toFixed(0)} ms  p90: ${percentile(sorted, 90).toFixed(0)} ms  ` +
        `min: ${sorted[0]!.toFixed(0)} ms  max: ${sorted.at(-1)!.toFixed(0)} ms\n`,
    );
  } finally {
    await browser.close();
    await svc.close();
  }
}

if (process.env.BENCH_NETNS === '1') await measure();
else process.exit(await reexecInNamespace());
