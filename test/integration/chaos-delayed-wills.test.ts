import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ChaosCluster } from "../../harness/chaos-cluster.js";
import { withDeadline } from "../../harness/deadline.js";
import { end } from "../../harness/mqtt-client.js";
import { openV5, pause, type V5Session } from "../../harness/mqtt5-session.js";
import type { RedisServer } from "../../harness/redis-server.js";
import type { LogLine } from "../../harness/sluice-process.js";

/**
 * Issue 17 and 15: MQTT 5 delayed wills (Will Delay Interval) of a node's clients, at the default
 * heartbeat (1 s). While node-a is only cut from Redis (both ways, in network namespaces;
 * shorter than its fence), node-b counts it dead by its heartbeats, but Redis still lists
 * node-a's connections and its lease stands, so no will goes out: its clients are still
 * connected. After a SIGKILL of node-a, node-b publishes the delayed will once, its delay after
 * the death was known (by node-a's connections, within about 3 s), and the no-delay will at once.
 * The lease is 30 s so that the fence (after two thirds of it) stays out of the cut and of the
 * seconds TCP takes to resume after it.
 */
const WILL_DELAY_SECONDS = 2;
/** Longer than 3 heartbeats, the survivors' checks and the will delay together. */
const CUT_MS = 8_000;
/** The death known (3 heartbeats and a quarter) on a noisy machine. */
const DEATH_MS = 4_500;

describe("chaos: delayed wills of a node cut from Redis, then killed", () => {
  let cluster: ChaosCluster;
  before(async () => {
    cluster = await ChaosCluster.start({
      nodes: ["node-a", "node-b"],
      redisConfig: "  nodeLeaseSeconds: 30",
    });
  });
  after(async () => {
    await cluster?.stop();
  });

  const lines = (name: string): LogLine[] => cluster.node(name).process.lines;
  const willsPublishedBy = (name: string) =>
    lines(name).filter((l) => l.event === "client.will_published").length;

  it("none during the cut, though node-b counted node-a dead; each once after a SIGKILL", async () => {
    const b = cluster.node("node-b").process;
    await withDeadline(
      b.waitForLog((l) => l.event === "node.heard" && l.nodeId === "node-a"),
      5_000,
      "node-b heard node-a",
    );
    const watcher = await openV5(cluster.node("node-b").url, "watcher", { cleanStart: true });
    await watcher.client.subscribeAsync("status/#", { qos: 1 });
    const will = (id: string, delay: number) => ({
      topic: `status/${id}`,
      payload: Buffer.from(`${id} offline`),
      qos: 1 as const,
      retain: false,
      ...(delay > 0 ? { properties: { willDelayInterval: delay } } : {}),
    });
    const devices: V5Session[] = [];
    const aUrl = cluster.node("node-a").url;
    devices.push(
      await openV5(aUrl, "delayed", {
        cleanStart: true,
        expiry: 60,
        will: will("delayed", WILL_DELAY_SECONDS),
      }),
    );
    devices.push(
      await openV5(aUrl, "prompt", { cleanStart: true, expiry: 60, will: will("prompt", 0) }),
    );
    try {
      const heardBefore = new Set(lines("node-b").filter((l) => l.event === "node.heard"));
      const cut = cluster.network.cut("node-a", "redis", CUT_MS);
      await cut.applied;
      await withDeadline(
        b.waitForLog((l) => l.event === "node.silent" && l.nodeId === "node-a"),
        DEATH_MS + 1_000,
        "node-b counted node-a dead",
      );
      await cut.healed;
      await withDeadline(
        b.waitForLog(
          (l) => l.event === "node.heard" && l.nodeId === "node-a" && !heardBefore.has(l),
        ),
        // TCP's retransmission backoff: the heartbeats resume seconds after the heal.
        15_000,
        "node-b heard node-a again",
      );
      // The delayed will would have fallen due by now, had node-b scheduled it at the silence;
      // the timers' poll and aedes' will sweep (every 4 heartbeats) come round in this wait.
      await pause((WILL_DELAY_SECONDS + 4) * 1_000);
      assert.equal(watcher.inbox.received.length, 0, "no will while node-a held the clients");
      assert.equal(willsPublishedBy("node-b"), 0);
      for (const device of devices) assert.equal(device.client.connected, true, "still connected");
      assert.equal(await cluster.leaseGone("node-a"), false, "node-a kept its lease");
      // Nor was the delayed will scheduled, nor taken off the index a dead node's sweep reads.
      const redis = cluster.redis as RedisServer;
      const { keyPrefix } = cluster;
      assert.equal(await redis.command("ZSCORE", `${keyPrefix}session-timers`, "w|delayed"), "$-1");
      assert.equal(
        await redis.command("SISMEMBER", `${keyPrefix}persistence:wills`, "node-a:delayed"),
        ":1",
      );

      const killedAt = Date.now();
      const a = cluster.node("node-a").process;
      a.kill("SIGKILL");
      await a.exited;
      const [first] = await withDeadline(watcher.inbox.waitFor(1), DEATH_MS, "the prompt will");
      assert.equal(first?.topic, "status/prompt");
      const [, delayed] = await withDeadline(
        watcher.inbox.waitFor(2),
        DEATH_MS + WILL_DELAY_SECONDS * 1_000 + 1_500,
        "the delayed will",
      );
      const delayedAfter = Date.now() - killedAt;
      assert.equal(delayed?.topic, "status/delayed");
      assert.ok(
        delayedAfter >= WILL_DELAY_SECONDS * 1_000 + 2_000 &&
          delayedAfter <= DEATH_MS + WILL_DELAY_SECONDS * 1_000 + 1_000,
        `the delayed will ${delayedAfter} ms after the kill: its delay counted from the death`,
      );
      // Two passes of aedes' will sweep and of the timers' poll: a second copy would show.
      await pause(9_000);
      assert.deepEqual(
        watcher.inbox.received.map((m) => m.topic),
        ["status/prompt", "status/delayed"],
        "each will once",
      );
      assert.equal(willsPublishedBy("node-b"), 2);
      process.stdout.write(
        `# after SIGKILL: prompt will and delayed (${WILL_DELAY_SECONDS} s) will at ${delayedAfter} ms\n`,
      );
    } finally {
      await cluster.healAll();
      await end(watcher.client);
      for (const device of devices) device.client.end(true);
    }
  });
});
