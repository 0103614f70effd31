import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  cpuQuotaUnavailable,
  type LoadNode,
  saturatedBurst,
  startLoadNode,
} from "../../harness/backpressure-load.js";
import { RedisCluster } from "../../harness/redis-cluster.js";
import type { SluiceProcess } from "../../harness/sluice-process.js";

/**
 * Backpressure across nodes on a real Redis Cluster (three primaries), real node processes:
 * each node's subscription is sharded, one connection per primary. Publishers on node A,
 * subscribers on node B: when B cannot keep up, it stops reading every shard connection and
 * says so, and A's publishers slow to B's pace, instead of A acknowledging what B then drops
 * from full queues (or what Redis cuts off with B's subscription). Redis' output-buffer limits
 * are its defaults.
 */
const LAG_BOUND = 256 * 1024;

let dir: string;
let cluster: RedisCluster;
const nodes: SluiceProcess[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-cbp-"));
  cluster = await RedisCluster.start();
});
after(async () => {
  for (const node of nodes) {
    node.kill("SIGKILL");
    await node.exited;
  }
  await cluster?.stop();
  await rm(dir, { recursive: true, force: true });
});

function startNode(nodeId: string, keyPrefix: string): Promise<LoadNode> {
  const seeds = cluster.nodes.map(({ host, port }) => `{ host: ${host}, port: ${port} }`);
  return startLoadNode(
    dir,
    nodeId,
    `cluster: [${seeds.join(", ")}], keyPrefix: "${keyPrefix}", ` +
      `backpressure: { subscriptionLagBytes: ${LAG_BOUND}, waitingDeliveries: 200 }`,
    nodes,
  );
}

describe("cluster backpressure across nodes on a Redis Cluster", () => {
  it(
    "a saturated subscribers' node pauses its shard connections and slows the other node's publishers: nothing acknowledged is dropped",
    { skip: cpuQuotaUnavailable() },
    async () => {
      const prefix = `c${randomBytes(3).toString("hex")}:`;
      const a = await startNode("node-a", prefix);
      const b = await startNode("node-b", prefix);
      await saturatedBurst(a, b, "cbp/sat");
    },
  );
});
