/**
 * `npm run loadtest -- [options]` (see docs/loadtest.md, or --help).
 *
 * Without --url it starts the service in this process and, unless told it is already in
 * one (--no-netns, or TEST_NETNS=1 under `npm test`), first re-executes itself inside a
 * fresh loopback-only network namespace (scripts/netns.ts): ICE gathers on every
 * interface, and this machine must never send connectivity checks off loopback.
 */
import { writeFile } from 'node:fs/promises';
import { NetnsError, bringUpLoopback, reexecInNetns } from '../../scripts/netns.ts';
import type { Service } from '../service.ts';
import { Options, USAGE, UsageError, parseOptions } from './options.ts';
import type { LoadTarget } from './run.ts';

/** Set in the re-executed child. */
const NETNS_MARKER = 'LOADTEST_NETNS';
const SERVICE_CLOSE_TIMEOUT_MS = 10_000;
/** After everything is closed the process should exit on its own; if not, say what is left. */
const EXIT_GUARD_MS = 5_000;

function die(message: string, code = 2): never {
  process.stderr.write(`loadtest: ${message}\n`);
  process.exit(code);
}

let opts: Options | undefined;
try {
  opts = parseOptions(process.argv.slice(2));
} catch (err) {
  if (err instanceof UsageError) die(`${err.message}\n\n${USAGE}`);
  throw err;
}
if (opts === undefined) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}

const inNamespace = process.env[NETNS_MARKER] === '1' || process.env.TEST_NETNS === '1';
if (opts.url === undefined && opts.netns && !inNamespace) {
  try {
    process.exitCode = await reexecInNetns({ marker: NETNS_MARKER, hint: ', or pass --no-netns when already inside an isolated namespace.' });
  } catch (err) {
    if (err instanceof NetnsError) die(err.message);
    throw err;
  }
} else {
  await main(opts);
}

async function main(opts: Options): Promise<void> {
  if (process.env[NETNS_MARKER] === '1') {
    try {
      bringUpLoopback();
    } catch (err) {
      die((err as Error).message);
    }
  }

  // Loaded only now: werift and the service take a while to import, and neither --help,
  // a usage error nor the parent of the namespace needs them.
  const [{ TokenService }, { loadConfig }, { startService }, { LOOPBACK_ICE }, { formatSummary }, { runLoadTest }] = await Promise.all([
    import('../auth/tokens.ts'),
    import('../config.ts'),
    import('../service.ts'),
    import('../node-client/peer-config.ts'),
    import('./report.ts'),
    import('./run.ts'),
  ]);
  let service: Service | undefined;
  let target: LoadTarget;
  if (opts.url === undefined) {
    const config = loadConfig({
      SCV_HTTP_PORT: '0',
      SCV_LOG_LEVEL: 'silent',
      SCV_MAX_PARTICIPANTS: String(Math.max(50, opts.publishers + opts.subscribers)),
      SCV_MAX_ROOMS: String(Math.max(1000, opts.rooms)),
      // Only loopback candidates, even when run with --no-netns outside a namespace.
      SCV_RTC_INTERFACES: '127.0.0.1',
      // The load's own peers share this event loop: its utilization says nothing about the SFU.
      SCV_OVERLOAD_UTILIZATION: 'off',
    });
    try {
      service = await startService(config);
    } catch (err) {
      die(`cannot start the in-process service: ${(err as Error).message}`);
    }
    const tokens = service.tokens;
    target = {
      description: `in-process ${service.wsUrl}`,
      wsUrls: [service.wsUrl],
      mintToken: (identity, room, grants) => tokens.mint({ identity, room, grants }),
      ice: LOOPBACK_ICE,
      useIceServers: false,
    };
  } else {
    const tokens = new TokenService(opts.apiKey!, opts.apiSecret!);
    const urls = opts.url.split(',');
    const loopback = urls.every((url) => {
      const host = new URL(url).hostname;
      return host === 'localhost' || host.startsWith('127.') || host === '[::1]';
    });
    target = {
      description: urls.join(', '),
      wsUrls: urls,
      mintToken: (identity, room, grants) => tokens.mint({ identity, room, grants }),
      // A local server: keep our candidates on loopback too. A remote one: the ICE servers it gives.
      ice: loopback ? LOOPBACK_ICE : {},
      useIceServers: !loopback,
    };
  }

  const abort = new AbortController();
  const onSignal = () => {
    if (abort.signal.aborted) process.exit(130);
    process.stderr.write('loadtest: interrupted, finishing (again to quit at once)\n');
    abort.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const summary = await runLoadTest(opts, target, { out: (line) => process.stdout.write(`${line}\n`), signal: abort.signal });

  if (service !== undefined) {
    let timer: NodeJS.Timeout | undefined;
    const closed = await Promise.race([
      service.close().then(() => true),
      new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), SERVICE_CLOSE_TIMEOUT_MS);
      }),
    ]);
    clearTimeout(timer);
    if (!closed) {
      summary.problems[`in-process service did not close within ${SERVICE_CLOSE_TIMEOUT_MS / 1000} s`] = 1;
      summary.ok = false;
    }
  }
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);

  process.stdout.write(`\n${formatSummary(summary)}\n`);
  if (opts.json !== undefined) {
    try {
      await writeFile(opts.json, `${JSON.stringify(summary, null, 2)}\n`);
    } catch (err) {
      die(`cannot write ${opts.json}: ${(err as Error).message}`);
    }
  }
  process.exitCode = summary.ok ? 0 : 1;

  setTimeout(() => {
    const left = process.getActiveResourcesInfo().filter((r) => r !== 'Timeout');
    process.stderr.write(`loadtest: still running ${EXIT_GUARD_MS / 1000} s after the end (open: ${left.join(', ') || 'timers'}); exiting\n`);
    process.exit(process.exitCode ?? 1);
  }, EXIT_GUARD_MS).unref();
}
