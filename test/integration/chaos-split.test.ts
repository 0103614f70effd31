import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { splitClientId } from "../../harness/chaos-matrix.js";
import { broken, logReport, runChaos } from "../../harness/chaos-scenario.js";

/**
 * Issue 17, scenario 5: node-a is cut from Redis while both nodes keep their clients, and one
 * client id connects through each side: first to node-a, then, during the cut, to node-b, which
 * reaches Redis and takes the id over. node-a cannot hear the takeover until the heal. After it
 * at most one connection of the id is left (the newer), and the workload's properties hold.
 */
describe("chaos: one client id on both sides of a partition", () => {
  it("5 s cut, no fence: the takeover reaches node-a after the heal, the newer stays", async () => {
    const result = await runChaos(splitClientId(5_000));
    logReport(result);
    assert.deepEqual(broken(result), {});
    assert.equal(result.extra.newerConnected, true, "the newer connection (node-b) kept");
    assert.notEqual(result.extra.olderClosedAfterHealMs, undefined, "node-a held it to the heal");
  });

  it("5 s cut, 3 s lease: node-a fences and lets the older go during the cut", async () => {
    const result = await runChaos(splitClientId(5_000, 3));
    logReport(result);
    assert.deepEqual(broken(result), {});
    assert.equal(result.extra.newerConnected, true);
    assert.equal(result.extra.olderClosedAfterHealMs, undefined, "closed by the fence");
  });
});
