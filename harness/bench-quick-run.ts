import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findBroker } from "../bench/src/brokers/catalog.js";
import { CleanupRegistry } from "../bench/src/lifecycle/cleanup-registry.js";
import { findScenario } from "../bench/src/scenarios/registry.js";
import type { RunOptions, ScenarioOutput } from "../bench/src/scenarios/scenario.js";

/**
 * A scenario's --quick variant, run end to end in this process (the bench smoke tests): brokers
 * and generators start, figures come back, everything is stopped. Not performance.
 */
export async function runQuick(
  name: string,
  brokers: string[] = [],
  phases?: string[],
): Promise<ScenarioOutput> {
  const cleanup = new CleanupRegistry();
  const workDir = await mkdtemp(join(tmpdir(), `sluice-bench-${name}-`));
  const options: RunOptions = {
    quick: true,
    warmupMs: 300,
    measureMs: 1_000,
    rounds: 1,
    brokers: brokers.map(findBroker),
    publisherProcesses: 1,
    subscriberProcesses: 1,
    crossCheck: "none",
    ...(phases ? { phases } : {}),
  };
  try {
    return await findScenario(name).run({ options, cleanup, log: () => {}, workDir });
  } finally {
    await cleanup.stopAll();
    await rm(workDir, { recursive: true, force: true });
  }
}

/** Every row of the output's tables, asserting that there are some and that none has an error. */
export function onlyTableRows(output: ScenarioOutput): Array<Record<string, unknown>> {
  const rows = output.tables?.flatMap((t) => t.rows) ?? [];
  assert.ok(rows.length > 0, "the scenario reported rows");
  for (const row of rows) assert.equal(row.error ?? "", "", `no error: ${JSON.stringify(row)}`);
  return rows;
}
