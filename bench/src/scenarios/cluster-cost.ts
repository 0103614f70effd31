import type { BrokerDefinition } from "../brokers/broker.js";
import { findBroker } from "../brokers/catalog.js";
import type { QoS } from "../generator/messages.js";
import { medianOf } from "../report/median.js";
import { CONNECT_COST_COLUMNS } from "./connect-cost.js";
import { cappedConnections } from "./connection-limits.js";
import { CONNECT_COST_NOTE, measureConnections } from "./connections.js";
import {
  type ConnectRounds,
  type CostKey,
  type CostLookup,
  costGoals,
  type MeasuredCase,
} from "./cost-goals.js";
import {
  type CostFigures,
  CostProbe,
  cpuMicrosPerMessage,
  perMessage,
  readinessSummary,
} from "./cost-probe.js";
import { LATENCY_RATE } from "./latency.js";
import { type LoadCase, measureBrokers, medianRound } from "./measure-brokers.js";
import { type PhaseName, parsePhases, runsPhase, selectedLevels } from "./phase-selection.js";
import { deliveryCells, microsCell, round1, round3, unmeasuredRow } from "./row-cells.js";
import { generatorCpuText, nodeCpuText, redisCpuText, scalingTable } from "./scaling-table.js";
import type {
  ResultRow,
  RunOptions,
  Scenario,
  ScenarioContext,
  ScenarioOutput,
  ScenarioTable,
  TableCell,
} from "./scenario.js";
import { FULL_SPEED_WINDOW, REFERENCE_SHAPE } from "./throughput.js";

/** The brokers: Sluice in memory, over Redis, two nodes; stock aedes with the same plugins. */
const DEFAULT_BROKERS = [
  "sluice",
  "sluice-redis",
  "sluice-cluster-2",
  "aedes-redis",
  "aedes-cluster-2",
] as const;
/** Another build's nodes (SLUICE_BASELINE_CLI), for a before/after in the same run. */
const BASELINE_BROKERS = [
  "sluice-baseline",
  "sluice-redis-baseline",
  "sluice-cluster-2-baseline",
] as const;
/** A window that never throttles the fixed rate: it only bounds a stalled broker. */
const RATE_WINDOW = 1_000;
/**
 * Full speed with no end-to-end window: what each publisher sends at most (the burst
 * was 300,000 messages in all). The end-to-end window is set to the same, so it never binds.
 */
const BURST_MESSAGES_PER_PUBLISHER = { full: 40_000, quick: 10_000 };
/**
 * A broker that buffered a burst may take this long to deliver it once the publishers stop,
 * and may pause (a long GC, a loaded machine) this long without counting what it still holds
 * as lost.
 */
const BURST_SETTLE = { maxMs: 30_000, quietMs: 3_000 };
/** Clients of the connects/s figure (the issue's: 5,000, 100 pending at a time). */
const CONNECT_CLIENTS = { full: 5_000, quick: 200 };

/** What `--phases` picks from: the two load phases (by QoS) and the connects/s measurement. */
const PHASES: readonly PhaseName[] = [
  { name: "rate", byQos: true },
  { name: "full-speed", byQos: true },
  { name: "connects", byQos: false },
];

export interface Phase {
  kind: CostKey["kind"];
  cases: LoadCase[];
  medianBy: "messagesPerSecond" | "p99Ms";
}

/**
 * The load phases this run measures (each with its cases by QoS) and whether it measures
 * connects/s: all of them, or those `--phases` names.
 */
