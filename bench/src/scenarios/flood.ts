import { randomBytes } from "node:crypto";
import { type BenchRedis, startRedis } from "../brokers/redis.js";
import { type SluiceNodeHandle, startSluiceNode } from "../brokers/sluice.js";
import {
  countersSince,
  noConnectionsLeft,
  readSluiceCounters,
  type SluiceCounters,
} from "../brokers/sluice-metrics.js";
import { cpuPercent } from "../generator/cpu-window.js";
import { FloodAttack } from "../generator/flood-attack.js";
import type { AttackPlan, AttackReport } from "../generator/flood-attacker.js";
import { type LoadResult, type LoadSpec, runLoad } from "../generator/load-run.js";
import { type ContentionFigures, ContentionWindow } from "../system/cpu-contention.js";
import type { WatchedProcess } from "../system/process-cpu.js";
import type { Scenario, ScenarioContext, ScenarioOutput, TableCell } from "./scenario.js";

/**
 * docs/flood-protection.md, "Recommended limits for a PLC fleet", as it stands (a unit test
 * keeps the two the same): the node under attack runs what we tell operators to run.
 */
export const RECOMMENDED_PLC_LIMITS = {
  connectTimeoutMs: 5000,
  connections: { perIp: 20, ratePerIp: 5, perUsername: 5, perNode: 20000, cluster: 100000 },
  publish: {
    messagesPerSecond: 50,
    burstMessages: 200,
    bytesPerSecond: 262144,
    overrides: [{ username: "scada", messagesPerSecond: 10000, bytesPerSecond: 20971520 }],
  },
  subscriptions: { perClient: 100, maxTopicLevels: 16 },
  maxTopicBytes: 1024,
  maxKeepaliveSeconds: 300,
  flapping: { maxConnects: 15, windowSeconds: 60, banSeconds: 300 },
  queue: { maxInflight: 20, maxQueuedPerClient: 1000, drainTimeoutMs: 10000 },
} as const;
/** Not in the recommended block: the schema's default, stated so the oversize attack knows it. */
const MAX_PACKET_BYTES = 262_144;

/** The well-behaved fleet: PLCs publishing telemetry at a modest rate to two SCADA subscribers. */
const PLCS = 20;
const MESSAGES_PER_SECOND_PER_PLC = 10;
const SCADA_SUBSCRIBERS = 2;
const PAYLOAD_BYTES = 64;

export interface Windows {
  warmupMs: number;
  measureMs: number;
}
/** Long enough for a p99 of thousands of samples (200 msg/s to 2 subscribers = 400/s). */
const FULL_WINDOWS: Windows = { warmupMs: 2_000, measureMs: 15_000 };
const QUICK_WINDOWS: Windows = { warmupMs: 1_000, measureMs: 3_000 };

/**
 * Every client comes from its own loopback address, as devices on a plant network do: with a
 * quota of 5 new connections per second per address, 22 clients from 127.0.0.1 would be
 * refused by the very limits under test.
 */
const loopback = (subnet: number, count: number): string[] =>
  Array.from({ length: count }, (_, i) => `127.0.${subnet}.${i + 1}`);
const ADDRESSES = {
  plcs: loopback(1, PLCS),
  scada: loopback(2, SCADA_SUBSCRIBERS),
  publishFlood: "127.0.3.1",
  attackerSubscriber: "127.0.3.2",
  connectionFlood: "127.0.4.1",
  oversize: "127.0.6.1",
};

/** Far over the 5 connections/s per address: a bot reconnecting in a loop, or a scan. */
const CONNECTION_FLOOD = { attemptsPerSecond: 500, maxAttempts: 10_000, window: 50 };
/** Slowloris: 5 silent sockets per address (the per-address burst), from this many addresses. */
const SLOWLORIS_ADDRESSES = { full: 40, quick: 10 };
const SLOWLORIS_PER_ADDRESS = 5;
const BROKERS = ["sluice", "sluice-redis"] as const;
type FloodBroker = (typeof BROKERS)[number];
/** The done-criterion of issue 6: p99 under attack within this factor of p99 without. */
const ACCEPTABLE_RATIO = 2;

