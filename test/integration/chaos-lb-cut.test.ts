import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { lbCut } from "../../harness/chaos-matrix.js";
import { broken, logReport, once, RESUME_RACE, runChaos } from "../../harness/chaos-scenario.js";

/**
 * Issue 17, scenario 3: node-a cut from the load balancer (and the test's clients) for 5 s
 * while it still reaches Redis. HAProxy's health checks fail, it drops the sessions it relayed
 * to node-a, and the clients reconnect through it to node-b, while node-a still holds their old
 * connections (nothing reaches it to say they are gone). Their new CONNECTs take the client ids
 * over, and node-a closes the old connections. After the heal at most one connection per client
 * id is left (the history's one-session check), and nothing acknowledged is lost.
 */
const run = once(() => runChaos(lbCut(5_000)));

describe("chaos: a node cut from the load balancer", () => {
  it("clients move to node-b, node-a closes the connections it still held", async () => {
    const result = await run();
    logReport(result);
    assert.deepEqual(broken(result, RESUME_RACE), {});
    assert.ok(Number(result.extra.takenOverOnA) > 0, "node-a closed connections taken over");
    assert.notEqual(result.recoveredAfterMs, undefined);
  });

  // A moved session's queue goes out before its live messages, each once (engine/resume-gate.ts).
  it("sessions that move keep order and QoS 2 once", async () => {
    assert.deepEqual(broken(await run()), {});
  });
});
