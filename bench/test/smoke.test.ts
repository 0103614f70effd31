import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { connect, Inbox } from "../../harness/mqtt-client.js";
import { sluice } from "../src/brokers/sluice.js";
import { runLoad } from "../src/generator/load-run.js";
import { readStamp } from "../src/generator/payload.js";
import { PublisherLoop } from "../src/generator/publisher-loop.js";
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

test("smoke - an MQTT 5 publisher tags every other PUBLISH with one user property, which a Sluice node forwards", async () => {
  const cleanup = new CleanupRegistry();
  const workDir = await mkdtemp(join(tmpdir(), "sluice-bench-smoke-v5-"));
  try {
    const broker = await sluice.start({ cleanup, workDir });
    const url = broker.publisherUrls[0] ?? "";
    const topic = "bench/smoke-v5/p/0";
    const subscriber = await connect(url, { clientId: "smoke-v5-s", protocolVersion: 5 });
    const publisher = await connect(url, { clientId: "smoke-v5-p", protocolVersion: 5 });
    cleanup.add("smoke v5 clients", async () => {
      subscriber.end(true);
      publisher.end(true);
    });
    const inbox = new Inbox(subscriber);
    await subscriber.subscribeAsync(topic, { qos: 1 });
    const loop = new PublisherLoop(publisher, 0, topic, 1, 64, 10, 10, undefined, 4, 5);
    loop.start();
    const received = await inbox.waitFor(4);
    await loop.stop(5_000);
    assert.equal(loop.acknowledged, 4, "every QoS 1 PUBLISH was acknowledged");
    for (const { payload, packet } of received) {
      const sequence = readStamp(payload)?.sequence ?? -1;
      const expected = sequence % 2 === 1 ? { site: "plant-7/line-3" } : undefined;
      const tags = packet.properties?.userProperties;
      // mqtt-packet parses user properties into a null-prototype object
      assert.deepEqual(
        tags === undefined ? undefined : { ...tags },
        expected,
        `message ${sequence}`,
      );
    }
  } finally {
    await cleanup.stopAll();
    await rm(workDir, { recursive: true, force: true });
  }
});