interface Phase {
  load: LoadResult;
  /** What the node's counters grew by during the phase. */
  counters: SluiceCounters;
  /** Connections still open on the node when the phase began (0: it started clean). */
  leftoverConnections: number;
  /** Over the measurement window: the node waiting for a CPU, and the machine's CPU pressure. */
  contention: ContentionFigures;
  attack?: AttackReport;
}

interface Round {
  baseline: Phase;
  attacked: Phase;
}

export function fleetLoadSpec(
  node: SluiceNodeHandle,
  windows: Windows,
  context: ScenarioContext,
): LoadSpec {
  return {
    publishers: PLCS,
    subscribers: SCADA_SUBSCRIBERS,
    pattern: "fan-in",
    qos: 1,
    payloadBytes: PAYLOAD_BYTES,
    ratePerSecond: PLCS * MESSAGES_PER_SECOND_PER_PLC,
    // Windows that never bind at this rate: they only bound a stalled broker.
    inflightWindow: 1_000,
    endToEndWindow: 1_000,
    ...windows,
    publisherProcesses: context.options.publisherProcesses,
    subscriberProcesses: context.options.subscriberProcesses,
    publisherUrls: [node.url],
    subscriberUrls: [node.url],
    clientAddresses: { publishers: ADDRESSES.plcs, subscribers: ADDRESSES.scada },
  };
}

export function attackPlanFor(
  node: SluiceNodeHandle,
  quick: boolean,
  windows: Windows,
): AttackPlan {
  const id = randomBytes(3).toString("hex");
  return {
    host: "127.0.0.1",
    port: node.mqttPort,
    publishFlood: {
      fromAddress: ADDRESSES.publishFlood,
      subscriberFromAddress: ADDRESSES.attackerSubscriber,
      topicPrefix: `flood/${id}`,
      clientIdPrefix: `flood-${id}-`,
      payloadBytes: PAYLOAD_BYTES,
      qos: [0, 1],
      maxUnacknowledged: 1_000,
    },
    connectionFlood: {
      fromAddress: ADDRESSES.connectionFlood,
      clientIdPrefix: `connect-flood-${id}-`,
      ...CONNECTION_FLOOD,
      maxAttempts: Math.min(
        CONNECTION_FLOOD.maxAttempts,
        Math.ceil((CONNECTION_FLOOD.attemptsPerSecond * windows.measureMs) / 1000),
      ),
    },
    slowloris: {
      fromAddresses: loopback(5, quick ? SLOWLORIS_ADDRESSES.quick : SLOWLORIS_ADDRESSES.full),
      socketsPerAddress: SLOWLORIS_PER_ADDRESS,
      waitForCloseMs: RECOMMENDED_PLC_LIMITS.connectTimeoutMs + 3_000,
    },
    oversize: {
      fromAddress: ADDRESSES.oversize,
      clientId: `oversize-${id}`,
      announcedBytes: MAX_PACKET_BYTES * 4,
    },
  };
}

/**
 * One phase: the fleet's load for warm-up plus the window, with the attackers (when `attacked`)
 * running exactly over the measurement window, onset included.
 */
