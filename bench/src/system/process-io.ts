import { readFileSync } from "node:fs";

/**
 * Read system calls a process has made so far (`syscr` of /proc/<pid>/io: read, recv and the
 * like, whatever they returned); undefined if the process is gone or not ours to read.
 */
export function readSyscalls(pid: number): number | undefined {
  return ioCounter(pid, /^syscr: (\d+)$/m);
}

/** Write system calls (`syscw`: write, writev, send and the like), as readSyscalls. */
export function writeSyscalls(pid: number): number | undefined {
  return ioCounter(pid, /^syscw: (\d+)$/m);
}

function ioCounter(pid: number, counter: RegExp): number | undefined {
  try {
    const match = counter.exec(readFileSync(`/proc/${pid}/io`, "utf8"));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}
