import type { BrokerDefinition, RunningBroker } from "../brokers/broker.js";
import { findBroker } from "../brokers/catalog.js";
import { type CostFigures, cpuMicrosPerMessage } from "./cost-probe.js";
import { type LoadCase, measureBrokers, medianRound } from "./measure-brokers.js";
import { deliveryCells, microsCell, round1, unmeasuredRow } from "./row-cells.js";
import type {
  ResultRow,
  Scenario,
  ScenarioContext,
  ScenarioOutput,
  ScenarioTable,
  TableCell,
} from "./scenario.js";
import { type SharedFigures, SharedProbe } from "./shared-probe.js";
import { FULL_SPEED_END_TO_END_WINDOW, FULL_SPEED_WINDOW, fullSpeedLoad } from "./throughput.js";

/** Two Sluice nodes over one Redis, and Mosquitto's `$share` as a reference. */
const DEFAULT_BROKERS = ["sluice-cluster-2", "mosquitto"] as const;
const QUICK_BROKERS = ["sluice-cluster-2"] as const;
const PUBLISHERS = 10;
const PAYLOAD_BYTES = 64;
/**
 * A member's processing time per message, spent idle before it acknowledges and reads the
 * next: each member takes at most 250 msg/s, so members, not the broker, are the limit.
 */
const SERVICE_MS = 4;
/** The fixed rate of the latency cases, all publishers together. */
const LATENCY_RATE = 2_000;
/** A window that never throttles the fixed rate: it only bounds a stalled broker. */
const RATE_WINDOW = 1_000;
/**
 * Publishers faster than the broker, no end-to-end window: what each sends at most. Members
 * that fall behind leave the messages in their queues (sharedSubscriptions.maxQueued, 10,000
 * by default), past which they are dropped and counted.
 */
const BURST_MESSAGES_PER_PUBLISHER = { full: 20_000, quick: 1_000 };
/**
 * After the publishers stop, how long members may take to work off what they were assigned
 * (and may pause this long) before what they still miss counts as lost.
 */
/** The burst's window at least: long enough that a paced member's queue fills up. */
const BURST_MIN_MEASURE_MS = 8_000;
const SETTLE = { maxMs: 30_000, quietMs: 3_000 };
/**
 * Messages a paced member's publishers may be ahead of the group: enough that members never
 * idle (500 in all: at least half a second of work for 4 members), few enough that the queues
 * drain in seconds once the publishers stop.
 */
const SCALE_OUT_WINDOW = 50;
/** Every case's bound in count (the time bound is the window): never reached at full speed. */
const MAX_MESSAGES_PER_PUBLISHER = 100_000;

type Phase = "capacity" | "scale-out" | "latency" | "burst";

/** A case of the scenario: who receives (a normal subscriber or a group's members), how. */
interface ShareCase {
  phase: Phase;
  /** 0: one normal subscription (the same topics, `+`), for comparison. */
  members: number;
  serviceMs?: number;
  loadCase: LoadCase;
}

/**
 * Members (and the normal subscriber) are spread over the nodes: the first on the node the
 * publishers do not use, so one member's deliveries all cross between nodes, the next on the
 * publishers' node, and so on. A single broker gets them all.
 */
function spread(definition: BrokerDefinition): BrokerDefinition {
  return {
    ...definition,
    async start(context): Promise<RunningBroker> {
      const broker = await definition.start(context);
      const urls = [...broker.subscriberUrls, ...broker.publisherUrls];
      return { ...broker, subscriberUrls: [...new Set(urls)] };
    },
  };
}

function chosenBrokers(context: ScenarioContext): BrokerDefinition[] {
  const given = context.options.brokers;
  if (given.length > 0) return given.map(spread);
  return (context.options.quick ? QUICK_BROKERS : DEFAULT_BROKERS).map(findBroker).map(spread);
}