async function phase(
  context: ScenarioContext,
  node: SluiceNodeHandle,
  watch: readonly WatchedProcess[],
  attacked: boolean,
  windows: Windows,
): Promise<Phase> {
  const leftoverConnections = await noConnectionsLeft(node.httpPort, 15_000);
  const before = await readSluiceCounters(node.httpPort);
  const plan = attackPlanFor(node, context.options.quick, windows);
  const attack = attacked ? await FloodAttack.start(context.cleanup, plan) : undefined;
  const contentionWindow = new ContentionWindow(node.process?.pid);
  let contention: ContentionFigures | undefined;
  const timers: NodeJS.Timeout[] = [];
  try {
    const load = await runLoad(fleetLoadSpec(node, windows, context), context.cleanup, {
      watch,
      onStart: () => {
        attack?.begin(windows.warmupMs, windows.measureMs);
        timers.push(
          setTimeout(() => contentionWindow.begin(), windows.warmupMs),
          setTimeout(() => {
            contention = contentionWindow.end();
          }, windows.warmupMs + windows.measureMs),
        );
      },
    });
    const report = await attack?.report(plan.slowloris.waitForCloseMs + 20_000);
    const counters = countersSince(before, await readSluiceCounters(node.httpPort));
    return {
      load,
      counters,
      leftoverConnections,
      contention: contention ?? { runQueueWaitMsPerSecond: null, cpuPressurePercent: null },
      ...(report ? { attack: report } : {}),
    };
  } finally {
    for (const timer of timers) clearTimeout(timer);
    await attack?.end();
  }
}

function medianOf(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length / 2;
  if (sorted.length === 0) return Number.NaN;
  return sorted.length % 2 === 1
    ? (sorted[Math.floor(middle)] ?? Number.NaN)
    : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
}

const round2 = (value: number): number => Math.round(value * 100) / 100;

/** The median of a figure that may be missing (not Linux): null when no round has it. */
function pickNullable(rounds: readonly Round[], f: (round: Round) => number | null): number | null {
  const values = rounds.map(f).filter((v): v is number => v !== null);
  return values.length === 0 ? null : round2(medianOf(values));
}

interface BrokerOutcome {
  broker: FloodBroker;
  rounds: Round[];
  error?: string;
}

async function measureBroker(
  context: ScenarioContext,
  broker: FloodBroker,
  windows: Windows,
): Promise<BrokerOutcome> {
  const { cleanup, workDir, log, options } = context;
  let redis: BenchRedis | undefined;
  let node: SluiceNodeHandle | undefined;
  const rounds: Round[] = [];
  try {
    if (broker === "sluice-redis") redis = await startRedis(cleanup);
    node = await startSluiceNode({ cleanup, workDir }, `bench-flood-${broker}`, {
      ...(redis
        ? { redis: { url: redis.url, keyPrefix: `bench-flood-${randomBytes(3).toString("hex")}:` } }
        : {}),
      config: { limits: RECOMMENDED_PLC_LIMITS },
    });
    const watch = [
      ...(node.process ? [node.process] : []),
      ...(redis?.process ? [redis.process] : []),
    ];
    for (let round = 0; round < options.rounds; round++) {
      // The order alternates, so that neither phase always meets the node fresh.
      const order = round % 2 === 0 ? [false, true] : [true, false];
      const phases: Partial<Round> = {};
      for (const attacked of order) {
        const result = await phase(context, node, watch, attacked, windows);
        log(
          `[flood ${broker} round ${round + 1}/${options.rounds}] ${attacked ? "under attack" : "baseline"}: p50 ${result.load.latency.p50Ms.toFixed(2)} ms, p99 ${result.load.latency.p99Ms.toFixed(2)} ms, max ${result.load.latency.maxMs.toFixed(1)} ms, ${Math.round(result.load.messagesPerSecond)} msg/s delivered, broker CPU ${result.load.processCpu.broker?.toFixed(0) ?? "?"}%`,
        );
        if (attacked) phases.attacked = result;
        else phases.baseline = result;
      }
      if (phases.baseline && phases.attacked)
        rounds.push({ baseline: phases.baseline, attacked: phases.attacked });
    }
    return { broker, rounds };
  } catch (error) {
    log(`[flood ${broker}] failed: ${String(error)}`);
    return { broker, rounds, error: (error as Error).message };
  } finally {
    await node?.stop();
    await redis?.stop();
  }
}

