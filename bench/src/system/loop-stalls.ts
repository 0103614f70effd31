import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** Where loop-stall-probe.ts writes, in the environment of the process it is preloaded into. */
export const LOOP_STALL_FILE_ENV = "BENCH_LOOP_STALL_FILE";

/** The probe module (loop-stall-probe.ts, compiled beside this one). */
const PROBE = fileURLToPath(new URL("./loop-stall-probe.js", import.meta.url));

/** Node flags and environment that make a process record its event-loop stalls in `file`. */
export function loopStallProbe(file: string): { execArgv: string[]; env: NodeJS.ProcessEnv } {
  return { execArgv: ["--import", PROBE], env: { [LOOP_STALL_FILE_ENV]: file } };
}

/** The longest stall the probe recorded in `file` that overlaps [fromMs, toMs] (epoch ms); 0 if none. */
export function longestStallMs(file: string, fromMs: number, toMs: number): number {
  if (!existsSync(file)) return 0;
  let longest = 0;
  for (const line of readFileSync(file, "utf8").split("\n")) {
    const [end, ms] = line.split(" ").map(Number);
    if (end === undefined || ms === undefined || Number.isNaN(end) || Number.isNaN(ms)) continue;
    if (end >= fromMs && end - ms <= toMs) longest = Math.max(longest, ms);
  }
  return longest;
}
