import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { withDeadline } from "../../harness/deadline.js";
import { DelayRelay } from "../../harness/delay-relay.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, end, Inbox, type MqttClient, subscribe } from "../../harness/mqtt-client.js";
import { connectMovingPublisher } from "../../harness/node-pair.js";
import { RedisServer } from "../../harness/redis-server.js";

/**
 * Issue 17, "No QoS 2 duplicates" when Redis dies between running a PUBLISH and answering it
 * (a Sentinel failover's primary killed under load: the subscribers' connections got the
 * message, the publisher's connection lost the answer). Node A reaches Redis through a relay
 * that holds each chunk; node B directly. A QoS 2 message published on A reaches B's
 * subscriber while Redis' answer is held in the relay; the relay then drops it and refuses A
 * for longer than A's Redis commands retry, as a dead primary does until Sentinel promotes
 * another. The message must reach the subscriber once.
 */
const HOLD_MS = 300;
/** Past ioredis' retries of a command (3 reconnections: 100 + 200 + 300 ms). */
const DOWN_MS = 2_000;
const DEADLINE_MS = 15_000;

describe("a PUBLISH whose answer Redis never sent", () => {
  it("a QoS 2 message delivered before Redis died is delivered once", () =>
    withRelayedPair("lost", async ({ a, relay, topic, subscriber, inbox, clients }) => {
      const publisher = await connect(a.urls.tcp as string, {
        clientId: "lost-pub",
        clean: false,
        reconnectPeriod: 200,
      });
      clients.push(publisher);
      publisher.on("error", () => {});

      relay.setDelay(HOLD_MS);
      const first = publisher.publishAsync(topic, "once", { qos: 2 });
      await withDeadline(inbox.waitFor(1), DEADLINE_MS, "the message at the subscriber");
      // Redis ran the PUBLISH; its answer is in the relay: dropped, and A refused a while.
      relay.cut();
      await new Promise((resolve) => setTimeout(resolve, DOWN_MS));
      relay.setDelay(0);
      relay.heal();
      await withDeadline(first, DEADLINE_MS, "PUBCOMP after Redis is back");
      assert.deepEqual(await afterTheFirst(publisher, topic, subscriber, inbox), ["once", "after"]);
    }));

  // The Sentinel failover's QoS 2 duplicate, as the chaos runs see it: HAProxy closes the
  // clients of a node it marks down (`on-marked-down shutdown-sessions`), and the publisher's
  // resend reaches another node while the first one still holds the PUBLISH for a Redis that
  // answers again only after the failover. The PUBLISH ran in the script that marked its packet
  // id published (engine/inbound-qos2.ts): the resend finds it and is only acknowledged.
  it("a QoS 2 message resent through another node while the first waits on Redis is delivered once", () =>
    withRelayedPair("moved", async ({ a, b, relay, topic, subscriber, inbox, clients }) => {
      // A first; its reconnection goes to B.
      const publisher = await connectMovingPublisher(a, b, "moved-pub");
      clients.push(publisher);

      relay.setDelay(HOLD_MS);
      const first = publisher.publishAsync(topic, "once", { qos: 2 });
      await withDeadline(inbox.waitFor(1), DEADLINE_MS, "the message at the subscriber");
      relay.cut();
      // The load balancer drops the client from A; it reconnects to B and sends again.
      publisher.stream.destroy();
      await withDeadline(first, DEADLINE_MS, "PUBCOMP through B");
      relay.setDelay(0);
      relay.heal();
      assert.deepEqual(await afterTheFirst(publisher, topic, subscriber, inbox), ["once", "after"]);
    }));
});

interface RelayedPair {
  /** Reaches Redis through `relay`. */
  a: RunningNode;
  b: RunningNode;
  relay: DelayRelay;
  topic: string;
  /** On B, subscribed to `topic` at QoS 2. */
  subscriber: MqttClient;
  inbox: Inbox;
  /** Ended after the test, with the subscriber. */
  clients: MqttClient[];
}

/** Runs `test` on two nodes over one Redis, A through a relay, and removes everything after. */
async function withRelayedPair(name: string, test: (pair: RelayedPair) => Promise<void>) {
  const redis = await RedisServer.start();
  const relay = await DelayRelay.start("127.0.0.1", { host: "127.0.0.1", port: redis.port });
  const keyPrefix = `${name}${randomBytes(4).toString("hex")}:`;
  const nodes: RunningNode[] = [];
  const clients: MqttClient[] = [];
  try {
    for (const [nodeId, port] of [
      ["node-a", relay.port],
      ["node-b", redis.port],
    ] as const) {
      nodes.push(
        await startNode({ nodeId, redis: { url: `redis://127.0.0.1:${port}`, keyPrefix } }),
      );
    }
    const [a, b] = nodes as [RunningNode, RunningNode];
    const topic = `${name}/${randomBytes(4).toString("hex")}`;
    const subscriber = await connect(b.urls.tcp as string, { clientId: `${name}-sub` });
    clients.push(subscriber);
    const inbox = new Inbox(subscriber);
    await subscribe(subscriber, topic, 2);
    await test({ a, b, relay, topic, subscriber, inbox, clients });
  } finally {
    await end(...clients);
    for (const node of nodes) await node.stop();
    await relay.stop();
    await redis.stop();
  }
}

/**
 * Publishes "after" and returns what the subscriber got up to it: by the order per publisher
 * and topic, a second copy of the first message would come before it.
 */
async function afterTheFirst(
  publisher: MqttClient,
  topic: string,
  subscriber: MqttClient,
  inbox: Inbox,
): Promise<string[]> {
  await withDeadline(
    publisher.publishAsync(topic, "after", { qos: 2 }),
    DEADLINE_MS,
    "second PUBCOMP",
  );
  return untilReceived(subscriber, inbox, "after");
}

/** The payloads received, once `last` is among them (bounded). */
function untilReceived(subscriber: MqttClient, inbox: Inbox, last: string): Promise<string[]> {
  return withDeadline(
    (async () => {
      for (;;) {
        const seen = inbox.received.map((m) => m.payload.toString());
        if (seen.includes(last)) return seen;
        await new Promise((resolve) => subscriber.once("message", resolve));
      }
    })(),
    DEADLINE_MS,
    `"${last}" at the subscriber`,
  );
}
