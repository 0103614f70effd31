import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { redisRestartEmpty } from "../../harness/chaos-matrix.js";
import { broken, logReport, runChaos } from "../../harness/chaos-scenario.js";

/**
 * Issue 17, scenario 4 (second half): Redis restarts without its data under load (killed, then
 * started empty on the same address). What it held is gone: sessions, queues, retained
 * messages, leases. The cluster must recover by itself: every node takes its lease again,
 * persistent subscribers are back on new sessions (the pub/sub gap closes them; they subscribe
 * again), retained messages alike everywhere, no will for a client that kept its connection,
 * no QoS 2 duplicate. No-loss is checked for what was sent once the subscribers were subscribed
 * again: before that, Redis lost it by definition.
 */
describe("chaos: Redis restarts without its data", () => {
  it("the cluster recovers by itself; from the resubscription on, nothing is lost", async () => {
    const result = await runChaos(redisRestartEmpty());
    logReport(result);
    assert.deepEqual(broken(result), {});
    assert.notEqual(result.recoveredAfterMs, undefined);
  });
});
