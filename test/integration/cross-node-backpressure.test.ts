import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  assertAllInOrder,
  cpuQuotaUnavailable,
  type LoadNode,
  publishAll,
  saturatedBurst,
  startLoadNode,
} from "../../harness/backpressure-load.js";
import { withDeadline } from "../../harness/deadline.js";
import { connect, end, type MqttClient } from "../../harness/mqtt-client.js";
import { metricSum } from "../../harness/node-metrics.js";
import { RedisServer } from "../../harness/redis-server.js";
import type { SluiceProcess } from "../../harness/sluice-process.js";

/**
 * Backpressure across nodes (issue 14): publishers on node A, subscribers on node B, real
 * processes on one real Redis. A message published on A is read by B from Redis; when B cannot
 * keep up, A's publishers must slow to B's pace instead of A acknowledging what B then drops
 * from full queues (or what Redis cuts off with B's subscription).
 */
const LAG_BOUND = 256 * 1024;
const STALL_MS = 2_000;

let dir: string;
let redis: RedisServer;
const nodes: SluiceProcess[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-xbp-"));
  // No output-buffer limit: the stopped node's subscription must outlast the test's 24 MB.
  redis = await RedisServer.start({
    args: ["--client-output-buffer-limit", "pubsub", "0", "0", "0"],
  });
});
after(async () => {
  for (const node of nodes) {
    node.kill("SIGCONT");
    node.kill("SIGKILL");
    await node.exited;
  }
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

function startNode(nodeId: string, keyPrefix: string): Promise<LoadNode> {
  return startLoadNode(
    dir,
    nodeId,
    `url: "${redis.url}", keyPrefix: "${keyPrefix}", backpressure: { subscriptionLagBytes: ${LAG_BOUND}, waitingDeliveries: 200, remoteStallMs: ${STALL_MS} }`,
    nodes,
  );
}

/** Subscribers that record each publisher's sequence numbers in the order they arrive. */
async function subscribers(url: string, count: number, filter: string) {
  const clients: MqttClient[] = [];
  const got: Array<Map<string, number[]>> = [];
  for (let i = 0; i < count; i++) {
    const client = await connect(url, {
      clientId: `xbp-sub-${i}-${randomBytes(2).toString("hex")}`,
    });
    const seen = new Map<string, number[]>();
    client.on("message", (_topic, payload) => {
      const [publisher = "", sequence] = payload.toString().split(":");
      const list = seen.get(publisher) ?? [];
      seen.set(publisher, list);
      list.push(Number(sequence));
    });
    await client.subscribeAsync(filter, { qos: 1 });
    clients.push(client);
    got.push(seen);
  }
  return { clients, got };
}

describe("cluster backpressure across nodes", () => {
  it(
    "a saturated subscribers' node slows the other node's publishers: nothing acknowledged is dropped",
    { skip: cpuQuotaUnavailable() },
    async () => {
      const prefix = `x${randomBytes(3).toString("hex")}:`;
      const a = await startNode("node-a", prefix);
      const b = await startNode("node-b", prefix);
      await saturatedBurst(a, b, "xbp/sat");
    },
  );

  it("a stopped node holds the publishers for remoteStallMs, then no longer; resumed, it gets everything", async () => {
    const prefix = `y${randomBytes(3).toString("hex")}:`;
    const a = await startNode("node-a", prefix);
    const b = await startNode("node-b", prefix);
    const clients: MqttClient[] = [];
    try {
      const subs = await subscribers(b.url, 1, "xbp/stop/#");
      clients.push(...subs.clients);
      const publisher = await connect(a.url, { clientId: "xbp-stop-pub" });
      clients.push(publisher);
      const count = 6_000;
      b.process.kill("SIGSTOP");
      const startedAt = Date.now();
      // 6,000 x 4 KB: 24 MB, more than the kernel's socket buffers between Redis and B take
      // (up to 4 + 6 MB here), so Redis' output buffer for B grows.
      await withDeadline(
        publishAll(publisher, "p", "xbp/stop/t", count, 4_000),
        30_000,
        "every PUBACK once B no longer counts",
      );
      const tookMs = Date.now() - startedAt;
      const held = a.process.lines.find((l) => l.event === "cluster.backpressure");
      const stalled = a.process.lines.find((l) => l.event === "cluster.remote_lag_stalled");
      assert.equal(held?.laggingNode, "node-b", "A held its publishers for B");
      assert.equal(stalled?.node, "node-b", "then took B for stalled");
      assert.ok(tookMs >= STALL_MS, `the publisher was held ${tookMs} ms, at least ${STALL_MS}`);
      b.process.kill("SIGCONT");
      await withDeadline(
        (async () => {
          while (subs.got[0]?.get("p")?.length !== count)
            await new Promise((resolve) => setTimeout(resolve, 50));
        })(),
        30_000,
        "every message once B runs again",
      );
      assertAllInOrder(subs.got[0] as Map<string, number[]>, ["p"], count);
      await a.process.waitForEvent("cluster.remote_lag_draining");
      assert.equal(await metricSum(b.http, "sluice_redis_subscription_resets_total"), 0);
    } finally {
      b.process.kill("SIGCONT");
      await end(...clients);
    }
  });
});
