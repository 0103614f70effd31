import type { QoS } from "../generator/messages.js";
import { medianOf } from "../report/median.js";
import type { MeasuredCase } from "./cost-goals.js";
import type { CostFigures } from "./cost-probe.js";
import type { ResultRow, ScenarioTable, TableCell } from "./scenario.js";

/** Two brokers whose full-speed delivered msg/s the scaling table divides, round by round. */
interface Comparison {
  what: string;
  numerator: string;
  denominator: string;
}

const COMPARISONS: readonly Comparison[] = [
  {
    what: "two Sluice nodes / one over Redis",
    numerator: "sluice-cluster-2",
    denominator: "sluice-redis",
  },
  {
    what: "two bare aedes nodes / one over Redis",
    numerator: "aedes-cluster-2",
    denominator: "aedes-redis",
  },
  { what: "Sluice over Redis / in memory", numerator: "sluice-redis", denominator: "sluice" },
];

const fixed = (value: number, digits: number): string => value.toFixed(digits);

/**
 * Each node's CPU over the window in cores, then the share of CFS periods its cgroup was
 * throttled in (where it has a quota) and the share of the window its main thread was runnable
 * but not running, then the shares of the window a Sluice node held its publishers (cluster
 * backpressure) and did not read its Redis subscription, where not 0:
 * "A 0.40 (thr 96 %, wait 70 %, held 12 %), B 0.31 (thr 8 %, wait 40 %, paused 30 %)".
 */
export function nodeCpuText(figures: CostFigures): string | null {
  const nodes = figures.processes.filter((p) => p.name.startsWith("node"));
  const window = figures.windowSeconds;
  if (nodes.length === 0 || window === null || window <= 0) return null;
  return nodes
    .map((node) => {
      const label = node.name === "node" ? "" : `${node.name.slice(5)} `;
      const cores = node.cpuSeconds === null ? "?" : fixed(node.cpuSeconds / window, 2);
      const throttle = node.throttle;
      const throttled =
        node.quotaCores === undefined
          ? []
          : [
              throttle && throttle.periods > 0
                ? `thr ${Math.round((100 * throttle.throttled) / throttle.periods)} %`
                : "thr ? %",
            ];
      const waited =
        node.runQueueSeconds === null || node.runQueueSeconds === undefined
          ? []
          : [`wait ${Math.round((100 * node.runQueueSeconds) / window)} %`];
      const held = node.held;
      const share = (seconds: number) => Math.round((100 * seconds) / (held?.overSeconds ?? 1));
      const backpressure = [
        ...(held && share(held.publishersSeconds) > 0
          ? [`held ${share(held.publishersSeconds)} %`]
          : []),
        ...(held && share(held.subscriptionSeconds) > 0
          ? [`paused ${share(held.subscriptionSeconds)} %`]
          : []),
      ];
      const details = [...throttled, ...waited, ...backpressure];
      return `${label}${cores}${details.length > 0 ? ` (${details.join(", ")})` : ""}`;
    })
    .join(", ");
}

/** A node throttled in at least this share of the window's CFS periods was held by its quota. */
const AT_QUOTA_SHARE = 0.8;

/**
 * Which nodes were at their quota over the window ("A", "A, B", "node"), "none" when no node
 * was (the limit was elsewhere: a window, the generators, the machine); null without quotas.
 */
export function nodesAtQuota(figures: CostFigures): string | null {
  const nodes = figures.processes.filter((p) => p.name.startsWith("node") && p.quotaCores);
  if (nodes.length === 0) return null;
  const held = nodes.filter(
    (n) =>
      n.throttle &&
      n.throttle.periods > 0 &&
      n.throttle.throttled / n.throttle.periods >= AT_QUOTA_SHARE,
  );
  if (held.length === 0) return "none";
  return held.map((n) => (n.name === "node" ? "node" : n.name.slice(5))).join(", ");
}

/** Redis' CPU over the window in percent of one core, and its run-queue wait: "3 (wait 1)". */
export function redisCpuText(figures: CostFigures): string | null {
  const redis = figures.processes.find((p) => p.name === "redis");
  const window = figures.windowSeconds;
  if (!redis || redis.cpuSeconds === null || window === null || window <= 0) return null;
  const cpu = Math.round((100 * redis.cpuSeconds) / window);
  return redis.runQueueSeconds === null || redis.runQueueSeconds === undefined
    ? String(cpu)
    : `${cpu} (wait ${Math.round((100 * redis.runQueueSeconds) / window)})`;
}

/** The generator processes' CPU, percent of one core each: "pub 41 / sub 63+58". */
export function generatorCpuText(row: ResultRow): string {
  const list = (values: readonly number[]): string =>
    values.map((v) => String(Math.round(v))).join("+");
  return `pub ${list(row.generatorCpu.publishers)} / sub ${list(row.generatorCpu.subscribers)}${row.generatorCpu.saturated ? " (saturated)" : ""}`;
}

const SIDES = ["numerator", "denominator"] as const;

/**
 * Full-speed delivered msg/s of two brokers divided round by round (round r of each ran back
 * to back), then the median of those ratios, with what each side's processes used in that round
 * (nodes' CPU against their quota, generators, Redis): a ratio only means what it says when the
 * nodes, not the generators or Redis, were the limit.
 */