export function plannedPhases(options: RunOptions): { load: Phase[]; connects: boolean } {
  const common = {
    ...REFERENCE_SHAPE,
    payloadBytes: 64,
    warmupMs: options.warmupMs,
    measureMs: options.measureMs,
    publisherProcesses: options.publisherProcesses,
    subscriberProcesses: options.subscriberProcesses,
  };
  const cap = options.quick
    ? BURST_MESSAGES_PER_PUBLISHER.quick
    : BURST_MESSAGES_PER_PUBLISHER.full;
  const rateCase = (qos: QoS): LoadCase => ({
    ...common,
    qos,
    ratePerSecond: LATENCY_RATE,
    inflightWindow: RATE_WINDOW,
    endToEndWindow: RATE_WINDOW,
  });
  const burstCase = (qos: QoS): LoadCase => ({
    ...common,
    qos,
    inflightWindow: FULL_SPEED_WINDOW,
    endToEndWindow: cap,
    maxMessagesPerPublisher: cap,
    settle: BURST_SETTLE,
  });
  // --quick: the case of each phase the goals lean on most
  const rateQos: QoS[] = options.quick ? [1] : [0, 1];
  const burstQos: QoS[] = options.quick ? [0] : [0, 1];
  const picks = parsePhases(options.phases ?? [], PHASES);
  const all: Phase[] = [
    {
      kind: "rate",
      cases: selectedLevels(picks, "rate", rateQos).map(rateCase),
      medianBy: "p99Ms",
    },
    {
      kind: "full-speed",
      cases: selectedLevels(picks, "full-speed", burstQos).map(burstCase),
      medianBy: "messagesPerSecond",
    },
  ];
  return {
    load: all.filter((phase) => phase.cases.length > 0),
    connects: runsPhase(picks, "connects"),
  };
}

function chosenBrokers(context: ScenarioContext): BrokerDefinition[] {
  if (context.options.brokers.length > 0) return [...context.options.brokers];
  const names: string[] = context.options.quick
    ? ["sluice", "sluice-redis"]
    : [...DEFAULT_BROKERS, ...(process.env.SLUICE_BASELINE_CLI ? BASELINE_BROKERS : [])];
  return names.map(findBroker);
}

interface Measured {
  broker: string;
  caseIndex: number;
  row: ResultRow;
  figures: CostFigures;
}

/** One phase's cases on every broker (fresh ones), with a cost probe on each measurement. */
async function measurePhase(
  context: ScenarioContext,
  brokers: readonly BrokerDefinition[],
  phase: Phase,
): Promise<{ rows: ResultRow[]; chosen: MeasuredCase[] }> {
  const measured: Measured[] = [];
  const rows = await measureBrokers(context, brokers, {
    scenario: "cluster-cost",
    cases: phase.cases,
    medianBy: phase.medianBy,
    probe: ({ broker, loadCase, caseIndex }) =>
      new CostProbe(
        broker,
        loadCase,
        (row, figures) => measured.push({ broker: broker.name, caseIndex, row, figures }),
        context.nodeCpu,
      ),
  });
  const chosen: MeasuredCase[] = [];
  for (const definition of brokers)
    for (const [caseIndex, loadCase] of phase.cases.entries()) {
      const rounds = measured.filter(
        (m) => m.broker === definition.name && m.caseIndex === caseIndex,
      );
      const median = medianRound(
        rounds.map((m) => m.row),
        phase.medianBy,
      );
      const pick = rounds.find((m) => m.row === median);
      chosen.push({
        key: { broker: definition.name, kind: phase.kind, qos: loadCase.qos },
        loadCase,
        ...(pick ? { row: pick.row, figures: pick.figures } : {}),
        rounds: rounds.map((m) => ({ row: m.row, figures: m.figures })),
      });
    }
  return { rows, chosen };
}

/** The lookup the goal table reads: figures of a broker's median round in a case. */
function lookupOf(chosen: readonly MeasuredCase[]): CostLookup {
  return (key) =>
    chosen.find(
      (c) => c.key.broker === key.broker && c.key.kind === key.kind && c.key.qos === key.qos,
    );
}

