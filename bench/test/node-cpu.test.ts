import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { type BenchProcess, quickSluiceRun, spawnBench } from "../../harness/bench-cli.js";
import {
  BENCH_CGROUP_PREFIX,
  CPU_CONTROLLER,
  checkCpuController,
  NODE_CPU_SHARES,
  NodeCpuBudget,
  parseCpuStat,
  parseNodeCpu,
  sweepStaleCgroups,
  throttleSince,
} from "../../harness/cpu-cgroup.js";
import { parseCli } from "../src/options.js";
import type { MeasuredCase } from "../src/scenarios/cost-goals.js";
import type { CostFigures } from "../src/scenarios/cost-probe.js";
import type { LoadCase } from "../src/scenarios/measure-brokers.js";
import { scalingTable } from "../src/scenarios/scaling-table.js";
import type { ResultRow } from "../src/scenarios/scenario.js";
import { threadCpuSeconds } from "../src/system/process-cpu.js";

const CLI = fileURLToPath(new URL("../src/cli.js", import.meta.url));

/** Why the real-cgroup tests cannot run here; undefined when they can. */
function cgroupSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return "needs root (writes to the cgroup v1 cpu controller)";
  try {
    checkCpuController(CPU_CONTROLLER);
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}
const skip = cgroupSkipReason();

