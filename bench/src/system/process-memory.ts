import { readFileSync } from "node:fs";

/** Resident set size of a process in bytes (/proc/<pid>/status VmRSS); undefined if gone. */
export function rssBytes(pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return match ? Number(match[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Samples a process's RSS every `intervalMs` and keeps the highest: a storm's peak is a
 * moment, and one reading after it would miss it.
 */
export class PeakRss {
  private peak = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly pid: number,
    intervalMs = 100,
  ) {
    this.sample();
    this.timer = setInterval(() => this.sample(), intervalMs);
  }

  private sample(): void {
    const rss = rssBytes(this.pid);
    if (rss !== undefined && rss > this.peak) this.peak = rss;
  }

  /** Stops sampling and returns the peak in bytes (0 if never read). */
  stop(): number {
    clearInterval(this.timer);
    this.sample();
    return this.peak;
  }
}
