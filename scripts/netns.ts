/**
 * Running a Node script inside a private, loopback-only network namespace.
 *
 * WebRTC gathers ICE candidates on every interface, so anything that runs real peers on
 * this machine (tests, benchmarks, the load tool) must never see its real interfaces. The
 * pattern (first used by scripts/run-tests.ts): the script re-executes itself under
 * `unshare -n` with a marker variable set, and in the child brings `lo` up before it does
 * anything else.
 *
 *   import { bringUpLoopback, reexecInNetns } from '../scripts/netns.ts';
 *   if (process.env.MY_NETNS !== '1') process.exit(await reexecInNetns({ marker: 'MY_NETNS', name: 'my-tool' }));
 *   bringUpLoopback('my-tool');
 *
 * Both throw `NetnsError` with an explanation (what is missing, what it needs) instead of
 * printing and exiting, so each caller reports it its own way.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export class NetnsError extends Error {
  override name = 'NetnsError';
}

/** The absolute path of `cmd` on PATH (plus the usual sbin folders), or undefined. */
export function which(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter).concat(['/usr/bin', '/usr/sbin', '/bin', '/sbin'])) {
    if (dir === '') continue;
    const p = path.join(dir, cmd);
    try {
      if (statSync(p).isFile()) return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * Checks that `unshare -n` works here and returns the path of `unshare`; throws
 * `NetnsError` saying what is missing. `hint` is appended to the explanation.
 */
export function findUnshare(hint = ''): string {
  const unshare = which('unshare');
  if (unshare === undefined) {
    throw new NetnsError(
      `"unshare" (util-linux) is not installed, so no private network namespace can be made.\n` +
        `  Install it (scripts/install-system-deps.sh)${hint}`,
    );
  }
  const probe = spawnSync(unshare, ['-n', 'true'], { encoding: 'utf8' });
  if (probe.error !== undefined || probe.status !== 0) {
    const why = probe.error?.message ?? (probe.stderr.trim() || `exit status ${probe.status}`);
    throw new NetnsError(
      `"unshare -n" cannot create a network namespace here (${why}).\n` +
        `  It needs root or CAP_SYS_ADMIN (in a container: --cap-add SYS_ADMIN or --privileged)${hint}`,
    );
  }
  return unshare;
}

export interface ReexecOptions {
  /** Environment variable set to "1" in the child, so it knows it is inside. */
  marker: string;
  /** Script to run (default: the current one, process.argv[1]). */
  script?: string;
  /** Its arguments (default: the current ones). */
  args?: readonly string[];
  /** Extra environment for the child (on top of process.env and the marker). */
  env?: NodeJS.ProcessEnv;
  /** Appended to error explanations, e.g. ", or pass --no-netns inside a namespace you made". */
  hint?: string;
}

/**
 * Passes SIGINT and SIGTERM sent to this process on to `child` until the returned function
 * is called. A terminal's Ctrl-C reaches the whole process group (the child too); this
 * covers signals sent to this process alone.
 */
export function forwardSignals(child: ChildProcess): () => void {
  const forward = (sig: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(sig);
  };
  const onInt = () => forward('SIGINT');
  const onTerm = () => forward('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  return () => {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
  };
}

/** A child's exit as a shell reports it: its code, or 128 + n for signal n. */
export function exitCodeOf(code: number | null, signal: NodeJS.Signals | null): number {
  return code ?? 128 + (signal === null ? 0 : (os.constants.signals[signal] ?? 0));
}

/**
 * Runs `node [execArgv] script args` under `unshare -n` with `marker=1`, stdio inherited,
 * SIGINT/SIGTERM forwarded. Resolves with the child's exit code (128 + n for signal n).
 */
export function reexecInNetns(opts: ReexecOptions): Promise<number> {
  const unshare = findUnshare(opts.hint);
  const script = opts.script ?? process.argv[1];
  if (script === undefined) throw new NetnsError('no script to re-execute');
  const argv = ['-n', '--', process.execPath, ...process.execArgv, script, ...(opts.args ?? process.argv.slice(2))];
  return new Promise((resolve, reject) => {
    const child = spawn(unshare, argv, { stdio: 'inherit', env: { ...process.env, ...opts.env, [opts.marker]: '1' } });
    const done = forwardSignals(child);
    child.on('error', (err) => {
      done();
      reject(new NetnsError(`cannot run "${unshare}": ${err.message}`));
    });
    child.on('close', (code, signal) => {
      done();
      resolve(exitCodeOf(code, signal));
    });
  });
}

/**
 * A benchmark's entry point: `main()` inside the namespace (the marker is set), else the
 * script re-executed there; a namespace that cannot be made is reported as `<name>: why`
 * with exit code 2.
 */
export async function runInNetns(marker: string, name: string, main: () => Promise<void>): Promise<void> {
  if (process.env[marker] === '1') return main();
  try {
    process.exitCode = await reexecInNetns({ marker });
  } catch (err) {
    if (!(err instanceof NetnsError)) throw err;
    process.stderr.write(`${name}: ${err.message}\n`);
    process.exitCode = 2;
  }
}

/** `ip link set lo up` (inside the new namespace loopback starts down). Throws `NetnsError`. */
export function bringUpLoopback(): void {
  const ip = which('ip');
  if (ip === undefined) throw new NetnsError('"ip" (iproute2) is not installed; it is needed to bring up loopback in the namespace.');
  const up = spawnSync(ip, ['link', 'set', 'lo', 'up'], { encoding: 'utf8' });
  if (up.error !== undefined || up.status !== 0) {
    throw new NetnsError(`"ip link set lo up" failed: ${up.error?.message ?? (up.stderr.trim() || `exit status ${up.status}`)}`);
  }
}
