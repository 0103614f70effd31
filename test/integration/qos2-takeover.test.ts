import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { Redis } from "ioredis";
import { withDeadline } from "../../harness/deadline.js";
import {
  connect,
  connectWithConnack,
  end,
  Inbox,
  type MqttClient,
  subscribe,
} from "../../harness/mqtt-client.js";
import { connectMovingPublisher, startNodePair } from "../../harness/node-pair.js";
import type { RedisRelay } from "../../harness/redis-relay.js";
import { PersistenceKeys } from "../../src/redis/redis-keys.js";

/**
 * Issue 17, "No QoS 2 duplicates": a publisher's QoS 2 PUBLISH reaches node A, whose PUBLISH
 * to Redis does not get there (A reaches Redis through a relay that holds it, as a stopped or
 * cut-off node would); the load balancer moves the client to node B, which gets the resend.
 * B takes the packet id over from A's reservation and publishes; A's PUBLISH, once it reaches
 * Redis, must publish nothing. Subscribers on both nodes get the message once, in order, and so
 * does an offline session (A queued it before its PUBLISH, B again before its own).
 */
const DEADLINE_MS = 15_000;

describe("an inbound QoS 2 PUBLISH taken over by another node", () => {
  it("the resend through B is published once; A's held PUBLISH publishes nothing", async () => {
    const { redis, keyPrefix, a, b, relay: held, stop } = await startNodePair({ relayA: true });
    const relay = held as RedisRelay;
    const direct = new Redis({ port: redis.port, host: "127.0.0.1", lazyConnect: true });
    const clients: MqttClient[] = [];
    try {
      await direct.connect();
      const topic = `takeover/${randomBytes(4).toString("hex")}`;
      const inboxes: Inbox[] = [];
      for (const [name, node] of [
        ["sub-a", a],
        ["sub-b", b],
      ] as const) {
        const subscriber = await connect(node.urls.tcp as string, { clientId: name });
        clients.push(subscriber);
        inboxes.push(new Inbox(subscriber));
        await subscribe(subscriber, topic, 2);
      }
      // An offline session, subscribed on A: A queues the message before its PUBLISH.
      const offline = await connect(a.urls.tcp as string, { clientId: "sub-off", clean: false });
      await subscribe(offline, topic, 2);
      await end(offline);
      // B knows that session's subscription too (its announcement went before this, on the
      // same connection) once this reaches B's subscriber: B queues it on its take-over.
      const sync = `${topic}/sync`;
      await subscribe(clients[1] as MqttClient, sync, 1);
      await withDeadline(
        Promise.all([
          inboxes[1]?.waitFor(1),
          (clients[0] as MqttClient).publishAsync(sync, "sync", { qos: 1 }),
        ]),
        DEADLINE_MS,
        "B in step with A's announcements",
      );
      // A first; its reconnection goes to B.
      const publisher = await connectMovingPublisher(a, b, "takeover-pub");
      clients.push(publisher);

      relay.holdCommandsWith(topic);
      const first = publisher.publishAsync(topic, "once", { qos: 2 });
      await withDeadline(relay.commandHeld(), DEADLINE_MS, "A's PUBLISH held");
      // The packet id is reserved by A: a resend must be able to tell it from a published one.
      const incoming = keyPrefix + new PersistenceKeys(keyPrefix).incoming("takeover-pub");
      const reserved = Object.values(await direct.hgetall(incoming));
      // The load balancer drops the client from A; it reconnects to B and sends again.
      publisher.stream.destroy();
      await withDeadline(first, DEADLINE_MS, "PUBCOMP through B");
      relay.releaseCommands();
      // Published through A after the held PUBLISH, on the same connection to Redis: once it
      // arrives, the held one has run.
      const later = await connect(a.urls.tcp as string, { clientId: "takeover-later" });
      clients.push(later);
      await withDeadline(
        later.publishAsync(topic, "after", { qos: 2 }),
        DEADLINE_MS,
        "PUBCOMP of the later message",
      );
      for (const [i, inbox] of inboxes.entries()) {
        await withDeadline(
          inbox.waitFor(i === 0 ? 2 : 3),
          DEADLINE_MS,
          `two messages at ${i === 0 ? "A" : "B"}'s subscriber`,
        );
      }
      // Past any second copy: a message published after "after" arrives after such a copy.
      await withDeadline(
        later.publishAsync(topic, "last", { qos: 2 }),
        DEADLINE_MS,
        "PUBCOMP of the last message",
      );
      for (const [i, inbox] of inboxes.entries()) {
        await withDeadline(inbox.waitFor(i === 0 ? 3 : 4), DEADLINE_MS, "last");
      }
      const received = inboxes.map((inbox) =>
        inbox.received.filter((m) => m.topic === topic).map((m) => m.payload.toString()),
      );
      assert.deepEqual(received, [
        ["once", "after", "last"],
        ["once", "after", "last"],
      ]);
      const resumed = await connectWithConnack(b.urls.tcp as string, {
        clientId: "sub-off",
        clean: false,
      });
      clients.push(resumed.client);
      const queued = await withDeadline(resumed.inbox.waitFor(3), DEADLINE_MS, "queued messages");
      assert.deepEqual(
        queued.map((m) => m.payload.toString()),
        ["once", "after", "last"],
        "the offline session's queue",
      );
      assert.deepEqual(
        reserved.map((value) => value.startsWith("pending:")),
        [true],
        "A's reservation while its PUBLISH was held",
      );
    } finally {
      relay.releaseCommands();
      await end(...clients);
      direct.disconnect();
      await stop();
    }
  });
});
