import { BROKERS } from "../brokers/catalog.js";
import { type LoadCase, measureBrokers } from "./measure-brokers.js";
import type { RunOptions, Scenario, ScenarioOutput } from "./scenario.js";
import { REFERENCE_SHAPE } from "./throughput.js";

/**
 * A moderate fixed rate every broker here sustains, so latency is the broker's path and not
 * a queue in front of a saturated one.
 */
export const LATENCY_RATE = 5_000;
/** A window large enough that it never throttles the rate: it only bounds a stalled broker. */
const LATENCY_WINDOW = 1_000;

/** The scenario's case: the reference shape, 64 B at LATENCY_RATE. */
export function fixedRateCase(options: RunOptions, qos: 0 | 1): LoadCase {
  return {
    ...REFERENCE_SHAPE,
    qos,
    payloadBytes: 64,
    ratePerSecond: LATENCY_RATE,
    inflightWindow: LATENCY_WINDOW,
    endToEndWindow: LATENCY_WINDOW,
    warmupMs: options.warmupMs,
    measureMs: options.measureMs,
    publisherProcesses: options.publisherProcesses,
    subscriberProcesses: options.subscriberProcesses,
  };
}

export const latency: Scenario = {
  name: "latency",
  description: `p50/p99/p99.9 at ${LATENCY_RATE.toLocaleString("en-US")} msg/s, 10 -> 10 pairwise, 64 B, QoS 0 and 1`,
  inDefaultSet: true,
  nodeCpu: true,
  async run(context): Promise<ScenarioOutput> {
    const { options } = context;
    const loadCases: LoadCase[] = ([0, 1] as const).map((qos) => fixedRateCase(options, qos));
    const brokers = options.brokers.length > 0 ? options.brokers : BROKERS;
    const rows = await measureBrokers(context, brokers, {
      scenario: "latency",
      cases: loadCases,
      medianBy: "p99Ms",
    });
    return {
      rows,
      config: {
        shape: REFERENCE_SHAPE,
        ratePerSecond: LATENCY_RATE,
        inflightWindow: LATENCY_WINDOW,
        warmupMs: options.warmupMs,
        measureMs: options.measureMs,
        rounds: options.rounds,
      },
    };
  },
};
