import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

/**
 * The bench CLI interrupted mid-measurement: everything it started is stopped, and it exits
 * 130 after SIGINT and 143 after SIGTERM (the shell's codes for them), not 1, whatever the
 * interrupted scenario did meanwhile.
 */
const CLI = fileURLToPath(new URL("../src/cli.js", import.meta.url));
const CODES = { SIGINT: 130, SIGTERM: 143 } as const;

/** A quick throughput run against one in-memory Sluice node; its output read line by line. */
function benchRun(resultsDir: string): { child: ChildProcess; lines: AsyncIterator<string> } {
  const child = spawn(
    process.execPath,
    [
      CLI,
      "throughput",
      "--quick",
      "--brokers",
      "sluice",
      "--measure-seconds",
      "20",
      "--results",
      resultsDir,
      "--max-minutes",
      "2",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  child.stderr?.resume();
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })[
    Symbol.asyncIterator
  ]();
  return { child, lines };
}

async function lineMatching(lines: AsyncIterator<string>, pattern: RegExp): Promise<void> {
  for (;;) {
    const next = await lines.next();
    if (next.done) throw new Error(`the bench ended before a line matching ${pattern}`);
    if (pattern.test(next.value)) return;
  }
}

/** The process ids of a process's children (every thread's), from /proc. */
function childrenOf(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`).flatMap((task) =>
    readFileSync(`/proc/${pid}/task/${task}/children`, "utf8")
      .trim()
      .split(/\s+/)
      .filter((p) => p !== "")
      .map(Number),
  );
}

/** Whether a process is gone (or a zombie); /proc is read once. */
function gone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return true;
  }
}

for (const signal of ["SIGINT", "SIGTERM"] as const)
  test(
    `${signal} mid-measurement: everything stopped, exit ${CODES[signal]}`,
    {
      timeout: 90_000,
    },
    async () => {
      const results = await mkdtemp(join(tmpdir(), "bench-signal-results-"));
      const { child, lines } = benchRun(results);
      try {
        await lineMatching(lines, /measuring: published/);
        const started = childrenOf(child.pid ?? 0);
        assert.ok(started.length >= 2, `a broker and generators run: ${started}`);
        const exited = once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
        child.kill(signal);
        // Drained, so the child never blocks on a full pipe while it stops.
        void (async () => {
          while (!(await lines.next()).done);
        })();
        const [code, killedBy] = await exited;
        assert.deepEqual({ code, killedBy }, { code: CODES[signal], killedBy: null });
        assert.deepEqual(
          started.filter((pid) => !gone(pid)),
          [],
          "every process the run started is stopped",
        );
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
        await rm(results, { recursive: true, force: true });
      }
    },
  );
