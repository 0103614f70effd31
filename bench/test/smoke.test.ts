import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { sluice } from "../src/brokers/sluice.js";
import { runLoad } from "../src/generator/load-run.js";
import { CleanupRegistry } from "../src/lifecycle/cleanup-registry.js";

/**
 * CI-sized: the generator against one in-memory Sluice node for 1 s. Proves the whole chain
 * (broker start, generator processes, payload stamps, accounting, teardown), not performance.
 */
test("smoke - the generator delivers through one in-memory Sluice node with nothing lost", async () => {
  const cleanup = new CleanupRegistry();
  const workDir = await mkdtemp(join(tmpdir(), "sluice-bench-smoke-"));
  try {
    const broker = await sluice.start({ cleanup, workDir });
    for (const qos of [0, 1] as const) {
      const result = await runLoad(
        {
          publishers: 4,
          subscribers: 4,
          pattern: "pairwise",
          qos,
          payloadBytes: 64,
          ratePerSecond: 2_000,
          inflightWindow: 100,
          endToEndWindow: 500,
          warmupMs: 250,
          measureMs: 1_000,
          publisherProcesses: 1,
          subscriberProcesses: 1,
          publisherUrls: broker.publisherUrls,
          subscriberUrls: broker.subscriberUrls,
        },
        cleanup,
        { watch: broker.processes },
      );
      assert.ok(result.published > 0, "messages were published");
      assert.ok(result.messagesPerSecond > 0, "messages were delivered in the window");
      assert.equal(result.lost, 0, `QoS ${qos}: nothing lost`);
      assert.equal(result.duplicates, 0, `QoS ${qos}: no duplicates`);
      assert.equal(result.subscriptions.length, 4);
      assert.ok(result.latency.samples > 0 && result.latency.p50Ms > 0);
      assert.equal(result.generatorCpu.publisherProcesses.length, 1);
    }
  } finally {
    await cleanup.stopAll();
    await rm(workDir, { recursive: true, force: true });
  }
});
