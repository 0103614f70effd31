import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { LogCapture } from "../../harness/log-capture.js";
import { connect, end, type MqttClient } from "../../harness/mqtt-client.js";
import { RedisServer } from "../../harness/redis-server.js";
import { PersistenceKeys } from "../../src/redis/redis-keys.js";

/**
 * Issue 17: a will due while Redis refuses writes (as during a Sentinel failover) must not be
 * lost. Redis is made to refuse every write (`min-replicas-to-write 1` with no replica: a
 * real Redis answering NOREPLICAS), a will holder's connection is dropped, so the will's PUBLISH
 * (enqueued for a persistent watcher first: a script that writes) fails. aedes deleted the
 * stored will all the same and never published it; the node keeps it and publishes it once
 * Redis takes writes again, exactly once, and deletes it then.
 */
describe("a will due while Redis refuses writes", () => {
  let redis: RedisServer;
  let node: RunningNode;
  const log = new LogCapture("info");
  const clients: MqttClient[] = [];
  const prefix = `w${randomBytes(4).toString("hex")}:`;

  before(async () => {
    redis = await RedisServer.start();
    node = await startNode(
      { nodeId: "node-a", redis: { url: redis.url, keyPrefix: prefix } },
      process.cwd(),
      { logger: log.logger },
    );
  });

  after(async () => {
    // The fault is removed whatever happened.
    await redis?.command("CONFIG", "SET", "min-replicas-to-write", "0").catch(() => {});
    await end(...clients);
    await node?.stop();
    await redis?.stop();
  });

  it("is kept, then published once when Redis takes it", async () => {
    const id = `holder-${randomBytes(3).toString("hex")}`;
    const topic = `will/${id}`;
    const watcher = await connect(node.urls.tcp as string, {
      clientId: `${id}-watch`,
      clean: false,
    });
    clients.push(watcher);
    const wills: string[] = [];
    let markerSeen: () => void = () => {};
    const marker = new Promise<void>((resolve) => {
      markerSeen = resolve;
    });
    let willSeen: () => void = () => {};
    const firstWill = new Promise<void>((resolve) => {
      willSeen = resolve;
    });
    watcher.on("message", (_topic, payload) => {
      const text = payload.toString();
      if (text === "marker") markerSeen();
      else {
        wills.push(text);
        willSeen();
      }
    });
    await watcher.subscribeAsync(topic, { qos: 1 });
    const holder = await connect(node.urls.tcp as string, {
      clientId: id,
      will: { topic, payload: Buffer.from("gone"), qos: 1, retain: false },
    });

    const since = Date.now();
    assert.equal(await redis.command("CONFIG", "SET", "min-replicas-to-write", "1"), "+OK");
    try {
      holder.stream.destroy();
      await withDeadline(
        log.waitFor((l) => l.event === "client.will_deferred" && l.clientId === id),
        10_000,
        "the will kept",
      );
    } finally {
      await redis.command("CONFIG", "SET", "min-replicas-to-write", "0");
    }
    assert.deepEqual(wills, [], "nothing published while Redis refused it");

    await withDeadline(firstWill, 15_000, "the will published after the fault");
    await withDeadline(
      log.waitFor((l) => l.event === "client.will_published_late" && l.clientId === id),
      5_000,
      "the late publication logged",
    );
    // Deleted once published: nothing left for a sweep to publish again.
    const keys = new PersistenceKeys(prefix);
    assert.equal(await redis.command("HLEN", prefix + keys.wills(id)), ":0");
    const indexed = keys.willIndexEntry("node-a", id);
    assert.equal(await redis.command("SISMEMBER", prefix + keys.willIndex, indexed), ":0");
    // Anything more from this node would have come before a message published after it.
    const publisher = await connect(node.urls.tcp as string, { clientId: `${id}-pub` });
    clients.push(publisher);
    await publisher.publishAsync(topic, "marker", { qos: 1 });
    await withDeadline(marker, 10_000, "the marker");
    assert.deepEqual(wills, ["gone"]);
    assert.ok(Date.now() - since < 30_000);
  });
});
