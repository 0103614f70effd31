import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import { ReadinessWatch } from "../src/brokers/readiness-watch.js";
import {
  infoField,
  parseCommandStats,
  type RedisCounters,
  redisActivitySince,
} from "../src/brokers/redis-info.js";
import { parseSluiceCounters } from "../src/brokers/sluice-metrics.js";
import { parseCli } from "../src/options.js";
import { clusterCost, plannedPhases } from "../src/scenarios/cluster-cost.js";
import { connectCostCells } from "../src/scenarios/connect-cost.js";
import { type CostKey, costGoals, type MeasuredCase } from "../src/scenarios/cost-goals.js";
import {
  type CostFigures,
  cpuMicrosPerMessage,
  droppedSince,
  perMessage,
  readinessSummary,
  resetsSince,
} from "../src/scenarios/cost-probe.js";
import type { LoadCase } from "../src/scenarios/measure-brokers.js";
import { parsePhases, runsPhase, selectedLevels } from "../src/scenarios/phase-selection.js";
import { nodeCpuText } from "../src/scenarios/scaling-table.js";
import type { ResultRow } from "../src/scenarios/scenario.js";
import { cpuSeconds, threadCpuSeconds } from "../src/system/process-cpu.js";
import { readSyscalls } from "../src/system/process-io.js";

test("parseCommandStats and infoField read INFO text", () => {
  const text = [
    "# Commandstats",
    "cmdstat_publish:calls=300,usec=900,usec_per_call=3.00,rejected_calls=0,failed_calls=0",
    "cmdstat_client|setname:calls=2,usec=4,usec_per_call=2.00,rejected_calls=0,failed_calls=0",
    "cmdstat_info:calls=7,usec=70,usec_per_call=10.00,rejected_calls=0,failed_calls=0",
  ].join("\r\n");
  assert.deepEqual(parseCommandStats(text), { publish: 300, "client|setname": 2, info: 7 });
  const stats = "# Stats\r\ntotal_net_input_bytes:1200\r\ntotal_net_output_bytes:3400\r\n";
  assert.equal(infoField(stats, "total_net_output_bytes"), 3400);
  assert.ok(Number.isNaN(infoField(stats, "client_output_buffer_limit_disconnections")));
});

test("redisActivitySince leaves the bench's INFO and its earlier reply out", () => {
  const before: RedisCounters = {
    calls: { publish: 100, info: 3 },
    netInputBytes: 1_000,
    netOutputBytes: 5_000,
  };
  const after: RedisCounters = {
    calls: { publish: 400, info: 5, evalsha: 20 },
    netInputBytes: 31_000,
    netOutputBytes: 9_000,
  };
  assert.deepEqual(redisActivitySince({ counters: before, statsReplyBytes: 1_000 }, after), {
    commands: 320,
    byCommand: { publish: 300, evalsha: 20 },
    netInputBytes: 30_000,
    netOutputBytes: 3_000,
  });
});

test("resetsSince adds the nodes' growth, null when no node has the series", () => {
  assert.equal(resetsSince([null, null], [null, null]), null);
  assert.equal(resetsSince([2, null], [5, null]), 3);
  assert.equal(resetsSince([], [1, 4]), 5);
});

test("droppedSince adds the nodes' drops by reason; a node that did not answer counts nothing", () => {
  const node = (slow: number, full: number) =>
    parseSluiceCounters(
      [
        `sluice_dropped_messages_total{reason="slow_consumer"} ${slow}`,
        `sluice_dropped_messages_total{reason="queue_full"} ${full}`,
      ].join("\n"),
    );
  assert.equal(droppedSince([], []), null);
  assert.deepEqual(droppedSince([node(5, 0), node(0, 0)], [node(105, 0), node(20, 3)]), {
    slow_consumer: 120,
    queue_full: 3,
  });
  assert.deepEqual(droppedSince([node(5, 0), null], [node(6, 0), null]), {
    slow_consumer: 1,
    queue_full: 0,
  });
});

