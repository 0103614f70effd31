import type { BrokerDefinition } from "../brokers/broker.js";
import { findBroker } from "../brokers/catalog.js";
import type { ClientKind } from "../generator/load-client.js";
import type { ProtocolLevel } from "../generator/protocol-level.js";
import { fixedRateCase, LATENCY_RATE } from "./latency.js";
import { type LoadCase, measureBrokers } from "./measure-brokers.js";
import { GOAL_COLUMNS, MQTT5_GOALS, protocolGoalRows } from "./mqtt5-goals.js";
import type { RunOptions, Scenario, ScenarioContext, ScenarioOutput } from "./scenario.js";
import {
  FULL_SPEED_END_TO_END_WINDOW,
  FULL_SPEED_WINDOW,
  fullSpeedCase,
  REFERENCE_SHAPE,
} from "./throughput.js";

/** Sluice in memory and over Redis, and Mosquitto for what MQTT 5 costs a C broker. */
const DEFAULT_BROKERS = ["sluice", "sluice-redis", "mosquitto"] as const;
const QUICK_BROKERS = ["sluice"] as const;
/** Brokers whose ratio is shown but not judged against the goals. */
const REFERENCE_BROKERS: ReadonlySet<string> = new Set(["mosquitto"]);
const LEVELS: readonly ProtocolLevel[] = [4, 5];
/**
 * MQTT.js spends about 1.5x the CPU per message at MQTT 5 (publisher 3.3 against 5.6 µs at QoS
 * 0), and on a machine where generator and broker share the cores, that alone cut the ratio to
 * about 0.8x whatever the broker did: the raw client costs the generator the same at both levels.
 */
const DEFAULT_CLIENT: ClientKind = "raw";

/**
 * The fixed-rate case of one level when both run in the same window: half the pairs and half
 * the rate each, so that the broker carries the latency scenario's load in all.
 */
function halfFixedRateCase(options: RunOptions, qos: 0 | 1): LoadCase {
  const whole = fixedRateCase(options, qos);
  return {
    ...whole,
    publishers: whole.publishers / 2,
    subscribers: whole.subscribers / 2,
    ratePerSecond: LATENCY_RATE / 2,
  };
}

/**
 * Each case of the throughput and latency scenarios twice, 3.1.1 then MQTT 5, adjacent. --quick:
 * full speed at QoS 0 and the fixed rate at QoS 1 only.
 */
function cases(options: RunOptions): LoadCase[] {
  const fullSpeedQos: Array<0 | 1> = options.quick ? [0] : [0, 1];
  const fixedRateQos: Array<0 | 1> = options.quick ? [1] : [0, 1];
  const base = [
    ...fullSpeedQos.map((qos) => fullSpeedCase(options, qos, 64)),
    ...fixedRateQos.map((qos) => halfFixedRateCase(options, qos)),
  ];
  const clientKind = options.clientKind ?? DEFAULT_CLIENT;
  return base.flatMap((loadCase) =>
    LEVELS.map((protocolVersion) => ({ ...loadCase, protocolVersion, clientKind })),
  );
}

/**
 * The cases in pairs (3.1.1, 5), each pair's order swapped every other round, so neither level
 * always runs first (a broker's heap and the machine's load drift within a round).
 */
export function pairedCaseOrder(caseCount: number, round: number): number[] {
  return Array.from({ length: caseCount }, (_, i) => (round % 2 === 0 ? i : i ^ 1));
}

/**
 * A fixed-rate case runs in the same window as its other level: its p99 is decided by the
 * broker's pauses (a scavenge stretched to 10-50 ms on a loaded machine) and scheduling stalls,
 * which in windows of their own fell on one level or the other (single rounds' ratios 0.07x to
 * 50x); together both get the same ones. Full speed runs alone: the levels would share the rate.
 */
export function measuredTogether(
  loadCases: readonly LoadCase[],
  caseIndex: number,
): number | undefined {
  return loadCases[caseIndex]?.ratePerSecond === undefined ? undefined : caseIndex ^ 1;
}