function shareCases(context: ScenarioContext): ShareCase[] {
  const { options } = context;
  const cap = options.quick
    ? BURST_MESSAGES_PER_PUBLISHER.quick
    : BURST_MESSAGES_PER_PUBLISHER.full;
  const make = (
    phase: Phase,
    members: number,
    serviceMs: number | undefined,
    load: Partial<LoadCase>,
  ): ShareCase => ({
    phase,
    members,
    ...(serviceMs === undefined ? {} : { serviceMs }),
    loadCase: {
      publishers: PUBLISHERS,
      subscribers: Math.max(1, members),
      pattern: members === 0 ? "fan-in" : "shared",
      qos: 1,
      payloadBytes: PAYLOAD_BYTES,
      ...fullSpeedLoad(options),
      maxMessagesPerPublisher: MAX_MESSAGES_PER_PUBLISHER,
      settle: SETTLE,
      ...(serviceMs === undefined
        ? {}
        : { subscriberServiceMs: serviceMs, endToEndWindow: SCALE_OUT_WINDOW }),
      ...load,
    },
  });
  const rate = {
    ratePerSecond: LATENCY_RATE,
    inflightWindow: RATE_WINDOW,
    endToEndWindow: RATE_WINDOW,
  };
  const burst = {
    endToEndWindow: cap,
    maxMessagesPerPublisher: cap,
    ...(options.quick ? {} : { measureMs: Math.max(options.measureMs, BURST_MIN_MEASURE_MS) }),
  };
  if (options.quick)
    return [
      make("capacity", 0, undefined, {}),
      make("capacity", 1, undefined, {}),
      make("scale-out", 2, SERVICE_MS, {}),
      make("burst", 2, undefined, burst),
    ];
  return [
    make("capacity", 0, undefined, {}),
    make("capacity", 1, undefined, {}),
    make("capacity", 4, undefined, {}),
    ...[1, 2, 4].map((n) => make("scale-out", n, SERVICE_MS, {})),
    ...[0, 1, 2, 4].map((n) => make("latency", n, undefined, rate)),
    make("burst", 0, undefined, burst),
    make("burst", 4, undefined, burst),
    make("burst", 1, SERVICE_MS, burst),
  ];
}

interface Measured {
  broker: string;
  caseIndex: number;
  row: ResultRow;
  cost: CostFigures;
  shared: SharedFigures;
}

const medianFigure = (loadCase: LoadCase) =>
  loadCase.ratePerSecond === undefined ? "messagesPerSecond" : "p99Ms";

/** Cases on every broker, with the shared probe on each measurement; burst cases on fresh brokers. */
async function measure(
  context: ScenarioContext,
  brokers: readonly BrokerDefinition[],
  cases: readonly ShareCase[],
  measured: Measured[],
  offset: number,
): Promise<ResultRow[]> {
  return measureBrokers(context, brokers, {
    scenario: "shared",
    cases: cases.map((c) => c.loadCase),
    medianBy: medianFigure,
    compare: "cases",
    probe: ({ broker, caseIndex }) =>
      new SharedProbe(broker, cases[caseIndex]?.loadCase as LoadCase, (row, cost, shared) =>
        measured.push({ broker: broker.name, caseIndex: caseIndex + offset, row, cost, shared }),
      ),
  });
}

function who(shareCase: ShareCase): string {
  const receivers =
    shareCase.members === 0
      ? "normal subscription, 1 subscriber"
      : `$share, ${shareCase.members} member${shareCase.members > 1 ? "s" : ""}`;
  return shareCase.serviceMs === undefined
    ? receivers
    : `${receivers}, ${shareCase.serviceMs} ms/msg each`;
}

/** Each member's share of what the group received, as a percentage of an even share. */
function balance(row: ResultRow): string | null {
  const counts = row.memberReceived;
  if (!counts || counts.length < 2) return null;
  const total = counts.reduce((n, c) => n + c, 0);
  if (total === 0) return null;
  return counts.map((c) => `${Math.round((c / total) * counts.length * 100)}%`).join(" ");
}

/** Counts by reason, "queue_full 12, no_member 3"; "0" when none; null when not read. */
function byReason(counts: Record<string, number> | null): string | null {
  if (counts === null) return null;
  const text = Object.entries(counts)
    .filter(([, n]) => n > 0)
    .map(([reason, n]) => `${reason} ${n}`)
    .join(", ");
  return text === "" ? "0" : text;
}

