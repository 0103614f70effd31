import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { quickSluiceRun, spawnBench } from "../../harness/bench-cli.js";

/**
 * The bench CLI interrupted mid-measurement: everything it started is stopped, and it exits
 * 130 after SIGINT and 143 after SIGTERM (the shell's codes for them), not 1, whatever the
 * interrupted scenario did meanwhile.
 */
const CODES = { SIGINT: 130, SIGTERM: 143 } as const;

/** A quick throughput run against one in-memory Sluice node. */
const benchRun = (resultsDir: string) => spawnBench(quickSluiceRun("throughput", resultsDir));

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
      const bench = benchRun(results);
      const { child } = bench;
      try {
        await bench.lineMatching(/measuring: published/);
        const started = childrenOf(child.pid ?? 0);
        assert.ok(started.length >= 2, `a broker and generators run: ${started}`);
        child.kill(signal);
        const { code, signal: killedBy } = await bench.exited();
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