test("readinessSummary - one unanswered or 503 poll of any node makes it not ready", () => {
  const node = (notReady: number, failed: number) => ({
    polls: 20,
    notReady,
    failed,
    firstNotReadyMs: notReady + failed > 0 ? 300 : null,
  });
  assert.deepEqual(readinessSummary(null), { ready: null, text: null });
  assert.deepEqual(readinessSummary([node(0, 0), node(0, 0)]), { ready: true, text: "0 of 40" });
  assert.deepEqual(readinessSummary([node(2, 1), node(0, 0)]), {
    ready: false,
    text: "3 of 40 (1 unanswered)",
  });
});

function figures(nodeSeconds: number[], redisSeconds: number | null): CostFigures {
  const names = nodeSeconds.length === 1 ? ["node"] : ["node A", "node B"];
  return {
    windowSeconds: 2,
    processes: [
      ...nodeSeconds.map((cpuSeconds, i) => ({ name: names[i] ?? "", pid: i + 1, cpuSeconds })),
      ...(redisSeconds === null ? [] : [{ name: "redis", pid: 99, cpuSeconds: redisSeconds }]),
    ],
    redis:
      redisSeconds === null
        ? null
        : {
            commands: 10_000,
            byCommand: { publish: 10_000 },
            netInputBytes: 0,
            netOutputBytes: 0,
            readSyscalls: 400,
          },
    readiness: [{ polls: 20, notReady: 0, failed: 0, firstNotReadyMs: null }],
    redisOutputBufferCuts: redisSeconds === null ? null : 0,
    nodeSubscriptionResets: null,
    nodeDroppedMessages: null,
    cpuPressurePercent: 10,
  };
}

const row = (messagesPerSecond: number, p99Ms = 1): ResultRow =>
  ({ messagesPerSecond, p99Ms }) as ResultRow;

test("nodeCpuText gives each node's cores, throttling, wait, and the time it held its publishers or its subscription", () => {
  const f = figures([0.8, 0.6], 0.02);
  const [a, b] = f.processes;
  Object.assign(a ?? {}, {
    quotaCores: 0.4,
    throttle: { periods: 20, throttled: 19, throttledSeconds: 1 },
    runQueueSeconds: 0.5,
    held: { publishersSeconds: 0.3, subscriptionSeconds: 0, overSeconds: 2 },
  });
  Object.assign(b ?? {}, {
    held: { publishersSeconds: 0, subscriptionSeconds: 0.5, overSeconds: 2 },
  });
  assert.equal(
    nodeCpuText(f),
    "A 0.40 (thr 95 %, wait 25 %, held 15 %), B 0.30 (paused 25 %)",
    "no held or paused share where it is 0",
  );
});

test("cpuMicrosPerMessage divides the window's CPU by the window's deliveries", () => {
  // 0.1 s of CPU in a 2 s window = 5 %; at 5,000 msg/s that is 10 µs per message
  assert.equal(cpuMicrosPerMessage(row(5_000), figures([0.1], null), "node"), 10);
  assert.equal(cpuMicrosPerMessage(row(5_000), figures([0.1, 0.3], 0.02), "node"), 40);
  assert.equal(cpuMicrosPerMessage(row(5_000), figures([0.1], null), "redis"), null);
  assert.equal(perMessage(400, row(5_000), figures([0.1], 0.02)), 0.04);
  assert.equal(perMessage(400, row(0), figures([0.1], 0.02)), null);
});

