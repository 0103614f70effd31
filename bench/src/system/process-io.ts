import { readFileSync } from "node:fs";

/**
 * The system calls a process has made so far, from one read of /proc/<pid>/io: `reads`
 * (`syscr`: read, recv and the like) and `writes` (`syscw`: write, writev, send and the like),
 * whatever they returned; undefined if the process is gone or not ours to read.
 */
export function syscalls(pid: number): { reads: number; writes: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/io`, "utf8");
    const reads = /^syscr: (\d+)$/m.exec(text);
    const writes = /^syscw: (\d+)$/m.exec(text);
    return reads && writes ? { reads: Number(reads[1]), writes: Number(writes[1]) } : undefined;
  } catch {
    return undefined;
  }
}

/** Read system calls a process has made so far (syscalls' `reads`). */
export function readSyscalls(pid: number): number | undefined {
  return syscalls(pid)?.reads;
}