export function scalingTable(
  chosen: readonly MeasuredCase[],
  quotaCores: number | undefined,
): ScenarioTable | undefined {
  const rows: Array<Record<string, TableCell>> = [];
  const full = chosen.filter((c) => c.key.kind === "full-speed");
  for (const comparison of COMPARISONS)
    for (const qos of [0, 1, 2] as const) {
      const find = (broker: string): MeasuredCase | undefined =>
        full.find((c) => c.key.broker === broker && c.key.qos === qos);
      const top = find(comparison.numerator);
      const bottom = find(comparison.denominator);
      if (!top || !bottom) continue;
      rows.push(...comparisonRows(comparison, qos, top, bottom));
    }
  if (rows.length === 0) return undefined;
  return {
    title: `cluster-cost: scaling at full speed, round by round${quotaCores === undefined ? " (no --node-cpu: the nodes share the machine's cores with Redis and the generators)" : `, each node limited to ${quotaCores} core (--node-cpu)`}`,
    columns: [
      "compare",
      "QoS",
      "round",
      "msg/s",
      "baseline msg/s",
      "ratio",
      "at quota",
      "baseline at quota",
      "nodes CPU cores (throttled)",
      "baseline nodes CPU cores (throttled)",
      "generators CPU %",
      "baseline generators CPU %",
      "Redis CPU % (wait)",
      "baseline Redis CPU % (wait)",
    ],
    rows,
    notes: [
      "msg/s = delivered msg/s of the first broker named in compare, baseline = of the second; round r of both ran back to back (the broker order rotates each round); the median row is the median of the rounds' ratios",
      "nodes CPU cores = each node's CPU over the measurement window / the window (A takes the publishers, B the subscribers); thr = share of the window's CFS periods in which its cgroup used up its quota (cpu.stat nr_throttled / nr_periods); wait = time its main thread was runnable but not running (schedstat) / the window, which counts the time its quota held it back as well as waits for a CPU: a node at its quota and throttled in most periods was the limit; one under its quota, seldom throttled, that waited long was short of the machine's CPU; held = time a Sluice node held its publishers (cluster backpressure: sluice_cluster_backpressure_seconds_total), paused = time it did not read its Redis subscription (sluice_cluster_subscription_paused_seconds_total), both counted as each episode ends, / the time between the node's /metrics read 0.3 s before the window and at its end",
      "generators and Redis CPU % = percent of one core over the same window (Redis' run-queue wait in brackets); they run outside any quota, so they are not the limit while well under 100 % and not waiting for a CPU",
      `at quota = the nodes throttled in at least ${AT_QUOTA_SHARE * 100} % of the window's CFS periods (the limit); none: no node was, so the limit was elsewhere (a window, the generators, Redis, the machine) and the ratio is not one of CPU`,
      "the median row: the median of the rounds' ratios (the upper middle of an even count)",
    ],
  };
}

function comparisonRows(
  comparison: Comparison,
  qos: QoS,
  top: MeasuredCase,
  bottom: MeasuredCase,
): Array<Record<string, TableCell>> {
  const rows: Array<Record<string, TableCell>> = [];
  const ratios: number[] = [];
  const rounds = Math.max(top.rounds.length, bottom.rounds.length);
  const compare = `${comparison.what} (${comparison.numerator} / ${comparison.denominator})`;
  for (let i = 0; i < rounds; i++) {
    const sides = { numerator: top.rounds[i], denominator: bottom.rounds[i] };
    const rate = (side: (typeof SIDES)[number]): number | null => {
      const round = sides[side];
      return round && round.row.error === undefined ? round.row.messagesPerSecond : null;
    };
    const a = rate("numerator");
    const b = rate("denominator");
    const ratio = a !== null && b !== null && b > 0 ? a / b : null;
    if (ratio !== null) ratios.push(ratio);
    const cells = (side: (typeof SIDES)[number]) => {
      const round = sides[side];
      return round
        ? {
            nodes: nodeCpuText(round.figures),
            atQuota: nodesAtQuota(round.figures),
            generators: generatorCpuText(round.row),
            redis: redisCpuText(round.figures),
          }
        : { nodes: null, atQuota: null, generators: null, redis: null };
    };
    const mine = cells("numerator");
    const theirs = cells("denominator");
    rows.push({
      compare,
      QoS: qos,
      round: i + 1,
      "msg/s": a === null ? null : Math.round(a),
      "baseline msg/s": b === null ? null : Math.round(b),
      ratio: ratio === null ? null : Number(ratio.toFixed(2)),
      "at quota": mine.atQuota,
      "baseline at quota": theirs.atQuota,
      "nodes CPU cores (throttled)": mine.nodes,
      "baseline nodes CPU cores (throttled)": theirs.nodes,
      "generators CPU %": mine.generators,
      "baseline generators CPU %": theirs.generators,
      "Redis CPU % (wait)": mine.redis,
      "baseline Redis CPU % (wait)": theirs.redis,
    });
  }
  rows.push({
    compare,
    QoS: qos,
    round: "median",
    ratio: ratios.length === 0 ? null : Number(medianOf(ratios).toFixed(2)),
  });
  return rows;
}
