import { readFileSync } from "node:fs";

/**
 * How much a process had to wait for a CPU, and how contended the whole machine was, over a
 * window: on a shared 2-core machine, a tail latency can be a broker that was ready to run and
 * not scheduled rather than a broker that was busy. Linux only; figures are null elsewhere.
 */
export interface ContentionFigures {
  /** Milliseconds per second the process's main thread (its event loop) was runnable but waiting. */
  runQueueWaitMsPerSecond: number | null;
  /** Percent of the window in which some task on the machine waited for a CPU (PSI "some"). */
  cpuPressurePercent: number | null;
}

/** Nanoseconds the main thread of `pid` has spent runnable but not running (/proc/<pid>/schedstat). */
function runQueueWaitNs(pid: number): number | undefined {
  try {
    const fields = readFileSync(`/proc/${pid}/schedstat`, "utf8").trim().split(" ");
    const waited = Number(fields[1]);
    return Number.isFinite(waited) ? waited : undefined;
  } catch {
    return undefined;
  }
}

/** Microseconds some task has waited for a CPU since boot (/proc/pressure/cpu, kernel 4.20+). */
function cpuPressureMicros(): number | undefined {
  try {
    const some = /^some .*total=(\d+)$/m.exec(readFileSync("/proc/pressure/cpu", "utf8"));
    return some ? Number(some[1]) : undefined;
  } catch {
    return undefined;
  }
}

export class ContentionWindow {
  private startedAt = 0;
  private waitAtStart: number | undefined;
  private pressureAtStart: number | undefined;

  constructor(private readonly pid: number | undefined) {}

  begin(): void {
    this.startedAt = performance.now();
    this.waitAtStart = this.pid === undefined ? undefined : runQueueWaitNs(this.pid);
    this.pressureAtStart = cpuPressureMicros();
  }

  end(): ContentionFigures {
    const seconds = (performance.now() - this.startedAt) / 1000;
    const waitNow = this.pid === undefined ? undefined : runQueueWaitNs(this.pid);
    const pressureNow = cpuPressureMicros();
    return {
      runQueueWaitMsPerSecond:
        this.waitAtStart === undefined || waitNow === undefined || seconds <= 0
          ? null
          : (waitNow - this.waitAtStart) / 1e6 / seconds,
      cpuPressurePercent:
        this.pressureAtStart === undefined || pressureNow === undefined || seconds <= 0
          ? null
          : ((pressureNow - this.pressureAtStart) / 1e6 / seconds) * 100,
    };
  }
}