function chosenBrokers(context: ScenarioContext): BrokerDefinition[] {
  if (context.options.brokers.length > 0) return [...context.options.brokers];
  return (context.options.quick ? QUICK_BROKERS : DEFAULT_BROKERS).map(findBroker);
}

export const mqtt5: Scenario = {
  name: "mqtt5",
  description: `MQTT 5 clients against 3.1.1 clients on the same broker, interleaved per round: full speed (QoS 0 and 1, 64 B) and p99 at ${LATENCY_RATE.toLocaleString("en-US")} msg/s, the ratios v5 / v3.1.1 against issue 15's goals; sluice, sluice-redis, mosquitto as a reference`,
  inDefaultSet: false,
  nodeCpu: true,
  async run(context): Promise<ScenarioOutput> {
    const { options } = context;
    const loadCases = cases(options);
    const clientKind = options.clientKind ?? DEFAULT_CLIENT;
    const brokers = chosenBrokers(context);
    const rows = await measureBrokers(context, brokers, {
      scenario: "mqtt5",
      cases: loadCases,
      medianBy: (loadCase) =>
        loadCase.ratePerSecond === undefined ? "messagesPerSecond" : "p99Ms",
      compare: "cases",
      caseOrder: (round) => pairedCaseOrder(loadCases.length, round),
      together: (caseIndex) => measuredTogether(loadCases, caseIndex),
    });
    return {
      rows,
      tables: [
        {
          title: "mqtt5: MQTT 5 clients against 3.1.1 clients (issue 15's goals)",
          columns: GOAL_COLUMNS,
          rows: protocolGoalRows(rows, REFERENCE_BROKERS),
          notes: [
            `10 publishers -> 10 subscribers, pairwise topics, 64 B; full speed = at most ${FULL_SPEED_WINDOW} unacknowledged (QoS 0: unflushed) messages per publisher and ${FULL_SPEED_END_TO_END_WINDOW} ahead of its subscriber, as in the throughput scenario; p99 = end to end at ${LATENCY_RATE.toLocaleString("en-US")} msg/s in all, as in the latency scenario, both levels in the same window (5 -> 5 pairs at ${(LATENCY_RATE / 2).toLocaleString("en-US")} msg/s each), so that the broker's pauses and stalls hit both alike`,
            `every client of a measurement speaks the same level (${clientKind === "raw" ? "raw-socket clients sending pre-encoded packets, which cost the generator the same per message at both levels" : "MQTT.js, protocolVersion 4 or 5"}; clean start, no CONNECT properties); at MQTT 5 every other PUBLISH carries one user property (site=plant-7/line-3, 23 bytes), the others an empty property list`,
            "each round measures a broker's cases one after the other, each full-speed case at 3.1.1 and at MQTT 5 back to back (which goes first alternates by round); v5 / v3.1.1 is the median of the rounds' ratios (the lower middle of an even count): at full speed of the two measurements taken back to back, at the fixed rate of the two levels sharing the round's window, per round divides the two measurements of each round; at the fixed rate the broker µs/msg is its CPU over both levels' messages",
            `goals: throughput ≥ ${MQTT5_GOALS.throughput}x, p99 ≤ ${MQTT5_GOALS.p99}x; mosquitto is a reference, not judged; where a generator process saturated, a throughput ratio is the generator's, not the broker's`,
          ],
        },
      ],
      config: {
        shape: REFERENCE_SHAPE,
        cases: loadCases.map(({ qos, payloadBytes, ratePerSecond, protocolVersion }) => ({
          qos,
          payloadBytes,
          ratePerSecond: ratePerSecond ?? null,
          protocolVersion,
        })),
        fullSpeedWindows: {
          inflight: FULL_SPEED_WINDOW,
          endToEnd: FULL_SPEED_END_TO_END_WINDOW,
        },
        userProperty: "every other MQTT 5 PUBLISH",
        client: clientKind,
        goals: MQTT5_GOALS,
        warmupMs: options.warmupMs,
        measureMs: options.measureMs,
        rounds: options.rounds,
      },
    };
  },
};
