import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { broken, printable, runChaos } from "../../harness/chaos-scenario.js";

/**
 * Issue 17, scenario 4 (second half): Redis restarts without its data under load (killed, then
 * started empty on the same address). What it held is gone: sessions, queues, retained
 * messages, leases. The cluster must recover by itself: every node ready again, its lease taken
 * again, persistent subscribers back on new sessions (the pub/sub gap closes them; they
 * subscribe again), retained messages alike everywhere, no will for a client that kept its
 * connection, no QoS 2 duplicate. No-loss is checked for what was sent once the subscribers
 * were subscribed again: before that, Redis lost it by definition.
 */
describe("chaos: Redis restarts without its data", () => {
  it("the cluster recovers by itself; from the resubscription on, nothing is lost", async () => {
    let resubscribedAfterMs = 0;
    const result = await runChaos({
      name: "redis-restart-empty",
      cluster: { nodes: ["node-a", "node-b"] },
      fault: async (cluster, workload) => {
        const redis = cluster.redis;
        if (!redis) throw new Error("no redis");
        await redis.kill();
        await redis.start();
        const restartedAt = Date.now();
        await Promise.all(
          cluster.nodes.map((node) =>
            node.process.waitForLog(
              (l) => l.event === "node.lease_retaken" && Number(l.time) >= restartedAt,
            ),
          ),
        );
        await workload.resubscribedSince(restartedAt, 20_000);
        resubscribedAfterMs = Date.now() - restartedAt;
        workload.lostBefore(Date.now());
        // Traffic on the new sessions before the heal is declared.
        await new Promise((resolve) => setTimeout(resolve, 1_000));
      },
    });
    process.stdout.write(`# ${JSON.stringify({ ...printable(result), resubscribedAfterMs })}\n`);
    assert.deepEqual(broken(result), {});
    assert.notEqual(result.recoveredAfterMs, undefined);
  });
});
