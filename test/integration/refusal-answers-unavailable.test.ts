import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { LogCapture } from "../../harness/log-capture.js";
import { connect, end, type MqttClient } from "../../harness/mqtt-client.js";
import { RedisServer } from "../../harness/redis-server.js";
import { connackOver, mosquittoSub } from "../../harness/refusal-clients.js";

/**
 * Issue 15: a socket arriving while the node cannot serve (fenced from Redis, or starting: the
 * same refusal) is answered with 0x88 server unavailable (3.1.1: 3) within the answers' bounds;
 * socket-quota refusals leave a sampled debug line.
 */
function tcpOf(node: RunningNode): { url: string; port: number } {
  const url = node.urls.tcp as string;
  return { url, port: Number(new URL(url).port) };
}

describe("refusals while the node cannot serve", () => {
  it("fenced from Redis: MQTT.js v5 0x88 server unavailable with its reason string, v3.1.1 3, mosquitto_sub -V mqttv5 136", async () => {
    const redis = await RedisServer.start();
    const logs = new LogCapture("info");
    const node = await startNode(
      {
        redis: {
          url: redis.url,
          keyPrefix: `unavailable${Date.now().toString(36)}:`,
          // Fenced 1 s after the last round trip: well inside the pause below.
          fence: { afterMs: 1_000, probeMs: 100 },
        },
      },
      undefined,
      { logger: logs.logger },
    ).catch(async (error: unknown) => {
      await redis.stop();
      throw error;
    });
    try {
      // Redis stops answering (the connections stay open and silent, as in a partition).
      assert.equal(await redis.command("CLIENT", "PAUSE", "4000", "ALL"), "+OK");
      await withDeadline(
        logs.waitFor((l) => l.event === "redis.fenced"),
        10_000,
        "redis.fenced",
      );
      const { url, port } = tcpOf(node);
      const v5 = await connackOver(
        { url, fromAddress: "127.0.15.1" },
        { protocolVersion: 5, clientId: "while-fenced" },
      );
      assert.ok(v5 !== "closed");
      assert.equal(v5.reasonCode, 0x88);
      assert.equal(v5.properties?.reasonString, "server unavailable, retry later");
      const v4 = await connackOver(
        { url, fromAddress: "127.0.15.2" },
        { protocolVersion: 4, clientId: "while-fenced" },
      );
      assert.ok(v4 !== "closed");
      assert.equal(v4.returnCode, 3);
      const mosquitto5 = await mosquittoSub(port, "127.0.15.3", "mqttv5");
      assert.match(mosquitto5.output, /received CONNACK \(136\)/);
      // Served again once Redis answers; stopping a node whose Redis is paused would leave its
      // connections retrying.
      await withDeadline(
        logs.waitFor((l) => l.event === "redis.unfenced"),
        10_000,
        "redis.unfenced",
      );
    } finally {
      await node.stop();
      await redis.stop();
    }
  });
});

describe("socket-quota refusals in the log", () => {
  it("a sampled connection.rejected debug line: at most one a second, with the address, the quota and how many went unlogged", async () => {
    const logs = new LogCapture("debug");
    const node = await startNode({ limits: { connections: { perIp: 1 } } }, undefined, {
      logger: logs.logger,
    });
    let held: MqttClient | undefined;
    try {
      const { url } = tcpOf(node);
      held = await connect(url, { fromAddress: "127.0.15.9" });
      const started = Date.now();
      // 30 refusals from one address, one after the other (each answered: one place per refusal).
      for (let i = 0; i < 30; i++) {
        await connackOver({ url, fromAddress: "127.0.15.9" }, { protocolVersion: 5 });
      }
      const elapsed = Date.now() - started;
      const lines = logs.lines.filter(
        (l) => l.event === "connection.rejected" && l.reason === "per_ip",
      );
      assert.ok(lines.length >= 1, "at least the first refusal logged");
      assert.ok(
        lines.length <= Math.floor(elapsed / 1_000) + 1,
        `${lines.length} lines in ${elapsed} ms`,
      );
      assert.equal(lines[0]?.remoteAddress, "127.0.15.9");
      assert.equal(lines[0]?.listener, "tcp");
      const unlogged = lines.reduce((sum, l) => sum + Number(l.unlogged), 0);
      assert.ok(unlogged <= 30 - lines.length, `${unlogged} unlogged reported`);
    } finally {
      await end(held);
      await node.stop();
    }
  });
});
