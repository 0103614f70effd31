import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** The built bench CLI (dist/harness beside dist/bench). */
const BENCH_CLI = fileURLToPath(new URL("../bench/src/cli.js", import.meta.url));

/** The bench CLI run with `args`, its output read line by line (stderr drained). */
export function spawnBench(args: readonly string[]): {
  child: ChildProcess;
  lines: AsyncIterableIterator<string>;
} {
  const child = spawn(process.execPath, [BENCH_CLI, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stderr?.resume();
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })[
    Symbol.asyncIterator
  ]();
  return { child, lines };
}

/** Reads lines until one matches; fails at the end of output. */
export async function lineMatching(
  lines: AsyncIterableIterator<string>,
  pattern: RegExp,
): Promise<string> {
  for (;;) {
    const next = await lines.next();
    if (next.done) throw new Error(`the bench ended before a line matching ${pattern}`);
    if (pattern.test(next.value)) return next.value;
  }
}
