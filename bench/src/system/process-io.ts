import { readFileSync } from "node:fs";

/**
 * Read system calls a process has made so far (`syscr` of /proc/<pid>/io: read, recv and the
 * like, whatever they returned); undefined if the process is gone or not ours to read.
 */
export function readSyscalls(pid: number): number | undefined {
  try {
    const match = /^syscr: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, "utf8"));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}