function caseRow(
  broker: string,
  shareCase: ShareCase,
  chosen: Measured | undefined,
  all: readonly Measured[],
): Record<string, TableCell> {
  const { loadCase } = shareCase;
  const base: Record<string, TableCell> = {
    phase: shareCase.phase,
    broker,
    receivers: who(shareCase),
    "offered msg/s": loadCase.ratePerSecond ?? null,
    "member capacity msg/s":
      shareCase.serviceMs === undefined
        ? null
        : Math.max(1, shareCase.members) * Math.round(1000 / shareCase.serviceMs),
  };
  if (!chosen) return unmeasuredRow(base, all);
  const { row, cost, shared } = chosen;
  const micros = (prefix: string): number | null => microsCell(row, cost, prefix);
  return {
    ...base,
    ...deliveryCells(row),
    "p50 ms": row.p50Ms,
    duplicates: row.duplicates,
    "members' shares": balance(row),
    "nodes µs/msg": micros("node"),
    "Redis µs/msg": micros("redis"),
    "shared delivered (nodes)": shared.delivered,
    "shared redelivered": shared.redelivered,
    "shared dropped": byReason(shared.dropped),
    "node drops": byReason(cost.nodeDroppedMessages),
    "peak member queues": shared.peakMemberQueues,
    "peak backlog": shared.peakBacklog,
    "peak broker RSS MB": shared.peakBrokerRssMb.join(" + "),
    "max loop delay ms":
      shared.maxLoopDelayMs.length > 0 ? shared.maxLoopDelayMs.join(" / ") : null,
    "peak Redis MB": shared.peakRedisMb,
    "each round msg/s": all.map((m) => Math.round(m.row.messagesPerSecond)).join(", "),
    "each round p99 ms": all.map((m) => m.row.p99Ms.toFixed(1)).join(", "),
    error: [row.error, cost.probeError, shared.sampleError]
      .filter((e) => e !== undefined)
      .join("; "),
  };
}

const COLUMNS = [
  "phase",
  "broker",
  "receivers",
  "offered msg/s",
  "member capacity msg/s",
  "published",
  "published msg/s",
  "delivered msg/s",
  "p50 ms",
  "p99 ms",
  "lost",
  "duplicates",
  "members' shares",
  "nodes µs/msg",
  "Redis µs/msg",
  "shared delivered (nodes)",
  "shared redelivered",
  "shared dropped",
  "node drops",
  "peak member queues",
  "peak backlog",
  "peak broker RSS MB",
  "max loop delay ms",
  "peak Redis MB",
  "each round msg/s",
  "each round p99 ms",
  "error",
];

/** The median round of each case on each broker. */
function pickMedians(
  brokers: readonly BrokerDefinition[],
  cases: readonly ShareCase[],
  measured: readonly Measured[],
): Array<{ broker: string; shareCase: ShareCase; chosen?: Measured; all: Measured[] }> {
  return brokers.flatMap((definition) =>
    cases.map((shareCase, caseIndex) => {
      const all = measured.filter((m) => m.broker === definition.name && m.caseIndex === caseIndex);
      const median = medianRound(
        all.map((m) => m.row),
        medianFigure(shareCase.loadCase),
      );
      const chosen = all.find((m) => m.row === median);
      return { broker: definition.name, shareCase, all, ...(chosen ? { chosen } : {}) };
    }),
  );
}

type Picked = ReturnType<typeof pickMedians>[number];

