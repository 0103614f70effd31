import { chaosScenario } from "./chaos.js";
import { clusterCost } from "./cluster-cost.js";
import { connections } from "./connections.js";
import { failoverScenario } from "./failover.js";
import { floodScenario } from "./flood.js";
import { latency } from "./latency.js";
import { mqtt5 } from "./mqtt5.js";
import type { Scenario } from "./scenario.js";
import { securityOverhead } from "./security-overhead.js";
import { shared } from "./shared.js";
import { stormScenario } from "./storm.js";
import { subscribeStorm } from "./subscribe-storm.js";
import { throughput } from "./throughput.js";

/**
 * Every scenario `npm run bench -- <name>` knows. Each gets the same context (options,
 * cleanup registry, progress log); message-rate scenarios return rows, the others (connections,
 * storm, subscribe-storm, failover, security-overhead, flood) their own tables, cluster-cost and
 * mqtt5 and shared both, all in the same JSON/Markdown report.
 */
export const SCENARIOS: readonly Scenario[] = [
  throughput,
  latency,
  connections,
  stormScenario,
  subscribeStorm,
  failoverScenario,
  securityOverhead,
  floodScenario,
  clusterCost,
  mqtt5,
  shared,
  chaosScenario,
];

export function findScenario(name: string): Scenario {
  const scenario = SCENARIOS.find((s) => s.name === name);
  if (!scenario)
    throw new Error(
      `unknown scenario "${name}"; known: ${SCENARIOS.map((s) => s.name).join(", ")}`,
    );
  return scenario;
}

export function defaultScenarios(): Scenario[] {
  return SCENARIOS.filter((s) => s.inDefaultSet);
}
