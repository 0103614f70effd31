import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { redisLatency, redisLoss } from "../../harness/chaos-matrix.js";
import { broken, logReport, runChaos } from "../../harness/chaos-scenario.js";

/**
 * Issue 17, scenario 2: the nodes' links to Redis get slow (+50 ms, +500 ms each way, through a
 * delay relay: this kernel has no netem) or lossy (5 % of node-a's packets to and from Redis
 * dropped, by nftables) for 5 s, with the chaos workload running (see chaos-redis-cut).
 */
describe("chaos: a slow or lossy link to Redis", () => {
  for (const scenario of [redisLatency(50), redisLatency(500), redisLoss(5)]) {
    it(`${scenario.name} for 5 s: nothing acknowledged lost, no fence`, async () => {
      const result = await runChaos(scenario);
      logReport(result);
      assert.deepEqual(broken(result), {});
      assert.equal(result.fencedAfterMs, undefined);
      assert.notEqual(result.recoveredAfterMs, undefined);
    });
  }
});