test("costGoals - ratios of the same case, met or not, only for cases the run had", () => {
  const loadCase = {} as LoadCase;
  const measured = (key: CostKey, r: ResultRow, f: CostFigures): MeasuredCase => ({
    key,
    loadCase,
    row: r,
    figures: f,
    rounds: [{ row: r, figures: f }],
  });
  const cases: MeasuredCase[] = [
    measured({ broker: "sluice", kind: "rate", qos: 1 }, row(5_000, 2), figures([0.1], null)),
    measured(
      { broker: "sluice-redis", kind: "rate", qos: 1 },
      row(5_000, 5),
      figures([0.12], 0.02),
    ),
    measured({ broker: "aedes-redis", kind: "rate", qos: 1 }, row(5_000, 3), figures([0.2], 0.005)),
  ];
  const rows = costGoals(
    (key) =>
      cases.find(
        (c) => c.key.broker === key.broker && c.key.kind === key.kind && c.key.qos === key.qos,
      ),
    new Map([
      ["sluice", { rates: [2_000], nodeMicros: [300] }],
      ["sluice-redis", { rates: [1_700], nodeMicros: [360] }],
    ]),
    ["sluice", "sluice-redis", "aedes-redis"],
  );
  const find = (measure: string) => rows.find((r) => String(r.measure).startsWith(measure));
  assert.deepEqual(
    rows.map((r) => [r.measure, r.case]),
    [
      ["node CPU per message, over Redis / in memory", "5,000 msg/s, QoS 1"],
      ["Redis CPU per message, Sluice / stock aedes + plugins", "5,000 msg/s, QoS 1"],
      ["connects/s, over Redis / in memory", "connects"],
      ["p99, over Redis / in memory", "5,000 msg/s, QoS 1"],
    ],
  );
  assert.equal(find("node CPU")?.measured, 1.2);
  assert.equal(find("node CPU")?.met, true);
  assert.equal(find("Redis CPU")?.measured, 4);
  assert.equal(find("Redis CPU")?.met, false);
  assert.equal(find("connects/s")?.measured, 0.85);
  assert.equal(find("p99")?.met, false);
});

