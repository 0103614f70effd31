import { BROKERS } from "../brokers/catalog.js";
import { crossCheckThroughput } from "../crosscheck/cross-check.js";
import { type LoadCase, measureBrokers } from "./measure-brokers.js";
import type { RunOptions, Scenario, ScenarioContext, ScenarioOutput } from "./scenario.js";

/** The reference load: 10 publishers, each to its own subscriber. */
export const REFERENCE_SHAPE = { publishers: 10, subscribers: 10, pattern: "pairwise" } as const;
/** Unacknowledged messages per publisher at full speed (and unflushed writes at QoS 0). */
export const FULL_SPEED_WINDOW = 100;
/**
 * Messages per publisher not yet received by its subscriber. Large enough that the 20 ms
 * feedback never idles a publisher, small enough that the broker's queues stay short: the
 * figure is what a broker delivers, not how much it buffers.
 */
export const FULL_SPEED_END_TO_END_WINDOW = 500;

/** Full speed within both windows, timed and spread over processes as the run says. */
export function fullSpeedLoad(
  options: RunOptions,
): Pick<
  LoadCase,
  | "inflightWindow"
  | "endToEndWindow"
  | "warmupMs"
  | "measureMs"
  | "publisherProcesses"
  | "subscriberProcesses"
> {
  return {
    inflightWindow: FULL_SPEED_WINDOW,
    endToEndWindow: FULL_SPEED_END_TO_END_WINDOW,
    warmupMs: options.warmupMs,
    measureMs: options.measureMs,
    publisherProcesses: options.publisherProcesses,
    subscriberProcesses: options.subscriberProcesses,
  };
}

/** The scenario's case: the reference shape at full speed, within both windows. */
export function fullSpeedCase(options: RunOptions, qos: 0 | 1, payloadBytes: number): LoadCase {
  return { ...REFERENCE_SHAPE, qos, payloadBytes, ...fullSpeedLoad(options) };
}

function cases(context: ScenarioContext): LoadCase[] {
  const { options } = context;
  const sizes = options.quick ? [64] : [64, 1024];
  return sizes.flatMap((payloadBytes) =>
    ([0, 1] as const).map((qos) => fullSpeedCase(options, qos, payloadBytes)),
  );
}

export const throughput: Scenario = {
  name: "throughput",
  description:
    "full speed, 10 publishers -> 10 subscribers (pairwise topics), QoS 0 and 1, 64 B and 1 KiB",
  inDefaultSet: true,
  nodeCpu: true,
  async run(context): Promise<ScenarioOutput> {
    const loadCases = cases(context);
    const brokers = context.options.brokers.length > 0 ? context.options.brokers : BROKERS;
    const { crossCheck } = context.options;
    const rows = await measureBrokers(context, brokers, {
      scenario: "throughput",
      cases: loadCases,
      medianBy: "messagesPerSecond",
      ...(crossCheck === "none"
        ? {}
        : {
            crossCheck: (broker, loadCase) =>
              crossCheck === "all" || loadCase.payloadBytes === 64
                ? crossCheckThroughput(context, broker, loadCase)
                : Promise.resolve([]),
          }),
    });
    return {
      rows,
      config: {
        shape: REFERENCE_SHAPE,
        inflightWindow: FULL_SPEED_WINDOW,
        endToEndWindow: FULL_SPEED_END_TO_END_WINDOW,
        cases: loadCases.map(({ qos, payloadBytes }) => ({ qos, payloadBytes })),
        warmupMs: context.options.warmupMs,
        measureMs: context.options.measureMs,
        rounds: context.options.rounds,
        crossCheck,
      },
    };
  },
};