function latencyRow(outcome: BrokerOutcome): Record<string, TableCell> {
  const { rounds } = outcome;
  const pick = (f: (round: Round) => number): number | null =>
    rounds.length === 0 ? null : round2(medianOf(rounds.map(f)));
  const ratios = rounds.map((r) => r.attacked.load.latency.p99Ms / r.baseline.load.latency.p99Ms);
  const ratio = ratios.length === 0 ? null : round2(medianOf(ratios));
  const lost = rounds.reduce((n, r) => n + r.baseline.load.lost + r.attacked.load.lost, 0);
  return {
    broker: outcome.broker,
    rounds: rounds.length,
    "p50 ms": pick((r) => r.baseline.load.latency.p50Ms),
    "p99 ms": pick((r) => r.baseline.load.latency.p99Ms),
    "max ms": pick((r) => r.baseline.load.latency.maxMs),
    "p50 ms attacked": pick((r) => r.attacked.load.latency.p50Ms),
    "p99 ms attacked": pick((r) => r.attacked.load.latency.p99Ms),
    "max ms attacked": pick((r) => r.attacked.load.latency.maxMs),
    "p99 ratio": ratio,
    [`within ${ACCEPTABLE_RATIO}x`]: ratio === null ? null : ratio <= ACCEPTABLE_RATIO,
    "each round's ratio": ratios.map((r) => r.toFixed(2)).join(", "),
    "delivered msg/s": pick((r) => r.baseline.load.messagesPerSecond),
    "delivered msg/s attacked": pick((r) => r.attacked.load.messagesPerSecond),
    lost,
    "broker CPU %": pick((r) => r.baseline.load.processCpu.broker ?? 0),
    "broker CPU % attacked": pick((r) => r.attacked.load.processCpu.broker ?? 0),
    "node event-loop max ms": pick((r) => r.baseline.counters.eventLoopDelayMaxMs),
    "node event-loop max ms attacked": pick((r) => r.attacked.counters.eventLoopDelayMaxMs),
    "node waited for CPU ms/s": pickNullable(
      rounds,
      (r) => r.baseline.contention.runQueueWaitMsPerSecond,
    ),
    "node waited for CPU ms/s attacked": pickNullable(
      rounds,
      (r) => r.attacked.contention.runQueueWaitMsPerSecond,
    ),
    "machine CPU pressure %": pickNullable(rounds, (r) => r.baseline.contention.cpuPressurePercent),
    "machine CPU pressure % attacked": pickNullable(
      rounds,
      (r) => r.attacked.contention.cpuPressurePercent,
    ),
    "attacker CPU %": pick((r) => (r.attacked.attack ? cpuPercent(r.attacked.attack.cpu) : 0)),
    error: outcome.error ?? "",
  };
}

function publishFloodRows(
  outcome: BrokerOutcome,
  windows: Windows,
): Array<Record<string, TableCell>> {
  const { messagesPerSecond, burstMessages } = RECOMMENDED_PLC_LIMITS.publish;
  const seconds = windows.measureMs / 1000;
  return outcome.rounds.flatMap((round, i) =>
    (round.attacked.attack?.publishFloods ?? []).map((flood) => ({
      broker: outcome.broker,
      round: i + 1,
      qos: flood.qos,
      written: flood.written,
      "written/s": Math.round(flood.written / seconds),
      acknowledged: flood.qos === 0 ? null : flood.acknowledged,
      delivered: flood.deliveredInWindow,
      "delivered/s": round2(flood.deliveredInWindow / seconds),
      "limit msg/s": messagesPerSecond,
      "allowed (burst + limit x window)": burstMessages + messagesPerSecond * seconds,
      "throttle episodes (node)": round.attacked.counters.throttled,
      "closed by node": flood.closedByBroker,
    })),
  );
}

