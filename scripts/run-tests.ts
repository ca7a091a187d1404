/**
 * The test runner behind `npm test` (after the type check).
 *
 * WebRTC tests must never let ICE reach the machine's real interfaces, so the whole run
 * happens inside a private network namespace that has only loopback: unless `SCV_NETNS`
 * is set, this script re-executes itself under `unshare -n` with `SCV_NETNS=1`, brings
 * `lo` up there, and runs `node --test` (one file at a time, spec reporter) over every
 * `test/**\/*.test.ts`, sorted. Its exit code is node --test's.
 *
 * Arguments select what runs:
 *   npm test -- test/foo.test.ts          a file (or a directory: its *.test.ts files)
 *   npm test -- signaling                 test files whose path contains "signaling";
 *                                         a word that matches no file path is used as a
 *                                         test name pattern (--test-name-pattern) instead
 *   npm test -- --test-name-pattern=join  any argument starting with "-" goes to node
 *
 * The tests themselves do not see SCV_NETNS (the server's config refuses unknown SCV_*
 * variables, and tests spawn it with their environment); they get TEST_NETNS=1 instead.
 *
 * Environment: TEST_TIMEOUT_MS (per test, default 180000). Each file's process exits as
 * soon as its tests are done (--test-force-exit): a leaked socket or timer would otherwise
 * hang the run forever, since no timeout covers a file that never exits. Set
 * TEST_NO_FORCE_EXIT=1 to hunt such leaks (the run then hangs on the leaking file).
 */
import { spawn } from 'node:child_process';
import { existsSync, globSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bringUpLoopback, exitCodeOf, findUnshare, forwardSignals } from './netns.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const self = fileURLToPath(import.meta.url);
const args = process.argv.slice(2);

function fail(message: string): never {
  process.stderr.write(`run-tests: ${message}\n`);
  process.exit(1);
}

/**
 * Runs a child; resolves to its exit code (128 + n for signal n). With `reorderSummary`
 * its stdout passes through line by line, except node --test's final summary block
 * ("ℹ tests N" … "ℹ duration_ms"), which is held back and printed last, after the
 * "failing tests" details the spec reporter writes behind it.
 */
function run(cmd: string, argv: string[], env: NodeJS.ProcessEnv, opts: { reorderSummary?: boolean } = {}): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(cmd, argv, { stdio: ['inherit', opts.reorderSummary ? 'pipe' : 'inherit', 'inherit'], env, cwd: root });
    const stopForwarding = forwardSignals(child);
    const held: string[] = [];
    let holding = false;
    let partial = '';
    const emitLine = (line: string) => {
      const plain = line.replace(/\x1b\[[0-9;]*m/g, '');
      if (/^ℹ tests \d+\s*$/.test(plain)) {
        held.length = 0;
        holding = true;
      } else if (holding && !plain.startsWith('ℹ ')) {
        holding = false;
      }
      if (holding) held.push(line);
      else process.stdout.write(`${line}\n`);
    };
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) emitLine(line);
    });
    child.on('error', (err: NodeJS.ErrnoException) => {
      stopForwarding();
      if (err.code === 'ENOENT') fail(`cannot run "${cmd}": not found`);
      fail(`cannot run "${cmd}": ${err.message}`);
    });
    // 'close' (not 'exit'): all of the child's output has been read by then.
    child.on('close', (code, signal) => {
      stopForwarding();
      if (partial !== '') emitLine(partial);
      if (held.length > 0) {
        process.stdout.write(`${held.join('\n')}\n`);
      }
      resolve(exitCodeOf(code, signal));
    });
  });
}

// ---- outside the namespace: re-exec under unshare -n ------------------------------------

async function outer(): Promise<never> {
  let unshare: string;
  try {
    unshare = findUnshare(', or run inside an existing isolated namespace with SCV_NETNS=1');
  } catch (err) {
    fail((err as Error).message);
  }
  const code = await run(unshare, ['-n', '--', process.execPath, self, ...args], { ...process.env, SCV_NETNS: '1' });
  process.exit(code);
}

// ---- inside: bring lo up, pick files, run node --test -----------------------------------

function selectFiles(): { files: string[]; nodeArgs: string[] } {
  const all = globSync('test/**/*.test.ts', { cwd: root })
    .map((f) => f.split(path.sep).join('/'))
    .sort();
  const nodeArgs: string[] = [];
  const picked = new Set<string>();
  let selected = false;
  for (const arg of args) {
    if (arg === '--') continue;
    if (arg.startsWith('-')) {
      nodeArgs.push(arg);
      continue;
    }
    selected = true;
    const abs = path.resolve(process.cwd(), arg);
    const fromRoot = path.resolve(root, arg);
    const existing = existsSync(abs) ? abs : existsSync(fromRoot) ? fromRoot : undefined;
    if (existing !== undefined) {
      if (statSync(existing).isDirectory()) {
        const rel = path.relative(root, existing).split(path.sep).join('/');
        const inDir = all.filter((f) => rel === '' || f.startsWith(`${rel}/`));
        if (inDir.length === 0) fail(`no *.test.ts files under ${arg}`);
        for (const f of inDir) picked.add(f);
      } else {
        picked.add(path.relative(root, existing).split(path.sep).join('/'));
      }
      continue;
    }
    const matches = all.filter((f) => f.includes(arg));
    if (matches.length > 0) {
      for (const f of matches) picked.add(f);
    } else {
      nodeArgs.push(`--test-name-pattern=${arg}`);
    }
  }
  if (selected && picked.size === 0 && !nodeArgs.some((a) => a.startsWith('--test-name-pattern='))) fail('no test files matched');
  return { files: picked.size > 0 ? [...picked].sort() : all, nodeArgs };
}

async function inner(): Promise<never> {
  try {
    bringUpLoopback();
  } catch (err) {
    fail((err as Error).message);
  }
  const { files, nodeArgs } = selectFiles();
  if (files.length === 0) fail('no test files found (test/**/*.test.ts)');
  const timeout = Number(process.env.TEST_TIMEOUT_MS ?? 180_000);
  const argv = [
    '--test',
    '--test-concurrency=1',
    '--test-reporter=spec',
    `--test-timeout=${Number.isFinite(timeout) && timeout > 0 ? timeout : 180_000}`,
    ...(process.env.TEST_NO_FORCE_EXIT ? [] : ['--test-force-exit']),
    ...nodeArgs,
    ...files,
  ];
  const env: NodeJS.ProcessEnv = { ...process.env, TEST_NETNS: '1' };
  delete env.SCV_NETNS;
  // stdout becomes a pipe: keep the reporter's colors when our own stdout is a terminal.
  if (process.stdout.isTTY && env.FORCE_COLOR === undefined && env.NO_COLOR === undefined) env.FORCE_COLOR = '1';
  const code = await run(process.execPath, argv, env, { reorderSummary: true });
  process.exit(code);
}

if (process.env.SCV_NETNS === undefined || process.env.SCV_NETNS === '') await outer();
else await inner();