function costRow(measured: MeasuredCase): Record<string, TableCell> {
  const { row, figures } = measured;
  const base = { broker: measured.key.broker, QoS: measured.loadCase.qos };
  if (!row || !figures) return unmeasuredRow(base, measured.rounds);
  const micros = (prefix: string): number | null => microsCell(row, figures, prefix);
  const twoNodes = figures.processes.some((p) => p.name === "node B");
  const redis = figures.redis;
  const readiness = readinessSummary(figures.readiness);
  const byCommand = redis
    ? Object.entries(redis.byCommand)
        .map(([name, calls]): [string, number] => [name, perMessage(calls, row, figures) ?? 0])
        .filter(([, calls]) => calls >= 0.001)
        .sort((a, b) => b[1] - a[1])
        .slice(0, 4)
        .map(([name, calls]) => `${name} ${round3(calls)}`)
        .join(", ")
    : "";
  const perMessageOrNull = (value: number | null | undefined, digits: (n: number) => number) => {
    const result = perMessage(value, row, figures);
    return result === null ? null : digits(result);
  };
  return {
    ...base,
    ...deliveryCells(row),
    "nodes µs/msg": micros("node"),
    "node A µs/msg": twoNodes ? micros("node A") : null,
    "node B µs/msg": twoNodes ? micros("node B") : null,
    "nodes CPU cores (throttled)": nodeCpuText(figures),
    "generators CPU %": generatorCpuText(row),
    "Redis CPU % (wait)": redisCpuText(figures),
    "Redis µs/msg": redis ? micros("redis") : null,
    "Redis cmds/msg": redis ? perMessageOrNull(redis.commands, round3) : null,
    "Redis reads/msg": redis ? perMessageOrNull(redis.readSyscalls, round3) : null,
    "Redis B in/msg": redis ? perMessageOrNull(redis.netInputBytes, round1) : null,
    "Redis B out/msg": redis ? perMessageOrNull(redis.netOutputBytes, round1) : null,
    "ready throughout": readiness.ready,
    "not-ready polls": readiness.text,
    "Redis output-buffer cuts": figures.redisOutputBufferCuts,
    "node subscription resets": figures.nodeSubscriptionResets,
    "node drops": figures.nodeDroppedMessages
      ? Object.values(figures.nodeDroppedMessages).reduce((n, c) => n + c, 0)
      : null,
    "each round nodes µs/msg": measured.rounds
      .map((r) => cpuMicrosPerMessage(r.row, r.figures, "node"))
      .map((v) => (v === null ? "?" : v.toFixed(1)))
      .join(", "),
    "Redis cmds/msg by name": byCommand,
    "machine CPU pressure %":
      figures.cpuPressurePercent === null ? null : round1(figures.cpuPressurePercent),
    error: [row.error, figures.probeError].filter((e) => e !== undefined).join("; "),
  };
}

const COST_COLUMNS = [
  "broker",
  "QoS",
  "published",
  "published msg/s",
  "delivered msg/s",
  "p99 ms",
  "lost",
  "nodes µs/msg",
  "node A µs/msg",
  "node B µs/msg",
  "nodes CPU cores (throttled)",
  "generators CPU %",
  "Redis CPU % (wait)",
  "Redis µs/msg",
  "Redis cmds/msg",
  "Redis reads/msg",
  "Redis B in/msg",
  "Redis B out/msg",
  "ready throughout",
  "not-ready polls",
  "Redis output-buffer cuts",
  "node subscription resets",
  "node drops",
  "each round nodes µs/msg",
  "Redis cmds/msg by name",
  "machine CPU pressure %",
  "error",
];

/** connects/s of each broker, median of the rounds (the connections scenario's measurement). */
async function measureConnects(
  context: ScenarioContext,
  brokers: readonly BrokerDefinition[],
): Promise<{ table: ScenarioTable; rounds: Map<string, ConnectRounds> }> {
  const { options } = context;
  const { count, note } = cappedConnections(
    options.clients ?? (options.quick ? CONNECT_CLIENTS.quick : CONNECT_CLIENTS.full),
  );
  const results = new Map<string, Array<Record<string, TableCell>>>();
  for (let round = 0; round < options.rounds; round++)
    for (let k = 0; k < brokers.length; k++) {
      const definition = brokers[(k + round) % brokers.length];
      if (!definition) continue;
      const result = await measureConnections(context, definition, count);
      results.set(definition.name, [...(results.get(definition.name) ?? []), result]);
    }
  const byRound = new Map<string, ConnectRounds>();
  const rows = brokers.map((definition) => {
    const rounds = results.get(definition.name) ?? [];
    byRound.set(definition.name, {
      rates: rounds.map((r) => (r.error ? null : Number(r["connects/s"]))),
      nodeMicros: rounds.map((r) => {
        const micros = r["node µs/connect"];
        return r.error || typeof micros !== "number" ? null : micros;
      }),
    });
    const ok = rounds.filter((r) => !r.error);
    const rates = ok.map((r) => Number(r["connects/s"]));
    // CPU per connect from the round in the middle by the node's CPU, its other figures beside it
    const cpu = ok.map((r) => r["node µs/connect"]).filter((v) => typeof v === "number");
    const middle = ok.find((r) => cpu.length > 0 && r["node µs/connect"] === medianOf(cpu));
    const costCells = Object.fromEntries(CONNECT_COST_COLUMNS.map((c) => [c, middle?.[c] ?? null]));
    return {
      broker: definition.name,
      connections: count,
      "connects/s": rates.length > 0 ? medianOf(rates) : null,
      "each round connects/s": rates.map((r) => r.toLocaleString("en-US")).join(", "),
      ...costCells,
      "each round node µs/connect": cpu.join(", "),
      "CONNACK 3": rounds.reduce((n, r) => n + Number(r["CONNACK 3"] ?? 0), 0),
      error: rounds
        .map((r) => r.error)
        .filter((e) => typeof e === "string" && e !== "")
        .join("; "),
    };
  });
  return {
    rounds: byRound,
    table: {
      title: `cluster-cost: connects/s, ${count.toLocaleString("en-US")} idle clients`,
      columns: [
        "broker",
        "connections",
        "connects/s",
        "each round connects/s",
        ...CONNECT_COST_COLUMNS,
        "each round node µs/connect",
        "CONNACK 3",
        "error",
      ],
      rows,
      notes: [
        note,
        "the connections scenario's measurement: a fresh broker per round, raw-socket clients (clean session, keep-alive 0), 100 CONNECTs awaiting CONNACK per generator process, all to the first node; the median of the rounds (the upper middle of an even count)",
        `${CONNECT_COST_NOTE}; from the round with the median node µs/connect`,
      ],
    },
  };
}