/** The goal and the cost of sharing, as ratios within this run. */
function goalRows(picked: readonly Picked[]): Array<Record<string, TableCell>> {
  const find = (broker: string, phase: Phase, members: number, serviceMs?: number) =>
    picked.find(
      (p) =>
        p.broker === broker &&
        p.shareCase.phase === phase &&
        p.shareCase.members === members &&
        p.shareCase.serviceMs === serviceMs,
    )?.chosen;
  const rows: Array<Record<string, TableCell>> = [];
  for (const broker of new Set(picked.map((p) => p.broker))) {
    const one = find(broker, "scale-out", 1, SERVICE_MS);
    const four = find(broker, "scale-out", 4, SERVICE_MS);
    if (one && four && one.row.messagesPerSecond > 0) {
      const ratio = four.row.messagesPerSecond / one.row.messagesPerSecond;
      rows.push({
        broker,
        measure: "scale-out: delivered msg/s, 4 members / 1 member (members the limit)",
        goal: ">= 2x",
        measured: `${ratio.toFixed(2)}x`,
        met: ratio >= 2,
      });
    }
    for (const phase of ["latency", "capacity"] as const)
      rows.push(...sharingCost(broker, phase, find(broker, phase, 0), find(broker, phase, 1)));
  }
  return rows;
}

/** What sharing costs a message: $share with one member against a normal subscription. */
function sharingCost(
  broker: string,
  phase: "latency" | "capacity",
  normal: Measured | undefined,
  shared: Measured | undefined,
): Array<Record<string, TableCell>> {
  const rows: Array<Record<string, TableCell>> = [];
  const where =
    phase === "latency" ? `${LATENCY_RATE.toLocaleString("en-US")} msg/s` : "full speed";
  if (!normal || !shared || normal.row.messagesPerSecond <= 0) return rows;
  if (phase === "capacity")
    rows.push({
      broker,
      measure: "cost of sharing: full-speed delivered msg/s, $share 1 member / normal subscription",
      goal: "",
      measured: `${(shared.row.messagesPerSecond / normal.row.messagesPerSecond).toFixed(2)}x`,
      met: null,
    });
  for (const [prefix, what] of [
    ["node", "nodes'"],
    ["redis", "Redis'"],
  ] as const) {
    const normalMicros = cpuMicrosPerMessage(normal.row, normal.cost, prefix);
    const sharedMicros = cpuMicrosPerMessage(shared.row, shared.cost, prefix);
    if (normalMicros === null || sharedMicros === null) continue;
    rows.push({
      broker,
      measure: `cost of sharing at ${where}: ${what} CPU µs per delivered message, $share 1 member - normal`,
      goal: "",
      measured: `${round1(sharedMicros - normalMicros)} µs (${round1(sharedMicros)} vs ${round1(normalMicros)})`,
      met: null,
    });
  }
  return rows;
}