test("costGoals - connects/s ratios are the median of the rounds' paired ratios, node CPU beside", () => {
  // the over-Redis node's slowed second round and the in-memory node's slowed third: a ratio
  // of the two medians (2,000 / 3,000) would say 0.67x, every round's own ratio says 0.9x-1.0x
  const rows = costGoals(
    () => undefined,
    new Map([
      ["sluice", { rates: [3_000, 3_100, 1_500, null], nodeMicros: [300, 310, 320, null] }],
      ["sluice-redis", { rates: [2_700, 2_000, 1_500, 2_900], nodeMicros: [330, 400, 350, 340] }],
      ["aedes", { rates: [2_900, 3_300, 1_600], nodeMicros: [330, 340, 360] }],
    ]),
    ["sluice", "sluice-redis", "aedes"],
  );
  const find = (measure: string) => rows.find((r) => r.measure === measure);
  const redis = find("connects/s, over Redis / in memory");
  assert.equal(redis?.measured, 0.9); // rounds 0.9, 0.65, 1.0; the fourth has no pair
  assert.equal(redis?.met, true);
  assert.match(String(redis?.from), /rounds' ratios 0\.90, 0\.65, 1\.00;/);
  assert.match(
    String(redis?.from),
    /node µs\/connect 350 \/ 310 \(rounds' ratios 1\.10, 1\.29, 1\.09\)/,
  );
  const aedes = find("connects/s, in memory / bare aedes");
  assert.equal(aedes?.measured, 0.94); // 1.03, 0.94, 0.94
  assert.equal(aedes?.met, false);
});

test("threadCpuSeconds and readSyscalls read this process's /proc", () => {
  const coarse = cpuSeconds(process.pid);
  const fine = threadCpuSeconds(process.pid);
  assert.ok(coarse !== undefined && fine !== undefined && fine > 0);
  // the same CPU time, one in clock ticks, the other to the nanosecond
  assert.ok(Math.abs(fine - coarse) < 0.5, `${fine} vs ${coarse}`);
  assert.ok((readSyscalls(process.pid) ?? 0) > 0);
  assert.equal(threadCpuSeconds(2 ** 22 + 1), undefined);
});

test("ReadinessWatch counts a node's 503 answers and failures", async () => {
  // three answers 200, then 503 from the fourth on; the test ends after the sixth
  let requests = 0;
  let sixth: () => void = () => {};
  const sixthSeen = new Promise<void>((resolve) => {
    sixth = resolve;
  });
  const server = createServer((_, response) => {
    requests++;
    response.statusCode = requests <= 3 ? 200 : 503;
    response.end();
    if (requests === 6) sixth();
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  try {
    const { port } = server.address() as AddressInfo;
    const watch = ReadinessWatch.start(port, { intervalMs: 10, timeoutMs: 1_000, maxMs: 10_000 });
    await sixthSeen;
    const figures = await watch.stop();
    assert.ok(figures.polls >= 6, `polls: ${figures.polls}`);
    assert.equal(figures.notReady, figures.polls - 3);
    assert.equal(figures.failed, 0);
    assert.ok((figures.firstNotReadyMs ?? 0) >= 20);
  } finally {
    server.close();
  }
});

test("ReadinessWatch counts a node that does not answer in time as failed", async () => {
  const server = createServer(() => {
    // never answers: the watch's timeout must
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  try {
    const { port } = server.address() as AddressInfo;
    const watch = ReadinessWatch.start(port, { intervalMs: 10, timeoutMs: 50, maxMs: 200 });
    const figures = await watch.stop();
    assert.equal(figures.polls, 1);
    assert.equal(figures.failed, 1);
    assert.equal(figures.firstNotReadyMs, 0);
  } finally {
    server.closeAllConnections();
    server.close();
  }
});

test("--phases picks cluster-cost's phases, a load phase narrowed by QoS", () => {
  const plan = (argv: string[]) => {
    const { load, connects } = plannedPhases(parseCli(["cluster-cost", ...argv], {}).run);
    return { load: load.map((p) => `${p.kind}:${p.cases.map((c) => c.qos).join("+")}`), connects };
  };
  assert.deepEqual(plan([]), { load: ["rate:0+1", "full-speed:0+1"], connects: true });
  assert.deepEqual(plan(["--phases", "connects"]), { load: [], connects: true });
  assert.deepEqual(plan(["--phases", "rate:0, connects"]), { load: ["rate:0"], connects: true });
  assert.deepEqual(plan(["--phases", "full-speed,rate:1"]), {
    load: ["rate:1", "full-speed:0+1"],
    connects: false,
  });
  // --quick leaves QoS 0 out of the rate phase; naming it brings it back
  assert.deepEqual(plan(["--quick", "--phases", "rate"]), { load: ["rate:1"], connects: false });
  assert.deepEqual(plan(["--quick", "--phases", "rate:0"]), { load: ["rate:0"], connects: false });
});

test("--phases refuses unknown phases and QoS on a phase without cases by QoS, all at once", () => {
  const known = clusterCost.phases ?? [];
  assert.throws(
    () => parsePhases(["connect", "connects:1", "rate:3", "rate:0:1"], known),
    (error: Error) =>
      error.message.includes('unknown phase "connect"') &&
      error.message.includes('"connects:1": connects has no cases by QoS') &&
      error.message.includes('"rate:3"') &&
      error.message.includes('"rate:0:1"') &&
      error.message.includes("rate[:QoS], full-speed[:QoS], connects"),
  );
  assert.deepEqual(parsePhases([], known), []);
  assert.equal(runsPhase([], "connects"), true);
  assert.equal(runsPhase([{ phase: "rate" }], "connects"), false);
  assert.deepEqual(
    selectedLevels([{ phase: "rate" }, { phase: "rate", qos: 0 }], "rate", [0, 1]),
    [0, 1],
  );
});

test("connectCostCells divides the window's figures by the connects; empty where unmeasured", () => {
  const cells = connectCostCells(
    {
      nodeCpuSeconds: 0.5,
      nodeReadSyscalls: 3_000,
      nodeWriteSyscalls: 2_500,
      redisCpuSeconds: 0.05,
      redis: {
        commands: 3_000,
        byCommand: { evalsha: 2_000, ping: 10, publish: 990 },
        netInputBytes: 100_000,
        netOutputBytes: 20_000,
        readSyscalls: 150,
      },
    },
    2_000,
  );
  assert.deepEqual(cells, {
    "node µs/connect": 250,
    "node reads/connect": 1.5,
    "node writes/connect": 1.25,
    "Redis µs/connect": 25,
    "Redis cmds/connect": 1.5,
    "Redis reads/connect": 0.075,
    "Redis B in/connect": 50,
    "Redis B out/connect": 10,
    "Redis cmds/connect by name": "evalsha 1, publish 0.495, ping 0.005",
  });
  const memory = connectCostCells(
    {
      nodeCpuSeconds: 0.2,
      nodeReadSyscalls: null,
      nodeWriteSyscalls: null,
      redisCpuSeconds: null,
      redis: null,
    },
    1_000,
  );
  assert.equal(memory["node µs/connect"], 200);
  assert.equal(memory["Redis µs/connect"], null);
  assert.equal(memory["Redis cmds/connect by name"], null);
  assert.equal(connectCostCells(undefined, 0)["node µs/connect"], null);
});
