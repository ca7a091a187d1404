/**
 * CPU and memory of process trees and cores, read from /proc (Linux only).
 *
 * The service may run its media engine in child processes (SCV_MEDIA_WORKERS), so its
 * cost is the sum over the main pid and every descendant. This kernel has no
 * /proc/<pid>/task/<tid>/children (CONFIG_PROC_CHILDREN), so descendants come from a scan
 * of every /proc/<pid>/stat for its parent pid; with ~100 processes that takes about a
 * millisecond.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** USER_HZ: the unit of every CPU time in /proc (100 on Linux unless patched). */
export const CLOCK_TICKS_PER_S = (() => {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const n = Number(r.stdout?.trim());
  return Number.isInteger(n) && n > 0 ? n : 100;
})();

interface ProcStat {
  ppid: number;
  /** utime + stime + cutime + cstime: the process's own CPU and that of its reaped children. */
  ticks: number;
}

function readStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined; // exited between the directory listing and the read
  }
  // The command name (field 2) is in parentheses and may hold spaces or parentheses itself.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14..17.
  return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]) };
}

function rssKiB(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? 0 : Number(m[1]);
  } catch {
    return 0;
  }
}

export interface TreeUsage {
  /** CPU seconds used so far by the tree (living processes and the children they reaped). */
  cpuS: number;
  /** The root process's share of cpuS. */
  rootCpuS: number;
  /** Sum of the processes' resident sets (pages shared between them count once per process). */
  rssKiB: number;
  processes: number;
}

/** CPU and memory of each root pid's tree (itself and all descendants); a dead root gives zeros. */
export function treeUsage(roots: readonly number[]): TreeUsage[] {
  const stats = new Map<number, ProcStat>();
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    const s = readStat(pid);
    if (s === undefined) continue;
    stats.set(pid, s);
    const siblings = children.get(s.ppid);
    if (siblings === undefined) children.set(s.ppid, [pid]);
    else siblings.push(pid);
  }
  return roots.map((root) => {
    const usage: TreeUsage = { cpuS: 0, rootCpuS: (stats.get(root)?.ticks ?? 0) / CLOCK_TICKS_PER_S, rssKiB: 0, processes: 0 };
    const queue = stats.has(root) ? [root] : [];
    while (queue.length > 0) {
      const pid = queue.pop()!;
      usage.cpuS += stats.get(pid)!.ticks / CLOCK_TICKS_PER_S;
      usage.rssKiB += rssKiB(pid);
      usage.processes++;
      queue.push(...(children.get(pid) ?? []));
    }
    return usage;
  });
}

/** Busy CPU seconds (everything but idle and iowait) of the whole machine and of each core. */
export function cpuBusy(): { all: number; cores: number[] } {
  let all = 0;
  const cores: number[] = [];
  for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^cpu(\d*) (.*)$/.exec(line);
    if (m === null) continue;
    // user nice system idle iowait irq softirq steal (guest time is already inside user).
    const v = m[2]!.trim().split(/\s+/).map(Number);
    const busy = (v[0]! + v[1]! + v[2]! + v[5]! + v[6]! + v[7]!) / CLOCK_TICKS_PER_S;
    if (m[1] === '') all = busy;
    else cores[Number(m[1])] = busy;
  }
  return { all, cores };
}

/** The 1, 5 and 15 minute load averages. */
export function loadAverage(): [number, number, number] {
  const [a, b, c] = readFileSync('/proc/loadavg', 'utf8').split(' ').map(Number);
  return [a!, b!, c!];
}

/** Pins every thread of `pid` to `cpu` (`taskset -a -p`); throws on failure. */
export function pin(pid: number, cpu: number): void {
  const r = spawnSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { encoding: 'utf8' });
  if (r.error !== undefined || r.status !== 0) throw new Error(`taskset -a -p -c ${cpu} ${pid} failed: ${r.error?.message ?? r.stderr.trim()}`);
}