export const clusterCost: Scenario = {
  name: "cluster-cost",
  description: `CPU µs per delivered message of every node and of Redis, Redis commands, reads and bytes per message, at ${LATENCY_RATE.toLocaleString("en-US")} msg/s and at full speed with no end-to-end window (readiness, cut subscriptions), connects/s; Sluice in memory, over Redis, two nodes, and stock aedes with the same Redis plugins`,
  inDefaultSet: false,
  phases: PHASES,
  nodeCpu: true,
  async run(context): Promise<ScenarioOutput> {
    const brokers = chosenBrokers(context);
    const rows: ResultRow[] = [];
    const chosen: MeasuredCase[] = [];
    const tables: ScenarioTable[] = [];
    const cap = context.options.quick
      ? BURST_MESSAGES_PER_PUBLISHER.quick
      : BURST_MESSAGES_PER_PUBLISHER.full;
    const planned = plannedPhases(context.options);
    const allPhases = planned.load;
    for (const phase of allPhases) {
      context.log(`[cluster-cost] ${phase.kind} phase, brokers started afresh`);
      const result = await measurePhase(context, brokers, phase);
      rows.push(...result.rows);
      chosen.push(...result.chosen);
    }
    const connects = planned.connects ? await measureConnects(context, brokers) : undefined;
    const measuredBrokers = brokers.map((b) => b.name);
    const goals = costGoals(lookupOf(chosen), connects?.rounds ?? new Map(), measuredBrokers);
    const seconds = context.options.measureMs / 1000;
    const ran = (kind: CostKey["kind"]) => allPhases.some((p) => p.kind === kind);
    tables.push({
      title: "cluster-cost: the issue's goals (ratios within this run)",
      columns: ["measure", "case", "goal", "measured", "met", "from"],
      rows: goals,
      notes: [
        "each figure is the median round of its case (fixed rate: by p99, full speed: by delivered msg/s); a ratio divides two figures of the same run, so machine noise that hits both cancels",
        "connects/s: the median of the rounds' ratios (each round measures every broker once, one after the other), node CPU per connect beside it",
        "met is empty where a figure is missing (a broker not measured or a failed case)",
        ...(context.options.phases
          ? [`only the phases --phases named: ${context.options.phases.join(", ")}`]
          : []),
      ],
    });
    if (ran("rate"))
      tables.push({
        title: `cluster-cost: ${LATENCY_RATE.toLocaleString("en-US")} msg/s, 64 B, 10 publishers -> 10 subscribers`,
        columns: COST_COLUMNS,
        rows: chosen.filter((c) => c.key.kind === "rate").map(costRow),
        notes: costNotes(seconds, context.nodeCpu?.cores),
      });
    if (ran("full-speed"))
      tables.push({
        title: `cluster-cost: full speed, no end-to-end window (at most ${cap.toLocaleString("en-US")} messages per publisher), 64 B, 10 -> 10`,
        columns: COST_COLUMNS,
        rows: chosen.filter((c) => c.key.kind === "full-speed").map(costRow),
        notes: [
          `publishers send as fast as their sockets take it (QoS 0: at most ${FULL_SPEED_WINDOW} unflushed writes each; QoS 1: ${FULL_SPEED_WINDOW} unacknowledged), whatever their subscribers have received: the broker must pace them itself or buffer; each stops after ${cap.toLocaleString("en-US")} messages or at the end of the window`,
          `lost = messages of the whole run a subscriber never got, counted after up to ${BURST_SETTLE.maxMs / 1000} s for a backlog to arrive (less once nothing arrives for ${BURST_SETTLE.quietMs / 1000} s)`,
          "per message = per message delivered in the window: a broker that takes messages in faster than it delivers them shows its intake's cost too (compare published msg/s with delivered msg/s)",
          ...costNotes(seconds, context.nodeCpu?.cores),
        ],
      });
    if (connects) tables.push(connects.table);
    // last, so the tables before it keep their places for those who read them by position
    const scaling = ran("full-speed") ? scalingTable(chosen, context.nodeCpu?.cores) : undefined;
    if (scaling) tables.push(scaling);
    return {
      rows,
      tables,
      config: {
        brokers: measuredBrokers,
        shape: REFERENCE_SHAPE,
        payloadBytes: 64,
        ratePerSecond: LATENCY_RATE,
        rateWindow: RATE_WINDOW,
        fullSpeedInflightWindow: FULL_SPEED_WINDOW,
        burstMessagesPerPublisher: cap,
        burstSettle: BURST_SETTLE,
        phases: allPhases.map((p) => ({
          kind: p.kind,
          cases: p.cases.map((c) => ({ qos: c.qos })),
        })),
        warmupMs: context.options.warmupMs,
        measureMs: context.options.measureMs,
        rounds: context.options.rounds,
        ...(context.nodeCpu ? { nodeCpu: context.nodeCpu.describe() } : {}),
        measurements: chosen.map((c) => ({
          ...c.key,
          rounds: c.rounds.map((r) => ({
            messagesPerSecond: r.row.messagesPerSecond,
            p99Ms: r.row.p99Ms,
            lost: r.row.lost,
            ...r.figures,
          })),
        })),
      },
    };
  },
};

