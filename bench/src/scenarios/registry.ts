import { connections } from "./connections.js";
import { latency } from "./latency.js";
import type { Scenario } from "./scenario.js";
import { stormScenario } from "./storm.js";
import { throughput } from "./throughput.js";

/**
 * Every scenario `npm run bench -- <name>` knows. The second half of the issue (connections,
 * storm, failover, security-overhead) adds its scenarios here; each gets the same context
 * (options, cleanup registry, progress log) and returns rows for the same report.
 */
export const SCENARIOS: readonly Scenario[] = [throughput, latency, connections, stormScenario];

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
