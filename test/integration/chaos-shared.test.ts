import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { lbCut, nodeKill, redisCut, sentinelFailover } from "../../harness/chaos-matrix.js";
import {
  type ChaosReport,
  type ChaosScenario,
  logReport,
  once,
  runChaos,
} from "../../harness/chaos-scenario.js";
import { tally } from "../../harness/history.js";

/**
 * Issue 17's shared-subscription property under faults: four members of one group
 * (`$share/<run>g/<run>/data/#`, QoS 2, persistent sessions) connect through HAProxy, so round
 * robin spreads them over both nodes, beside the chaos workload; one member's connection is
 * dropped 100 ms into each fault. The history checks docs/shared-subscriptions.md's guarantees:
 * every acknowledged QoS 1/2 message reaches a member and nothing is left in Redis
 * (shared-stranded), a message reaches one member unless one that had it lost its connection
 * (shared-one-member; such copies are counted as redeliveries), and a QoS 2 message never
 * reaches one member twice (shared-qos2-once). Faults: node-a cut from Redis past its fence,
 * node-a cut from HAProxy, a Sentinel failover, node-a killed and restarted. The chaos tests of
 * the same faults check the other properties (the known resume race breaks order there).
 */
const SHARED = ["shared-stranded", "shared-one-member", "shared-qos2-once"];

function withMembers(scenario: ChaosScenario): ChaosScenario {
  return { ...scenario, workload: { ...scenario.workload, sharedMembers: 4 } };
}

function sharedBroken(report: ChaosReport, except: string[] = []): ReturnType<typeof tally> {
  return tally(
    report.violations.filter((v) => SHARED.includes(v.property) && !except.includes(v.property)),
  );
}

const failover = once(() => runChaos(withMembers(sentinelFailover())));

function isQos2Once(violation: ChaosReport["violations"][number]): boolean {
  return violation.property === "shared-qos2-once";
}

function assertSpread(report: ChaosReport): void {
  const counts = Object.values(report.sharedSpread);
  assert.equal(counts.length, 2, JSON.stringify(report.sharedSpread));
  assert.ok(
    counts.every((n) => n > 0),
    `members on both nodes: ${JSON.stringify(report.sharedSpread)}`,
  );
}

describe("chaos: shared subscriptions under faults", () => {
  it("node-a cut from Redis past its fence (3 s lease): its members move, nothing stranded", async () => {
    const report = await runChaos(withMembers(redisCut(5_000, 3)));
    logReport(report);
    assertSpread(report);
    assert.deepEqual(sharedBroken(report), {});
    assert.ok(report.summary.shared.delivered > 0);
    assert.notEqual(report.recoveredAfterMs, undefined);
  });

  it("node-a cut from the load balancer: members reconnect to node-b, nothing stranded", async () => {
    const report = await runChaos(withMembers(lbCut(5_000)));
    logReport(report);
    assertSpread(report);
    assert.deepEqual(sharedBroken(report), {});
    assert.ok(report.summary.shared.delivered > 0);
    assert.notEqual(report.recoveredAfterMs, undefined);
  });

  it("Sentinel failover under load: one member per message, nothing stranded", async () => {
    const report = await failover();
    logReport(report);
    assertSpread(report);
    // QoS 2 once per member: the next test.
    assert.deepEqual(sharedBroken(report, ["shared-qos2-once"]), {});
    assert.ok(report.summary.shared.delivered > 0);
  });

  // A member that PUBRECs a QoS 2 delivery as the primary dies: its session notes the message
  // with the PUBREL, so an entry whose group acknowledgement failed is removed, not sent to it
  // again (shared-qos2-ack-failure.test.ts shows it deterministically).
  it("Sentinel failover: a QoS 2 message never reaches one member twice", async () => {
    assert.deepEqual(tally((await failover()).violations.filter(isQos2Once)), {});
  });

  it("node-a killed (SIGKILL, 3 s lease): its members resume on node-b, nothing stranded", async () => {
    const report = await runChaos(withMembers(nodeKill(3)));
    logReport(report);
    assertSpread(report);
    assert.deepEqual(sharedBroken(report), {});
    assert.ok(report.summary.shared.delivered > 0);
    assert.notEqual(report.recoveredAfterMs, undefined);
  });
});