function connectionAttackRows(outcome: BrokerOutcome): Array<Record<string, TableCell>> {
  return outcome.rounds.flatMap((round, i) => {
    const attack = round.attacked.attack;
    if (!attack) return [];
    const { connectionFlood: flood, slowloris, oversize } = attack;
    const { rejected, protocolErrors } = round.attacked.counters;
    return [
      {
        broker: outcome.broker,
        round: i + 1,
        "connect attempts": flood.attempts,
        accepted: flood.accepted,
        "closed before CONNACK": flood.closedWithoutConnack,
        "CONNACK refused": flood.refusedWithConnack,
        failed: flood.failed,
        "node: rejected rate": rejected.rate ?? 0,
        "node: rejected per_ip": rejected.per_ip ?? 0,
        "node: rejected (all reasons)": Object.values(rejected).reduce((n, v) => n + v, 0),
        "slowloris sockets": slowloris.opened,
        "slowloris closed by node": slowloris.closedByBroker,
        "slowloris closed after (s)":
          slowloris.firstClosedAfterMs === null || slowloris.lastClosedAfterMs === null
            ? null
            : `${(slowloris.firstClosedAfterMs / 1000).toFixed(1)}-${(slowloris.lastClosedAfterMs / 1000).toFixed(1)}`,
        "oversize closed by node": oversize.connected ? oversize.closedByBroker : null,
        "node: protocol errors": Object.entries(protocolErrors)
          .filter(([, count]) => count > 0)
          .map(([reason, count]) => `${reason} ${count}`)
          .join(", "),
      },
    ];
  });
}

function chosenBrokers(context: ScenarioContext): FloodBroker[] {
  const asked = context.options.brokers
    .map((b) => b.name)
    .filter((name): name is FloodBroker => (BROKERS as readonly string[]).includes(name));
  return asked.length > 0 ? asked : [...BROKERS];
}

