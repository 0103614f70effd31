import assert from "node:assert/strict";
import { describe, it } from "node:test";
import mqtt from "mqtt";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { LogCapture } from "../../harness/log-capture.js";
import { connect, end, type MqttClient } from "../../harness/mqtt-client.js";
import { RedisServer } from "../../harness/redis-server.js";
import { connackOver, mosquittoSub } from "../../harness/refusal-clients.js";

/**
 * A socket arriving while the node cannot serve (fenced from Redis, or starting: the same path)
 * is closed without a CONNACK: a passing state, where a closed connection is what clients retry
 * and a CONNACK refusal is final to MQTT.js (it stops reconnecting unless told otherwise).
 * Socket-quota refusals leave a sampled debug line.
 */
function tcpOf(node: RunningNode): { url: string; port: number } {
  const url = node.urls.tcp as string;
  return { url, port: Number(new URL(url).port) };
}

describe("refusals while the node cannot serve", () => {
  it("fenced from Redis: new sockets are closed without a CONNACK, and a client retrying gets in once the fence lifts", async () => {
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
    let retrying: MqttClient | undefined;
    try {
      // Redis stops answering (the connections stay open and silent, as in a partition).
      assert.equal(await redis.command("CLIENT", "PAUSE", "4000", "ALL"), "+OK");
      await withDeadline(
        logs.waitFor((l) => l.event === "redis.fenced"),
        10_000,
        "redis.fenced",
      );
      const { url, port } = tcpOf(node);
      for (const [address, protocolVersion] of [
        ["127.0.15.1", 5],
        ["127.0.15.2", 4],
      ] as const) {
        const answer = await connackOver(
          { url, fromAddress: address },
          { protocolVersion, clientId: "while-fenced" },
        );
        assert.equal(answer, "closed", `MQTT ${protocolVersion}`);
      }
      const mosquitto5 = await mosquittoSub(port, "127.0.15.3", "mqttv5");
      // mosquitto_sub retries a closed connection too: never refused, in once the fence lifts.
      assert.doesNotMatch(mosquitto5.output, /received CONNACK \([1-9]/);
      // A client with MQTT.js' defaults keeps retrying a closed connection.
      retrying = mqtt.connect(url, {
        protocolVersion: 5,
        clientId: "retrying",
        reconnectPeriod: 200,
      });
      retrying.on("error", () => {});
      const client = retrying;
      const connected = new Promise<void>((resolve) => client.once("connect", () => resolve()));
      // Served again once Redis answers; stopping a node whose Redis is paused would leave its
      // connections retrying.
      await withDeadline(
        logs.waitFor((l) => l.event === "redis.unfenced"),
        10_000,
        "redis.unfenced",
      );
      await withDeadline(connected, 10_000, "the retrying client connected after the fence");
    } finally {
      await end(retrying);
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
