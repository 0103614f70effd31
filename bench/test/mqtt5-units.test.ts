import assert from "node:assert/strict";
import { test } from "node:test";
import { resultTable } from "../src/report/markdown-table.js";
import { ratio } from "../src/report/ratios.js";
import type { LoadCase } from "../src/scenarios/measure-brokers.js";
import { measuredTogether, pairedCaseOrder } from "../src/scenarios/mqtt5.js";
import { protocolGoalRows } from "../src/scenarios/mqtt5-goals.js";
import { findScenario } from "../src/scenarios/registry.js";
import type { ResultRow } from "../src/scenarios/scenario.js";

type Round = { messagesPerSecond: number; p99Ms: number };

function row(
  broker: string,
  protocolVersion: 4 | 5 | undefined,
  targetRate: number | null,
  rounds: Round[],
): ResultRow {
  const median = rounds[0] ?? { messagesPerSecond: 0, p99Ms: 0 };
  return {
    scenario: "mqtt5",
    broker,
    qos: 1,
    payloadBytes: 64,
    ...(protocolVersion === undefined ? {} : { protocolVersion }),
    pattern: "pairwise",
    publishers: 10,
    subscribers: 10,
    targetRate,
    inflightWindow: 100,
    endToEndWindow: 500,
    messagesPerSecond: median.messagesPerSecond,
    publishedPerSecond: median.messagesPerSecond,
    published: 1,
    p50Ms: 1,
    p99Ms: median.p99Ms,
    p999Ms: median.p99Ms,
    maxMs: median.p99Ms,
    latencySamples: 1,
    lost: 0,
    duplicates: 0,
    unacknowledged: 0,
    generatorProcesses: { publishers: 1, subscribers: 1 },
    generatorCpu: { publishers: [50], subscribers: [50], saturated: false },
    brokerCpuPercent: 50,
    redisCpuPercent: null,
    crossChecks: [],
    rounds: rounds.map((r) => ({ ...r, p50Ms: 1, lost: 0, duplicates: 0 })),
  };
}

test("mqtt5 - pairs swap which level runs first every other round", () => {
  assert.deepEqual(pairedCaseOrder(4, 0), [0, 1, 2, 3]);
  assert.deepEqual(pairedCaseOrder(4, 1), [1, 0, 3, 2]);
  assert.deepEqual(pairedCaseOrder(4, 2), [0, 1, 2, 3]);
});

test("mqtt5 - goal rows divide MQTT 5 by 3.1.1 per broker and case, and judge only Sluice", () => {
  const rows = [
    row("sluice", 4, null, [
      { messagesPerSecond: 40_000, p99Ms: 9 },
      { messagesPerSecond: 50_000, p99Ms: 9 },
    ]),
    row("sluice", 5, null, [
      { messagesPerSecond: 34_000, p99Ms: 9 },
      { messagesPerSecond: 50_000, p99Ms: 9 },
    ]),
    row("sluice", 4, 2_500, [{ messagesPerSecond: 2_500, p99Ms: 2 }]),
    row("sluice", 5, 2_500, [{ messagesPerSecond: 2_500, p99Ms: 2.2 }]),
    row("mosquitto", 4, null, [{ messagesPerSecond: 40_000, p99Ms: 9 }]),
    row("mosquitto", 5, null, [{ messagesPerSecond: 20_000, p99Ms: 9 }]),
  ];
  const goals = protocolGoalRows(rows, new Set(["mosquitto"]));
  assert.deepEqual(
    goals.map((g) => [g.broker, g.measure, g["v5 / v3.1.1"], g.goal, g.met, g["per round"]]),
    [
      ["sluice", "throughput, QoS 1", 0.85, "≥ 0.9x", false, "0.85 / 1.00"],
      ["sluice", "p99 at 5,000 msg/s, QoS 1", 1.1, "≤ 1.2x", true, "1.10"],
      ["mosquitto", "throughput, QoS 1", 0.5, "(reference)", null, "0.50"],
    ],
  );
});

test("mqtt5 - full speed: the median of the rounds' paired ratios, not a ratio of two rows' figures", () => {
  // The rows' own figures (the first round here) give 0.75: one round the machine slowed.
  const rows = [
    row("sluice", 4, null, [
      { messagesPerSecond: 40_000, p99Ms: 1 },
      { messagesPerSecond: 50_000, p99Ms: 1 },
      { messagesPerSecond: 60_000, p99Ms: 1 },
    ]),
    row("sluice", 5, null, [
      { messagesPerSecond: 30_000, p99Ms: 1 },
      { messagesPerSecond: 49_000, p99Ms: 1 },
      { messagesPerSecond: 59_000, p99Ms: 1 },
    ]),
  ];
  const [goal] = protocolGoalRows(rows, new Set());
  assert.equal(goal?.["v5 / v3.1.1"], 0.98);
  assert.equal(goal?.met, true);
});