export const shared: Scenario = {
  name: "shared",
  description: `shared subscriptions ($share): QoS 1 delivered msg/s with 1, 2 and 4 members spread over two nodes, members the limit (${SERVICE_MS} ms per message each) and not; p50/p99 at ${LATENCY_RATE.toLocaleString("en-US")} msg/s; publishers faster than the broker with no end-to-end window (drops, member queues, memory); a normal subscription in the same run; sluice-cluster-2 and Mosquitto`,
  inDefaultSet: false,
  async run(context): Promise<ScenarioOutput> {
    const brokers = chosenBrokers(context);
    const cases = shareCases(context);
    const steady = cases.filter((c) => c.phase !== "burst");
    const bursts = cases.filter((c) => c.phase === "burst");
    const measured: Measured[] = [];
    context.log("[shared] capacity, scale-out and latency phases");
    const rows = await measure(context, brokers, steady, measured, 0);
    context.log("[shared] burst phase, brokers started afresh");
    rows.push(...(await measure(context, brokers, bursts, measured, steady.length)));
    const ordered = [...steady, ...bursts];
    const picked = pickMedians(brokers, ordered, measured);
    const cap = context.options.quick
      ? BURST_MESSAGES_PER_PUBLISHER.quick
      : BURST_MESSAGES_PER_PUBLISHER.full;
    const tables: ScenarioTable[] = [
      {
        title: "shared: the issue's goal and the cost of sharing (ratios within this run)",
        columns: ["broker", "measure", "goal", "measured", "met"],
        rows: goalRows(picked),
        notes: [
          "each figure is the median round of its case (full speed: by delivered msg/s, fixed rate: by p99)",
        ],
      },
      {
        title: `shared: ${PUBLISHERS} QoS 1 publishers, ${PAYLOAD_BYTES} B, members spread over the nodes`,
        columns: COLUMNS,
        rows: picked.map((p) => caseRow(p.broker, p.shareCase, p.chosen, p.all)),
        notes: [
          `every client MQTT 3.1.1, QoS 1 both ways; publishers each on their own topic (bench/<run>/sh/<i>), the group \`$share/bench/bench/<run>/sh/+\` (Mosquitto: its own \`$share\`), the normal subscriber on the same topics with \`+\`; publishers on node A, the first member (or the normal subscriber) on node B, the second on A, then B, A; round robin (the default strategy)`,
          `capacity: full speed within ${FULL_SPEED_WINDOW} unacknowledged messages and ${FULL_SPEED_END_TO_END_WINDOW} not yet received per publisher, members as fast as they read; scale-out: the same but ${SCALE_OUT_WINDOW} not yet received per publisher, each member spending ${SERVICE_MS} ms per message (idle: a timer, not CPU) before it acknowledges and reads the next, so at most ${Math.round(1000 / SERVICE_MS)} msg/s per member (member capacity = members x that)`,
          `latency: ${LATENCY_RATE.toLocaleString("en-US")} msg/s in all, members as fast as they read; p50/p99 from publish to receipt at the member`,
          `burst (brokers started afresh): publishers faster than the broker, no end-to-end window (${FULL_SPEED_WINDOW} unacknowledged each, whatever the members have received), at most ${cap.toLocaleString("en-US")} messages per publisher, a window of at least ${BURST_MIN_MEASURE_MS / 1000} s; members as fast as they read, or one paced member whose queue must fill (sharedSubscriptions.maxQueued, default 10,000: past it Sluice drops and counts); a message is published once the broker has assigned it to a member's queue (Sluice: the PUBACK waits for Redis); lost = never received, counted after up to ${SETTLE.maxMs / 1000} s for the queues to drain (less once nothing arrives for ${SETTLE.quietMs / 1000} s)`,
          "node drops = sluice_dropped_messages_total growth over the run, by reason (a normal subscriber's deliveries past queue.maxQueuedPerClient: queue_full); shared delivered / redelivered / dropped = growth of sluice_shared_{delivered,redelivered,dropped}_total over the run (read every 0.5 s while the members are connected: a group's series go with it); peak member queues = the most entries the members' Redis streams held at once (assigned, not yet acknowledged; sampled every 0.5 s); peak backlog = sluice_shared_backlog (no member online); peak RSS of node A + node B and Redis' used_memory, sampled; max loop delay = each node's (A / B) longest event-loop delay over the run (nodejs_eventloop_lag_max_seconds, read every 0.5 s)",
          "µs/msg = CPU of both nodes (or Redis) over the measurement window / messages delivered in it; the probe's SCAN/XLEN of the member queues runs on Redis too",
          "members' shares = each member's messages over the run, as a percentage of an even share (100% each = perfectly even)",
          "2-core shared machine: brokers, Redis and the generator share the cores with other work; compare within a run",
        ],
      },
    ];
    return {
      rows,
      tables,
      config: {
        brokers: brokers.map((b) => b.name),
        publishers: PUBLISHERS,
        payloadBytes: PAYLOAD_BYTES,
        qos: 1,
        serviceMs: SERVICE_MS,
        latencyRate: LATENCY_RATE,
        burstMessagesPerPublisher: cap,
        burstSettle: SETTLE,
        cases: ordered.map((c) => ({
          phase: c.phase,
          members: c.members,
          serviceMs: c.serviceMs ?? null,
        })),
        warmupMs: context.options.warmupMs,
        measureMs: context.options.measureMs,
        rounds: context.options.rounds,
        measurements: measured.map((m) => ({
          broker: m.broker,
          case: m.caseIndex,
          messagesPerSecond: m.row.messagesPerSecond,
          p99Ms: m.row.p99Ms,
          memberReceived: m.row.memberReceived ?? null,
          shared: m.shared,
          cost: m.cost,
        })),
      },
    };
  },
};
