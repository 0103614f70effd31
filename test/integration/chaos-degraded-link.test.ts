import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { broken, type ChaosReport, printable, runChaos } from "../../harness/chaos-scenario.js";

/**
 * Issue 17, scenario 2: the nodes' links to Redis get slow (+50 ms, +500 ms each way, through a
 * delay relay: this kernel has no netem) or lossy (5 % of node-a's packets to and from Redis
 * dropped, by nftables) for 5 s, with the chaos workload running (see chaos-redis-cut).
 */
function report(result: ChaosReport): void {
  process.stdout.write(`# ${JSON.stringify(printable(result))}\n`);
}

const FAULT_MS = 5_000;

async function slowRedis(name: string, delayMs: number): Promise<ChaosReport> {
  return runChaos({
    name,
    cluster: { nodes: ["node-a", "node-b"], redisThroughRelay: true },
    watched: "node-a",
    fault: async (cluster) => {
      const relay = cluster.relay;
      if (!relay) throw new Error("no relay");
      relay.setDelay(delayMs);
      try {
        await new Promise((resolve) => setTimeout(resolve, FAULT_MS));
      } finally {
        relay.setDelay(0);
      }
    },
  });
}

describe("chaos: a slow or lossy link to Redis", () => {
  for (const delayMs of [50, 500]) {
    it(`+${delayMs} ms each way for 5 s: nothing acknowledged lost, no fence`, async () => {
      const result = await slowRedis(`redis-latency-${delayMs}ms`, delayMs);
      report(result);
      assert.deepEqual(broken(result), {});
      assert.equal(result.fencedAfterMs, undefined);
      assert.notEqual(result.recoveredAfterMs, undefined);
    });
  }

  it("5 % packet loss between node-a and Redis for 5 s: nothing acknowledged lost", async () => {
    const result = await runChaos({
      name: "redis-loss-5pct",
      cluster: { nodes: ["node-a", "node-b"] },
      watched: "node-a",
      fault: async ({ network }) => {
        await network.loss("node-a", "redis", 5, FAULT_MS).healed;
      },
    });
    report(result);
    assert.deepEqual(broken(result), {});
    assert.equal(result.fencedAfterMs, undefined);
    assert.notEqual(result.recoveredAfterMs, undefined);
  });
});