test("mqtt5 - a case measured at one level only has no goal row", () => {
  const rows = [row("sluice", 4, null, [{ messagesPerSecond: 1, p99Ms: 1 }])];
  assert.deepEqual(protocolGoalRows(rows, new Set()), []);
});

test("mqtt5 - broker CPU per delivered message sits beside each ratio", () => {
  const rows = [
    row("sluice", 4, null, [{ messagesPerSecond: 50_000, p99Ms: 1 }]),
    row("sluice", 5, null, [{ messagesPerSecond: 40_000, p99Ms: 1 }]),
  ];
  const [goal] = protocolGoalRows(rows, new Set());
  assert.equal(goal?.["broker µs/msg (3.1.1 / 5)"], "10.0 / 12.5");
});

test("mqtt5 - fixed-rate levels share one window: the broker's CPU over both levels' messages", () => {
  const rows = [
    row("sluice", 4, 2_500, [{ messagesPerSecond: 2_500, p99Ms: 1 }]),
    row("sluice", 5, 2_500, [{ messagesPerSecond: 2_500, p99Ms: 1 }]),
  ];
  const [goal] = protocolGoalRows(rows, new Set());
  assert.equal(goal?.measure, "p99 at 5,000 msg/s, QoS 1");
  assert.equal(goal?.["broker µs/msg (3.1.1 / 5)"], "100 (both)");
});

test("mqtt5 - at the fixed rate the ratio is the median of the rounds' own ratios", () => {
  const rounds = (p99s: number[]): Round[] =>
    p99s.map((p99Ms) => ({ messagesPerSecond: 1, p99Ms }));
  // as rows carry them: each level's median round first, every round's figures after
  const v3 = row("sluice", 4, 2_500, rounds([20, 20, 2]));
  const v5 = row("sluice", 5, 2_500, rounds([6, 22, 2.2]));
  const [goal] = protocolGoalRows(
    [
      { ...v3, p99Ms: 20 },
      { ...v5, p99Ms: 6 },
    ],
    new Set(),
  );
  assert.equal(goal?.["per round"], "0.30 / 1.10 / 1.10");
  assert.equal(goal?.["v5 / v3.1.1"], 1.1);
  assert.equal(goal?.met, true);
});

test("mqtt5 - only fixed-rate cases run together, each with its other level", () => {
  const fullSpeed = { ratePerSecond: undefined } as unknown as LoadCase;
  const fixedRate = { ratePerSecond: 2_500 } as unknown as LoadCase;
  const cases = [fullSpeed, fullSpeed, fixedRate, fixedRate];
  assert.deepEqual(
    cases.map((_, i) => measuredTogether(cases, i)),
    [undefined, undefined, 3, 2],
  );
});

test("mqtt5 - tables show the level only where rows carry one, and ratios stay within a level", () => {
  const plain = resultTable([row("sluice", undefined, null, [])]);
  assert.match(plain, /^\| broker \| QoS \| payload \| msg\/s \|/);
  const v3 = row("mosquitto", 4, null, [{ messagesPerSecond: 10, p99Ms: 1 }]);
  const v5 = row("mosquitto", 5, null, [{ messagesPerSecond: 20, p99Ms: 1 }]);
  const sluiceV5 = row("sluice", 5, null, [{ messagesPerSecond: 10, p99Ms: 1 }]);
  const rows = [v3, v5, sluiceV5];
  const table = resultTable(rows);
  assert.match(table, /^\| broker \| QoS \| payload \| MQTT \| msg\/s \|/);
  assert.match(table, /\n\| --- \| --- \| --- \| --- \| ---: \|/);
  assert.match(table, /\| sluice \| 1 \| 64 B \| 5 \| 10 \| 0.50x \|/);
  assert.equal(
    ratio(rows, sluiceV5, "mosquitto", (r) => r.messagesPerSecond),
    0.5,
  );
});

test("mqtt5 - registered, outside the default set", () => {
  assert.equal(findScenario("mqtt5").inDefaultSet, false);
});