function costNotes(seconds: number, quotaCores: number | undefined): string[] {
  return [
    ...(quotaCores === undefined
      ? []
      : [
          `--node-cpu ${quotaCores}: every broker node process ran in a cgroup of its own with a CFS quota of ${quotaCores} core (${Math.round(quotaCores * 100_000)} µs per 100 ms); Redis and the generators ran outside any quota. nodes CPU cores (throttled) = each node's CPU over the window / the window, with the share of CFS periods its cgroup was throttled in, and (where not 0) the share of the window a Sluice node held its publishers (held) or did not read its Redis subscription (paused)`,
        ]),
    `µs/msg = CPU time of the process over the ${seconds} s measurement window (each thread's on-CPU time, /proc/<pid>/task/*/schedstat) / messages delivered to subscribers in it; nodes = every Sluice or aedes node added up; node A takes the publishers, node B the subscribers`,
    "Redis cmds/msg = INFO commandstats calls (the bench's INFO left out); reads/msg = read syscalls of redis-server (/proc/<pid>/io syscr); B in/out = INFO total_net_input_bytes / total_net_output_bytes; all over the same window, per delivered message",
    "ready throughout = every node answered 200 on /readyz, polled every 100 ms with a 1 s timeout from the warm-up to the end of the run (a timeout counts as not ready); empty for nodes without /readyz (aedes)",
    "Redis output-buffer cuts = clients Redis closed for passing client-output-buffer-limit during the run (its log); node subscription resets = sluice_redis_subscription_resets_total growth, empty where no node exposes it; node drops = sluice_dropped_messages_total growth over the run, every reason (by reason in the JSON)",
    "2-core shared machine: brokers, Redis and the generator share the cores, and other work runs beside them (machine CPU pressure = share of the window some task waited for a CPU); compare ratios within a run",
  ];
}
