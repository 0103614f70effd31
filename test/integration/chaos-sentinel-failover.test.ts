import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { sentinelFailover } from "../../harness/chaos-matrix.js";
import { broken, logReport, once, RESUME_RACE, runChaos } from "../../harness/chaos-scenario.js";

/**
 * Issue 17, scenario 4 (first half): Sentinel fails the Redis primary over under load (the
 * primary killed; Sentinel promotes the replica). Nodes on loopback (a Sentinel group there,
 * see harness/redis-sentinel.ts) behind HAProxy, the chaos workload running through it; one
 * will client is killed 100 ms after the primary.
 */
const run = once(() => runChaos(sentinelFailover()));

describe("chaos: Sentinel failover under load", () => {
  // Known besides the resume race: a will due while Redis is away is lost. aedes publishes it
  // and deletes the stored will whether or not the PUBLISH reached Redis (publishWill's
  // cleanup); engine work. Only that will may be missing: none published for anyone else.
  it("the primary is killed: the nodes follow the new primary, nothing acknowledged is lost", async () => {
    const result = await run();
    logReport(result);
    assert.deepEqual(broken(result, [...RESUME_RACE, "wills"]), {});
    const wills = result.violations.filter((v) => v.property === "wills").map((v) => v.detail);
    for (const detail of wills)
      assert.match(detail, /-will-1's will published 0 times \(expected once\)/);
    assert.equal(result.fencedAfterMs, undefined);
    assert.notEqual(result.extra.upAfterMs, undefined);
  });

  it(
    "sessions resumed after the failover keep order and QoS 2 once; the will goes out",
    { todo: "resume race, will lost in an outage" },
    async () => {
      const result = await run();
      assert.deepEqual(broken(result), {});
      assert.notEqual(result.recoveredAfterMs, undefined);
    },
  );
});
