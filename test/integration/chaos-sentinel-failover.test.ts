import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { sentinelFailover } from "../../harness/chaos-matrix.js";
import { broken, logReport, once, RESUME_RACE, runChaos } from "../../harness/chaos-scenario.js";

/**
 * Issue 17, scenario 4 (first half): Sentinel fails the Redis primary over under load (the
 * primary killed; Sentinel promotes the replica). Nodes on loopback (a Sentinel group there,
 * see harness/redis-sentinel.ts) behind HAProxy, the chaos workload running through it.
 */
const run = once(() => runChaos(sentinelFailover()));

describe("chaos: Sentinel failover under load", () => {
  // The pub/sub gap moves persistent sessions to their stored queues: the resume race shows.
  it("the primary is killed: the nodes follow the new primary, nothing acknowledged is lost", async () => {
    const result = await run();
    logReport(result);
    assert.deepEqual(broken(result, RESUME_RACE), {});
    assert.equal(result.fencedAfterMs, undefined);
    assert.notEqual(result.recoveredAfterMs, undefined);
  });

  it(
    "sessions resumed after the failover keep order and QoS 2 once",
    { todo: "resume race" },
    async () => {
      assert.deepEqual(broken(await run()), {});
    },
  );
});