test("--node-cpu: cores from 0.01 up to the machine's, anything else refused", () => {
  assert.equal(parseNodeCpu("0.4", 2), 0.4);
  assert.equal(parseNodeCpu("2", 2), 2);
  assert.equal(parseNodeCpu("0.01", 2), 0.01);
  for (const bad of ["", "abc", "0", "-0.5", "NaN", "Infinity"])
    assert.throws(() => parseNodeCpu(bad, 2), /--node-cpu must be a number of cores/, bad);
  assert.throws(() => parseNodeCpu("0.004", 2), /at least 0.01 core/);
  assert.throws(() => parseNodeCpu("3", 2), /more than the machine's 2 cores/);
  assert.equal(parseCli(["cluster-cost", "--node-cpu", "0.4"], {}).run.nodeCpu, 0.4);
  assert.equal(parseCli(["cluster-cost"], {}).run.nodeCpu, undefined);
  assert.throws(() => parseCli(["cluster-cost", "--node-cpu", "x"], {}), /--node-cpu/);
});

test("cpu.stat is read into periods, throttled periods and seconds", () => {
  const stats = parseCpuStat(
    "nr_periods 120\nnr_throttled 90\nthrottled_time 4500000000\nnr_bursts 0\nburst_time 0\n",
  );
  assert.deepEqual(stats, { periods: 120, throttled: 90, throttledSeconds: 4.5 });
  assert.deepEqual(throttleSince({ periods: 100, throttled: 10, throttledSeconds: 1 }, stats), {
    periods: 20,
    throttled: 80,
    throttledSeconds: 3.5,
  });
});

test("a directory that is no cpu controller is refused, saying why", async () => {
  const dir = await mkdtemp(join(tmpdir(), "not-a-cgroup-"));
  try {
    assert.throws(
      () => checkCpuController(dir),
      /needs a writable cgroup v1 cpu controller: no cgroup hierarchy/,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** A process that spins for at most 30 s (the test kills it long before). */
function busyProcess(): ChildProcess {
  return spawn(
    process.execPath,
    ["-e", "const end = Date.now() + 30000; while (Date.now() < end) {}"],
    {
      stdio: "ignore",
    },
  );
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGKILL");
  await exited;
}

/** A parent cgroup of this test's own (named so a later run's sweep removes it if we die). */
function testParent(name: string): string {
  const path = join(CPU_CONTROLLER, `${BENCH_CGROUP_PREFIX}${process.pid}-${name}`);
  mkdirSync(path);
  return path;
}

function cpuCgroupOf(pid: number): string | undefined {
  const line = readFileSync(`/proc/${pid}/cgroup`, "utf8")
    .split("\n")
    .find((l) => /^\d+:cpu(,cpuacct)?:/.test(l) || /^\d+:cpuacct,cpu:/.test(l));
  return line?.split(":")[2];
}

test(
  "a placed process runs under its quota in its own cgroup, removed once it stopped",
  { skip },
  async () => {
    const parent = testParent("lifecycle");
    const budget = new NodeCpuBudget(0.05, parent);
    const child = busyProcess();
    try {
      const pid = child.pid;
      assert.ok(pid);
      const group = budget.place(pid, "busy node/1");
      assert.equal(budget.cgroupOf(pid), group);
      assert.match(group.path, new RegExp(`/${BENCH_CGROUP_PREFIX}${process.pid}-1-busy_node_1$`));
      assert.equal(readFileSync(join(group.path, "cpu.cfs_quota_us"), "utf8").trim(), "5000");
      assert.equal(readFileSync(join(group.path, "cpu.cfs_period_us"), "utf8").trim(), "100000");
      assert.equal(
        readFileSync(join(group.path, "cpu.shares"), "utf8").trim(),
        String(NODE_CPU_SHARES),
      );
      assert.deepEqual(group.pids(), [pid]);
      assert.equal(cpuCgroupOf(pid), group.path.slice(CPU_CONTROLLER.length));
      const statsBefore = group.stats();
      const cpuBefore = threadCpuSeconds(pid);
      const startedAt = performance.now();
      // a measurement window: the quota is a rate, only seen over time
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      const seconds = (performance.now() - startedAt) / 1000;
      const used = (threadCpuSeconds(pid) ?? 0) - (cpuBefore ?? 0);
      const stats = group.stats();
      assert.ok(statsBefore && stats);
      const delta = throttleSince(statsBefore, stats);
      assert.ok(
        delta.throttled > 0,
        `a spinning process is throttled at 0.05 core: ${JSON.stringify(delta)}`,
      );
      // a spinning process alone would use a whole core: the quota holds it near 5 %
      assert.ok(used / seconds < 0.1, `CPU ${(used / seconds).toFixed(3)} core, quota 0.05`);
      await stopProcess(child);
      assert.equal(budget.release(pid), true);
      assert.equal(existsSync(group.path), false);
      assert.equal(budget.cgroupOf(pid), undefined);
    } finally {
      await stopProcess(child);
      budget.releaseAll();
      rmdirSync(parent);
    }
  },
);

test(
  "releaseAll moves still-running nodes out (unconstrained) and removes every cgroup",
  { skip },
  async () => {
    const parent = testParent("release");
    const budget = new NodeCpuBudget(0.5, parent);
    const children = [busyProcess(), busyProcess()];
    try {
      const groups = children.map((c, i) => budget.place(c.pid ?? 0, `n${i}`));
      budget.releaseAll();
      for (const [i, group] of groups.entries()) {
        assert.equal(existsSync(group.path), false);
        const pid = children[i]?.pid ?? 0;
        assert.equal(children[i]?.exitCode, null, "the process itself is left running");
        assert.equal(cpuCgroupOf(pid), parent.slice(CPU_CONTROLLER.length));
      }
      assert.deepEqual(
        readdirSync(parent).filter((n) => n.startsWith(BENCH_CGROUP_PREFIX)),
        [],
      );
    } finally {
      for (const child of children) await stopProcess(child);
      budget.releaseAll();
      rmdirSync(parent);
    }
  },
);

test(
  "the sweep removes cgroups of a bench that is gone, with what is nested and running in them, and keeps a live one's",
  { skip },
  async () => {
    const parent = testParent("sweep");
    const gone = 999_999_999;
    const stale = join(parent, `${BENCH_CGROUP_PREFIX}${gone}-1-node`);
    const nested = join(stale, "inner");
    const live = join(parent, `${BENCH_CGROUP_PREFIX}${process.pid}-1-node`);
    const other = join(parent, "someone-else");
    const orphan = busyProcess();
    try {
      for (const dir of [stale, nested, live, other]) mkdirSync(dir);
      const budget = new NodeCpuBudget(0.2, stale);
      budget.place(orphan.pid ?? 0, "orphan");
      const swept = sweepStaleCgroups(parent, (pid) => pid !== gone);
      assert.deepEqual(swept, [`${BENCH_CGROUP_PREFIX}${gone}-1-node`]);
      assert.equal(existsSync(stale), false);
      assert.equal(existsSync(live), true);
      assert.equal(existsSync(other), true);
      assert.equal(orphan.exitCode, null, "the orphan is moved out, not killed");
      assert.equal(cpuCgroupOf(orphan.pid ?? 0), parent.slice(CPU_CONTROLLER.length));
    } finally {
      await stopProcess(orphan);
      sweepStaleCgroups(parent, () => false);
      for (const dir of [other, live, nested, stale]) if (existsSync(dir)) rmdirSync(dir);
      rmdirSync(parent);
    }
  },
);

/**
 * The bench CLI on a quick cluster-cost run of one in-memory node under --node-cpu (`env`:
 * the bench's own variables).
 */
function benchRun(resultsDir: string, env: Readonly<Record<string, string>> = {}): BenchProcess {
  const flags = ["--phases", "full-speed:0", "--node-cpu", "0.3"];
  return spawnBench(quickSluiceRun("cluster-cost", resultsDir, flags), env);
}

/**
 * Whether a process that is not our child (the bench's node, SIGKILLed as the bench exits) is
 * gone or a zombie within `ms`: no event tells, so /proc is polled, bounded.
 */
async function processGone(pid: number, ms: number): Promise<boolean> {
  const deadline = performance.now() + ms;
  for (;;) {
    let state: string | undefined;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
    } catch {
      return true;
    }
    if (state === "Z") return true;
    if (performance.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function cgroupsOf(benchPid: number): string[] {
  return readdirSync(CPU_CONTROLLER).filter((n) =>
    n.startsWith(`${BENCH_CGROUP_PREFIX}${benchPid}-`),
  );
}

for (const signal of ["SIGTERM", "SIGINT"] as const)
  test(
    `a bench run's node cgroups are gone after ${signal} mid-measurement`,
    { skip, timeout: 90_000 },
    async () => {
      const results = await mkdtemp(join(tmpdir(), "node-cpu-results-"));
      const bench = benchRun(results);
      const { child } = bench;
      try {
        const benchPid = child.pid ?? 0;
        await bench.lineMatching(/measuring: published/);
        const [group] = cgroupsOf(benchPid);
        assert.ok(group, "the node runs in a bench cgroup while it measures");
        const nodePids = readFileSync(join(CPU_CONTROLLER, group, "cgroup.procs"), "utf8")
          .trim()
          .split("\n");
        assert.equal(nodePids.length, 1);
        child.kill(signal);
        const { code } = await bench.exited();
        // it stops long before its 20 s window ends, with the signal's exit code
        assert.equal(code, signal === "SIGINT" ? 130 : 143);
        assert.deepEqual(cgroupsOf(benchPid), []);
        assert.ok(await processGone(Number(nodePids[0]), 5_000), "the node was stopped too");
      } finally {
        await stopProcess(child);
        await rm(results, { recursive: true, force: true });
      }
    },
  );

test(
  "a SIGKILLed run's cgroup (with its orphaned node) is swept by the next run",
  { skip, timeout: 90_000 },
  async () => {
    const results = await mkdtemp(join(tmpdir(), "node-cpu-results-"));
    const bench = benchRun(results);
    const { child } = bench;
    let orphan: number | undefined;
    try {
      const benchPid = child.pid ?? 0;
      await bench.lineMatching(/measuring: published/);
      const [group] = cgroupsOf(benchPid);
      assert.ok(group);
      orphan = Number(
        readFileSync(join(CPU_CONTROLLER, group, "cgroup.procs"), "utf8")
          .trim()
          .split("\n")[0],
      );
      child.kill("SIGKILL");
      await bench.exited();
      assert.deepEqual(cgroupsOf(benchPid), [group], "nothing could clean up after SIGKILL");
      const swept = sweepStaleCgroups(CPU_CONTROLLER);
      assert.ok(swept.includes(group), `swept ${swept.join(", ")}`);
      assert.deepEqual(cgroupsOf(benchPid), []);
    } finally {
      await stopProcess(child);
      // the orphaned node is this test's own doing: end it
      if (orphan && existsSync(`/proc/${orphan}`)) process.kill(orphan, "SIGKILL");
      await rm(results, { recursive: true, force: true });
    }
  },
);

test(
  "a run whose nodes fail to start leaves no cgroup behind",
  { skip, timeout: 90_000 },
  async () => {
    const results = await mkdtemp(join(tmpdir(), "node-cpu-results-"));
    // every node is placed right after spawn, then exits on the config it was given
    const bench = benchRun(results, { BENCH_SLUICE_CONFIG: '{"bogus":1}' });
    const { child } = bench;
    try {
      await bench.lineMatching(/sluice failed to start/);
      const { code } = await bench.exited();
      assert.equal(code, 1, "the run reports the failure");
      assert.deepEqual(cgroupsOf(child.pid ?? 0), []);
    } finally {
      await stopProcess(child);
      await rm(results, { recursive: true, force: true });
    }
  },
);

test("--node-cpu is refused for a scenario that does not take it, before anything starts", async () => {
  const child = spawn(process.execPath, [CLI, "connections", "--node-cpu", "0.4"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const [code] = await once(child, "exit");
  assert.equal(code, 2);
  assert.match(stderr, /--node-cpu: connections does not take it/);
});

/** A full-speed round of a broker: its delivered msg/s and its nodes' CPU over a 2 s window. */
function measuredRound(
  messagesPerSecond: number,
  nodes: Array<{ cpuSeconds: number; throttled: number }>,
): { row: ResultRow; figures: CostFigures } {
  const names = nodes.length === 1 ? ["node"] : ["node A", "node B"];
  return {
    row: {
      messagesPerSecond,
      generatorCpu: { publishers: [20.4], subscribers: [30, 41.6], saturated: false },
    } as ResultRow,
    figures: {
      windowSeconds: 2,
      processes: [
        ...nodes.map((n, i) => ({
          name: names[i] ?? "",
          pid: i + 1,
          cpuSeconds: n.cpuSeconds,
          runQueueSeconds: 0.5,
          quotaCores: 0.4,
          throttle: { periods: 20, throttled: n.throttled, throttledSeconds: 0.6 },
        })),
        { name: "redis", pid: 9, cpuSeconds: 0.04, runQueueSeconds: 0.1 },
      ],
      redis: null,
      readiness: null,
      redisOutputBufferCuts: null,
      nodeSubscriptionResets: null,
      nodeDroppedMessages: null,
      cpuPressurePercent: null,
    },
  };
}

function measuredCase(broker: string, rounds: ReturnType<typeof measuredRound>[]): MeasuredCase {
  return {
    key: { broker, kind: "full-speed", qos: 0 },
    loadCase: { qos: 0 } as LoadCase,
    rounds,
  };
}

test("the scaling table divides two brokers' delivered msg/s round by round, with each node's CPU against its quota", () => {
  const one = measuredCase("sluice-redis", [
    measuredRound(20_000, [{ cpuSeconds: 0.8, throttled: 20 }]),
    measuredRound(10_000, [{ cpuSeconds: 0.8, throttled: 19 }]),
    measuredRound(25_000, [{ cpuSeconds: 0.79, throttled: 20 }]),
  ]);
  const two = measuredCase("sluice-cluster-2", [
    measuredRound(30_000, [
      { cpuSeconds: 0.8, throttled: 20 },
      { cpuSeconds: 0.5, throttled: 4 },
    ]),
    measuredRound(20_000, [
      { cpuSeconds: 0.8, throttled: 20 },
      { cpuSeconds: 0.4, throttled: 0 },
    ]),
    measuredRound(25_000, [
      { cpuSeconds: 0.5, throttled: 15 },
      { cpuSeconds: 0.5, throttled: 2 },
    ]),
  ]);
  const table = scalingTable([one, two], 0.4);
  assert.ok(table);
  assert.match(table.title, /each node limited to 0.4 core/);
  const rows = table.rows.filter((r) => String(r.compare).startsWith("two Sluice nodes"));
  assert.deepEqual(
    rows.map((r) => [r.round, r["msg/s"] ?? null, r["baseline msg/s"] ?? null, r.ratio]),
    [
      [1, 30_000, 20_000, 1.5],
      [2, 20_000, 10_000, 2],
      [3, 25_000, 25_000, 1],
      ["median", null, null, 1.5],
    ],
  );
  assert.equal(
    rows[0]?.["nodes CPU cores (throttled)"],
    "A 0.40 (thr 100 %, wait 25 %), B 0.25 (thr 20 %, wait 25 %)",
  );
  assert.equal(rows[0]?.["baseline nodes CPU cores (throttled)"], "0.40 (thr 100 %, wait 25 %)");
  assert.equal(rows[0]?.["generators CPU %"], "pub 20 / sub 30+42");
  assert.equal(rows[0]?.["at quota"], "A");
  assert.equal(rows[0]?.["baseline at quota"], "node");
  assert.equal(rows[1]?.["at quota"], "A");
  assert.equal(rows[2]?.["at quota"], "none", "15 of 20 periods is under the 80 % mark");
  assert.equal(rows[0]?.["Redis CPU % (wait)"], "2 (wait 5)");
  // without the other broker of a pair there is nothing to divide
  assert.equal(scalingTable([one], 0.4), undefined);
  assert.match(scalingTable([one, two], undefined)?.title ?? "", /no --node-cpu/);
});
