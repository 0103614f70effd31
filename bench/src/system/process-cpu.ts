import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

/** Linux clock ticks per second, the unit of /proc/<pid>/stat CPU times. */
const CLOCK_TICKS = readClockTicks();

function readClockTicks(): number {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
}

/** User + system CPU seconds a process has used so far; undefined if it is gone. */
export function cpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const user = Number(fields[11]);
    const system = Number(fields[12]);
    return (user + system) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}

/**
 * User + system CPU seconds a process has used so far, to the nanosecond: the on-CPU time of
 * each of its threads (/proc/<pid>/task/<tid>/schedstat), where /proc/<pid>/stat counts in
 * clock ticks (10 ms), too coarse for a process that works a few ms in a 1.5 s window. Threads
 * that ended are missing from the sum: compare two readings of long-lived processes only. Falls
 * back to cpuSeconds without schedstat; undefined if the process is gone.
 */
export function threadCpuSeconds(pid: number): number | undefined {
  const stat = threadSchedstat(pid);
  return stat === null ? cpuSeconds(pid) : stat?.onCpuSeconds;
}

/**
 * Seconds the main thread of a process has been runnable but not running so far (schedstat's
 * second field): waiting for a CPU, or held back by its cgroup's quota (the kernel counts both).
 * Its main thread only: the JavaScript one for a node. Undefined if the process is gone or
 * schedstat is missing.
 */
export function mainThreadRunQueueSeconds(pid: number): number | undefined {
  try {
    const queued = Number(readFileSync(`/proc/${pid}/schedstat`, "utf8").split(" ")[1]);
    return Number.isFinite(queued) ? queued / 1e9 : undefined;
  } catch {
    return undefined;
  }
}

/** The on-CPU time of every thread added up; null: no schedstat; undefined: no process. */
function threadSchedstat(pid: number): { onCpuSeconds: number } | null | undefined {
  let threads: string[];
  try {
    threads = readdirSync(`/proc/${pid}/task`);
  } catch {
    return cpuSeconds(pid) === undefined ? undefined : null;
  }
  let onCpu = 0;
  for (const tid of threads) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8");
    } catch {
      continue; // the thread ended since the listing
    }
    const running = Number(text.split(" ")[0]);
    if (!Number.isFinite(running)) return null;
    onCpu += running;
  }
  return { onCpuSeconds: onCpu / 1e9 };
}

export interface WatchedProcess {
  /** What the process is, e.g. "broker" or "redis". */
  role: string;
  pid: number;
}

/**
 * CPU used by other processes (brokers, Redis) over a window, from /proc, as percent of one
 * core: the other half of "is the generator or the broker the limit".
 */
export class ProcessCpuMeter {
  private start = new Map<number, number>();
  private startedAt = 0;

  constructor(private readonly processes: readonly WatchedProcess[]) {}

  begin(): void {
    this.startedAt = performance.now();
    this.start = new Map();
    for (const { pid } of this.processes) {
      const seconds = cpuSeconds(pid);
      if (seconds !== undefined) this.start.set(pid, seconds);
    }
  }

  /** Percent of one core by role (processes sharing a role are added up). */
  end(): Record<string, number> {
    const wallSeconds = (performance.now() - this.startedAt) / 1000;
    const byRole: Record<string, number> = {};
    for (const { role, pid } of this.processes) {
      const before = this.start.get(pid);
      const after = cpuSeconds(pid);
      if (before === undefined || after === undefined || wallSeconds <= 0) continue;
      byRole[role] = (byRole[role] ?? 0) + ((after - before) / wallSeconds) * 100;
    }
    return byRole;
  }
}