export const floodScenario: Scenario = {
  name: "flood",
  description: `${PLCS} PLCs at ${MESSAGES_PER_SECOND_PER_PLC} msg/s (QoS 1) to ${SCADA_SUBSCRIBERS} SCADA subscribers on one Sluice node with the recommended PLC limits (docs/flood-protection.md), without and with attackers (publish floods, a connection flood, slowloris, an oversize packet): p99 under attack / p99 without`,
  inDefaultSet: false,
  async run(context): Promise<ScenarioOutput> {
    const windows = context.options.quick ? QUICK_WINDOWS : FULL_WINDOWS;
    const outcomes: BrokerOutcome[] = [];
    for (const broker of chosenBrokers(context))
      outcomes.push(await measureBroker(context, broker, windows));
    const seconds = windows.measureMs / 1000;
    const latencyRows = outcomes.map(latencyRow);
    return {
      rows: [],
      tables: [
        {
          title: `flood: well-behaved clients' latency without and with attackers (${PLCS} PLCs -> ${SCADA_SUBSCRIBERS} SCADA, QoS 1, ${seconds} s windows)`,
          columns: Object.keys(latencyRows[0] ?? { broker: null }),
          rows: latencyRows,
          notes: [
            `${PLCS} publishers at ${MESSAGES_PER_SECOND_PER_PLC} msg/s each (QoS 1, ${PAYLOAD_BYTES} B), each from its own address (127.0.1.x), to ${SCADA_SUBSCRIBERS} subscribers of all of them (127.0.2.x): ${PLCS * MESSAGES_PER_SECOND_PER_PLC * SCADA_SUBSCRIBERS} end-to-end latency samples a second`,
            "the node runs the recommended PLC limits of docs/flood-protection.md (limits.connections, limits.publish, flapping, ...), anonymous clients (so the publish budget is per client id), maxPacketBytes at its default",
            `attackers run in a process of their own over exactly the ${seconds} s measurement window, onset included; baseline and attacked phases alternate in order round by round on the same node, each starting once the node holds no connection`,
            "figures are medians over the rounds (p99 ratio: the median of each round's ratio); broker CPU is percent of one core (Redis not included); node event-loop max = the longest stall of the node's event loop in the phase (its /metrics)",
            "node waited for CPU = time per second the node's main thread was ready to run but not scheduled (/proc/<pid>/schedstat); machine CPU pressure = share of the window in which some task on the machine waited for a CPU (/proc/pressure/cpu): on a shared machine these, not the node's own work, can set a p99",
          ],
        },
        {
          title:
            "flood: publish floods (raw sockets, one client per QoS, from 127.0.3.1, as fast as the socket takes them)",
          columns: [
            "broker",
            "round",
            "qos",
            "written",
            "written/s",
            "acknowledged",
            "delivered",
            "delivered/s",
            "limit msg/s",
            "allowed (burst + limit x window)",
            "throttle episodes (node)",
            "closed by node",
          ],
          rows: outcomes.flatMap((o) => publishFloodRows(o, windows)),
          notes: [
            "written = PUBLISH packets the attacker's socket took, kernel buffers included: the node need not have read them (a throttled client is not read)",
            "delivered = what the attacker's own subscriber received during the window; QoS 1 keeps at most 1,000 unacknowledged",
            `disconnectAfterSeconds is at its default of 30 s, longer than the window, so no flooder is disconnected here`,
          ],
        },
        {
          title: `flood: connection attacks (connection flood from 127.0.4.1 at ${CONNECTION_FLOOD.attemptsPerSecond}/s, slowloris, oversize PUBLISH)`,
          columns: Object.keys(outcomes.flatMap(connectionAttackRows)[0] ?? { broker: null }),
          rows: outcomes.flatMap(connectionAttackRows),
          notes: [
            `connection flood: CONNECT attempts paced at ${CONNECTION_FLOOD.attemptsPerSecond}/s (at most ${CONNECTION_FLOOD.window} awaiting an outcome) from one address; accepted connections are held open, so the per-address quota (20) fills`,
            `slowloris: ${SLOWLORIS_PER_ADDRESS} silent sockets from each of several addresses (127.0.5.x), never a CONNECT; the node should close each at connectTimeoutMs (${RECOMMENDED_PLC_LIMITS.connectTimeoutMs} ms)`,
            `oversize: after a CONNECT, a PUBLISH header announcing ${(MAX_PACKET_BYTES * 4).toLocaleString("en-US")} bytes (maxPacketBytes ${MAX_PACKET_BYTES.toLocaleString("en-US")}) from 127.0.6.1`,
            "node: figures read from the node's /metrics, before and after the phase",
          ],
        },
      ],
      config: {
        limits: RECOMMENDED_PLC_LIMITS,
        maxPacketBytes: MAX_PACKET_BYTES,
        plcs: PLCS,
        messagesPerSecondPerPlc: MESSAGES_PER_SECOND_PER_PLC,
        scadaSubscribers: SCADA_SUBSCRIBERS,
        payloadBytes: PAYLOAD_BYTES,
        qos: 1,
        ...windows,
        rounds: context.options.rounds,
        connectionFlood: CONNECTION_FLOOD,
        slowlorisSockets:
          (context.options.quick ? SLOWLORIS_ADDRESSES.quick : SLOWLORIS_ADDRESSES.full) *
          SLOWLORIS_PER_ADDRESS,
        addresses: ADDRESSES,
        acceptableRatio: ACCEPTABLE_RATIO,
        phases: outcomes.map((o) => ({
          broker: o.broker,
          rounds: o.rounds.map((r) => ({
            baseline: phaseRecord(r.baseline),
            attacked: phaseRecord(r.attacked),
          })),
        })),
      },
    };
  },
};

/** A phase for the JSON record: the latency figures, the node's counters and the attack's report. */
function phaseRecord(p: Phase): Record<string, unknown> {
  return {
    latency: p.load.latency,
    messagesPerSecond: p.load.messagesPerSecond,
    lost: p.load.lost,
    duplicates: p.load.duplicates,
    generatorCpu: p.load.generatorCpu,
    processCpu: p.load.processCpu,
    counters: p.counters,
    leftoverConnections: p.leftoverConnections,
    contention: p.contention,
    ...(p.attack ? { attack: p.attack } : {}),
  };
}
