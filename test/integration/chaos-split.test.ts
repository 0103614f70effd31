import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { MqttClient } from "mqtt";
import {
  broken,
  type ChaosReport,
  printable,
  RESUME_RACE,
  runChaos,
} from "../../harness/chaos-scenario.js";
import { withDeadline } from "../../harness/deadline.js";
import { closedAfter, connect } from "../../harness/mqtt-client.js";

/**
 * Issue 17, scenario 5: node-a is cut from Redis while both nodes keep their clients, and one
 * client id connects through each side: first to node-a, then, during the cut, to node-b, which
 * reaches Redis and takes the id over. node-a cannot hear the takeover until the heal. After it
 * at most one connection of the id is left (the newer), and the workload's properties hold.
 */
interface SplitResult {
  result: ChaosReport;
  /** From the heal until node-a closed the older connection (undefined: it was closed before). */
  olderClosedAfterHealMs: number | undefined;
  newerStillConnected: boolean;
}

async function split(name: string, redisConfig?: string): Promise<SplitResult> {
  let older: MqttClient | undefined;
  let newer: MqttClient | undefined;
  let olderClosedAfterHealMs: number | undefined;
  let newerStillConnected = false;
  const result = await runChaos({
    name,
    cluster: { nodes: ["node-a", "node-b"], ...(redisConfig ? { redisConfig } : {}) },
    watched: "node-a",
    fault: async (cluster, workload) => {
      const id = `${workload.run}-twin`;
      const options = { clientId: id, clean: false, reconnectPeriod: 0 };
      try {
        older = await connect(cluster.node("node-a").url, options);
        older.on("error", () => {});
        const cut = cluster.network.cut("node-a", "redis", 5_000);
        await cut.applied;
        newer = await connect(cluster.node("node-b").url, options);
        newer.on("error", () => {});
        await cut.healed;
        const healedAt = Date.now();
        const wasOpen = older.connected;
        const closedAt = await withDeadline(closedAfter(older, healedAt), 20_000, "older closed");
        olderClosedAfterHealMs = wasOpen ? closedAt : undefined;
        newerStillConnected = newer.connected;
      } finally {
        older?.end(true);
        newer?.end(true);
      }
    },
  });
  return { result, olderClosedAfterHealMs, newerStillConnected };
}

function report(outcome: SplitResult): void {
  const { result, ...rest } = outcome;
  process.stdout.write(`# ${JSON.stringify({ ...printable(result), ...rest })}\n`);
}

describe("chaos: one client id on both sides of a partition", () => {
  it("5 s cut, no fence: the takeover reaches node-a after the heal, the newer stays", async () => {
    const outcome = await split("split-id-5s");
    report(outcome);
    assert.deepEqual(broken(outcome.result), {});
    assert.equal(outcome.newerStillConnected, true, "the newer connection (node-b) kept");
    assert.notEqual(
      outcome.olderClosedAfterHealMs,
      undefined,
      "node-a held the older until the heal",
    );
  });

  it("5 s cut, 3 s lease: node-a fences and lets the older go during the cut", async () => {
    const outcome = await split("split-id-5s-fenced", "  nodeLeaseSeconds: 3\n  heartbeatMs: 250");
    report(outcome);
    assert.deepEqual(broken(outcome.result, RESUME_RACE), {});
    assert.equal(outcome.newerStillConnected, true);
    assert.equal(outcome.olderClosedAfterHealMs, undefined, "closed by the fence, before the heal");
  });
});
