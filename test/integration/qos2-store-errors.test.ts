import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import type { IPublishPacket } from "mqtt-packet";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, end, type MqttClient } from "../../harness/mqtt-client.js";
import { rawConnect } from "../../harness/raw-socket.js";
import { RedisServer } from "../../harness/redis-server.js";
import { publish, WireClient } from "../../harness/wire-client.js";

/**
 * Issue 17 (found by the Sentinel failover chaos run): an inbound QoS 2 PUBLISH whose id lookup
 * failed in Redis was taken for a new message and published. So a resent copy of a message
 * already published went out twice, and a publisher's message whose lookup failed while Redis
 * was away could overtake the one before it, which failed and was resent later. A lookup that
 * fails fails the PUBLISH (the connection closes; the client resends). Redis is made to refuse
 * HGET alone (an ACL rule on the node's user), as a store failing mid-flow would.
 */
describe("an inbound QoS 2 PUBLISH whose id lookup fails", () => {
  let redis: RedisServer;
  let node: RunningNode;
  const clients: MqttClient[] = [];

  before(async () => {
    redis = await RedisServer.start();
    const keyPrefix = `q${randomBytes(4).toString("hex")}:`;
    node = await startNode({ nodeId: "node-a", redis: { url: redis.url, keyPrefix } });
  });

  after(async () => {
    // The fault is removed whatever happened.
    await redis?.command("ACL", "SETUSER", "default", "+hget").catch(() => {});
    await end(...clients);
    await node?.stop();
    await redis?.stop();
  });

  it("is not published (again): the connection closes, the message went out once", async () => {
    const topic = `qos2/${randomBytes(3).toString("hex")}`;
    const subscriber = await connect(node.urls.tcp as string, { clientId: `${topic}-sub` });
    clients.push(subscriber);
    const received: string[] = [];
    subscriber.on("message", (_topic, payload) => received.push(payload.toString()));
    await subscriber.subscribeAsync(topic, { qos: 2 });

    const socket = await rawConnect(Number(new URL(node.urls.tcp as string).port));
    const publisher = new WireClient(socket);
    publisher.send({
      cmd: "connect",
      protocolId: "MQTT",
      protocolVersion: 4,
      clean: false,
      clientId: `${topic}-pub`,
      keepalive: 60,
    });
    await publisher.waitFor("CONNACK", (p) => p.cmd === "connack");
    publisher.send(publish(topic, "once", 2, 7));
    await publisher.waitFor("PUBREC", (p) => p.cmd === "pubrec" && p.messageId === 7);

    assert.equal(await redis.command("ACL", "SETUSER", "default", "-hget"), "+OK");
    let outcome: string;
    try {
      // The same message again, as a client resends it (DUP): its id is stored, but unreadable.
      publisher.send({ ...(publish(topic, "once", 2, 7) as IPublishPacket), dup: true });
      outcome = await Promise.race([
        publisher.closedWithin(5_000).then(() => "closed"),
        publisher.waitForCount("pubrec", 2, 5_000).then(() => "acknowledged again"),
      ]).catch(() => "neither");
    } finally {
      await redis.command("ACL", "SETUSER", "default", "+hget");
    }
    // Published after the resend: anything the resend published came before it.
    const sender = await connect(node.urls.tcp as string, { clientId: `${topic}-end` });
    clients.push(sender);
    await sender.publishAsync(topic, "end", { qos: 2 });
    await withDeadline(
      new Promise<void>((resolve) => {
        if (received.includes("end")) resolve();
        subscriber.on("message", (_topic, payload) => {
          if (payload.toString() === "end") resolve();
        });
      }),
      10_000,
      "the last message",
    );
    assert.deepEqual(received, ["once", "end"]);
    assert.equal(outcome, "closed");
  });
});
