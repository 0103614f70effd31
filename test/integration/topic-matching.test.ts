import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, connectWithConnack, end, Inbox, subscribe } from "../../harness/mqtt-client.js";
import { RedisServer } from "../../harness/redis-server.js";

/**
 * `+` matches exactly one level, and a level may be empty (MQTT 3.1.1 section 4.7.1.3):
 * `plant/pump/+` matches `plant/pump/`. Checked for every path a message can take to a
 * subscriber (live, retained, queued for an offline session), in memory and over Redis.
 */
let redis: RedisServer;
const nodes: Record<"memory" | "redis", RunningNode | undefined> = {
  memory: undefined,
  redis: undefined,
};
before(async () => {
  redis = await RedisServer.start();
  nodes.memory = await startNode();
  nodes.redis = await startNode({
    redis: { url: redis.url, keyPrefix: `t${randomBytes(4).toString("hex")}:` },
  });
});
after(async () => {
  await nodes.memory?.stop();
  await nodes.redis?.stop();
  await redis?.stop();
});

for (const store of ["memory", "redis"] as const) {
  describe(`a + level matches an empty level (${store})`, () => {
    const url = () => nodes[store]?.urls.tcp as string;

    it("retained on `a/` reaches a new subscription to `a/+`", async () => {
      const topic = `retained-${store}/`;
      const publisher = await connect(url());
      await publisher.publishAsync(topic, "kept", { qos: 1, retain: true });
      const subscriber = await connect(url());
      try {
        const inbox = new Inbox(subscriber);
        await subscribe(subscriber, `${topic}+`, 1);
        const [message] = await inbox.waitFor(1);
        assert.equal(message?.topic, topic);
        assert.equal(message?.payload.toString(), "kept");
        assert.equal(message?.packet.retain, true);
      } finally {
        await publisher.publishAsync(topic, "", { qos: 1, retain: true });
        await end(publisher, subscriber);
      }
    });

    it("a message on `a/` is queued for an offline session subscribed to `a/+`", async () => {
      const topic = `queued-${store}/`;
      const clientId = `offline-${store}`;
      const session = await connect(url(), { clientId, clean: false });
      await subscribe(session, `${topic}+`, 1);
      await end(session);
      const publisher = await connect(url());
      await publisher.publishAsync(topic, "while away", { qos: 1 });
      await end(publisher);
      const { client: back, inbox } = await connectWithConnack(url(), { clientId, clean: false });
      try {
        const [message] = await inbox.waitFor(1);
        assert.equal(message?.topic, topic);
        assert.equal(message?.payload.toString(), "while away");
      } finally {
        await end(back);
      }
    });

    it("a live message on `a/` reaches `a/+`", async () => {
      const topic = `live-${store}/`;
      const subscriber = await connect(url());
      const publisher = await connect(url());
      try {
        const inbox = new Inbox(subscriber);
        await subscribe(subscriber, `${topic}+`, 1);
        await publisher.publishAsync(topic, "now", { qos: 1 });
        const [message] = await inbox.waitFor(1);
        assert.equal(message?.topic, topic);
      } finally {
        await end(publisher, subscriber);
      }
    });
  });
}
