import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { HaProxy } from "../../harness/haproxy.js";
import { startNode } from "../../harness/in-process-node.js";
import { connect, end } from "../../harness/mqtt-client.js";
import { RedisServer } from "../../harness/redis-server.js";

/** The test harness's own real parts, checked before cluster tests build on them. */
describe("test harness: redis-server", () => {
  it("starts on a random non-standard loopback port, answers, stops, and comes back empty", async () => {
    const redis = await RedisServer.start();
    try {
      assert.notEqual(redis.port, 6379);
      assert.equal(await redis.command("PING"), "+PONG");
      assert.equal(await redis.command("SET", "k", "v"), "+OK");
      await redis.kill();
      await assert.rejects(redis.command("PING"), /ECONNREFUSED/);
      await redis.start();
      assert.equal(
        await redis.command("GET", "k"),
        "$-1",
        "a restart loses the data (no persistence)",
      );
    } finally {
      await redis.stop();
    }
  });
});

describe("test harness: haproxy", () => {
  it("starts on a random port and passes MQTT connections to the nodes behind it", async () => {
    const nodes = [await startNode({ nodeId: "lb-1" }), await startNode({ nodeId: "lb-2" })];
    const port = (url: string | undefined) => Number(new URL(url as string).port);
    let lb: HaProxy | undefined;
    try {
      lb = await HaProxy.start(
        nodes.map((n, i) => ({
          name: `n${i}`,
          mqttPort: port(n.urls.tcp),
          httpPort: port(n.httpUrl),
        })),
      );
      const client = await connect(lb.url);
      assert.equal(client.connected, true);
      await end(client);
    } finally {
      await lb?.stop();
      for (const node of nodes) await node.stop();
    }
  });
});
