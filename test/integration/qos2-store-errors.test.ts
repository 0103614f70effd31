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
 * HGET or HSET alone (an ACL rule on the node's user), as a store failing mid-flow would.
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
    await redis?.command("ACL", "SETUSER", "default", "+hget", "+hset").catch(() => {});
    await end(...clients);
    await node?.stop();
    await redis?.stop();
  });

  /** A raw MQTT 3.1.1 publisher with a persistent session, CONNACK received. */
  async function rawPublisher(clientId: string): Promise<WireClient> {
    const socket = await rawConnect(Number(new URL(node.urls.tcp as string).port));
    const publisher = new WireClient(socket);
    publisher.send({
      cmd: "connect",
      protocolId: "MQTT",
      protocolVersion: 4,
      clean: false,
      clientId,
      keepalive: 60,
    });
    await publisher.waitFor("CONNACK", (p) => p.cmd === "connack");
    return publisher;
  }

  /** A clean-session QoS 2 subscriber, and what it received, in order. */
  async function subscriberOf(
    topic: string,
  ): Promise<{ received: string[]; got(payload: string): Promise<void> }> {
    const subscriber = await connect(node.urls.tcp as string, { clientId: `${topic}-sub` });
    clients.push(subscriber);
    const received: string[] = [];
    subscriber.on("message", (_topic, payload) => received.push(payload.toString()));
    await subscriber.subscribeAsync(topic, { qos: 2 });
    const got = (payload: string) =>
      withDeadline(
        new Promise<void>((resolve) => {
          if (received.includes(payload)) resolve();
          subscriber.on("message", (_topic, message) => {
            if (message.toString() === payload) resolve();
          });
        }),
        10_000,
        `"${payload}" received`,
      );
    return { received, got };
  }

  /** Publishes a last message: anything published before it has arrived once it has. */
  async function publishLast(topic: string): Promise<void> {
    const sender = await connect(node.urls.tcp as string, { clientId: `${topic}-end` });
    clients.push(sender);
    await sender.publishAsync(topic, "end", { qos: 2 });
  }

  it("whose lookup fails is not published again: the connection closes", async () => {
    const topic = `qos2/${randomBytes(3).toString("hex")}`;
    const { received, got } = await subscriberOf(topic);
    const publisher = await rawPublisher(`${topic}-pub`);
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
    await publishLast(topic);
    await got("end");
    assert.deepEqual(received, ["once", "end"]);
    assert.equal(outcome, "closed");
  });

  // Its id is reserved before it is published (engine/inbound-qos2.ts): a reservation Redis
  // refuses fails the PUBLISH, and the client's resend is published once Redis takes it.
  it("not published while its id cannot be reserved; the resend is, once", async () => {
    const topic = `qos2/${randomBytes(3).toString("hex")}`;
    const { received, got } = await subscriberOf(topic);
    const clientId = `${topic}-pub`;
    const publisher = await rawPublisher(clientId);
    assert.equal(await redis.command("ACL", "SETUSER", "default", "-hset"), "+OK");
    try {
      publisher.send(publish(topic, "once", 2, 9));
      await publisher.closedWithin(5_000);
    } finally {
      await redis.command("ACL", "SETUSER", "default", "+hset");
    }
    assert.deepEqual(received, []);
    // The client resends it from a new connection, as after any break (DUP).
    publisher.stream.destroy();
    const again = await rawPublisher(clientId);
    again.send({ ...(publish(topic, "once", 2, 9) as IPublishPacket), dup: true });
    await again.waitFor("PUBREC", (p) => p.cmd === "pubrec" && p.messageId === 9);
    again.stream.destroy();
    await publishLast(topic);
    await got("end");
    assert.deepEqual(received, ["once", "end"]);
  });
});
