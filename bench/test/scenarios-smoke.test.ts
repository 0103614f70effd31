import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { findBroker } from "../src/brokers/catalog.js";
import { CleanupRegistry } from "../src/lifecycle/cleanup-registry.js";
import { findScenario } from "../src/scenarios/registry.js";
import type { RunOptions, ScenarioOutput } from "../src/scenarios/scenario.js";

/**
 * The --quick variant of each scenario of the second half, end to end: brokers and
 * generators start, figures come back without errors, everything is stopped. Not performance.
 */
async function runQuick(name: string, brokers: string[] = []): Promise<ScenarioOutput> {
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
  };
  try {
    return await findScenario(name).run({ options, cleanup, log: () => {}, workDir });
  } finally {
    await cleanup.stopAll();
    await rm(workDir, { recursive: true, force: true });
  }
}

function onlyTableRows(output: ScenarioOutput): Array<Record<string, unknown>> {
  const rows = output.tables?.flatMap((t) => t.rows) ?? [];
  assert.ok(rows.length > 0, "the scenario reported rows");
  for (const row of rows) assert.equal(row.error ?? "", "", `no error: ${JSON.stringify(row)}`);
  return rows;
}

test("smoke - connections --quick connects its clients to Mosquitto and Sluice", async () => {
  const rows = onlyTableRows(await runQuick("connections", ["mosquitto", "sluice"]));
  for (const row of rows) {
    assert.equal(row.connections, 500);
    assert.ok(Number(row["connects/s"]) > 0);
    assert.equal(row["CONNACK 3"], 0);
  }
});

test("smoke - storm --quick brings the killed node's clients back on the survivor", async () => {
  const [row] = onlyTableRows(await runQuick("storm"));
  assert.equal(row?.dropped, 150);
  assert.equal(row?.["survivor crashed"], false);
  assert.ok(Number(row?.["all back (s)"]) >= 0);
});

test("smoke - failover --quick loses no acknowledged message when a node behind HAProxy dies", async () => {
  const [row] = onlyTableRows(await runQuick("failover"));
  assert.equal(row?.["lost (acknowledged)"], 0);
  assert.ok(Number(row?.acknowledged) > 0);
  assert.equal(row?.["survivor crashed"], false);
});

test("smoke - security-overhead --quick measures the open and the secured node", async () => {
  const rows = onlyTableRows(await runQuick("security-overhead"));
  assert.equal(rows.length, 2);
  for (const row of rows) {
    assert.ok(Number(row["msg/s"]) > 0);
    assert.equal(row.lost, 0);
  }
});
