import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { withDeadline } from "../../harness/deadline.js";
import { DelayRelay } from "../../harness/delay-relay.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, connectWithConnack, end, type MqttClient } from "../../harness/mqtt-client.js";
import { RedisServer } from "../../harness/redis-server.js";

/** One-way delay between node-b and Redis: the resume's round trips take this twice each. */
const REDIS_DELAY_MS = 15;
/** Messages queued while the subscriber is away, then published while it resumes. */
const QUEUED = 50;
const LIVE = 300;
/** The publisher's pace while the subscriber resumes. */
const PACE_MS = 2;

/**
 * Issue 17: a persistent session resuming on another node gets its subscriptions back before its
 * stored queue is sent (aedes' CONNECT), so live messages could overtake the queue, and one
 * published as it resumes could arrive both from the queue and live (QoS 2 twice, under two
 * packet ids). node-b reaches Redis through a relay that delays each way, which widens that
 * window to several round trips; a publisher on node-a keeps publishing QoS 2 through it. The
 * subscriber must get every message once, in the order published [MQTT-4.6.0-6, MQTT-4.3.3-2].
 */
describe("a persistent session resuming on another node while messages flow", () => {
  let redis: RedisServer;
  let relay: DelayRelay;
  let a: RunningNode;
  let b: RunningNode;
  const clients: MqttClient[] = [];

  before(async () => {
    redis = await RedisServer.start();
    relay = await DelayRelay.start("127.0.0.1", { host: "127.0.0.1", port: redis.port });
    relay.setDelay(REDIS_DELAY_MS);
    const keyPrefix = `r${randomBytes(4).toString("hex")}:`;
    a = await startNode({ nodeId: "node-a", redis: { url: redis.url, keyPrefix } });
    b = await startNode({
      nodeId: "node-b",
      redis: { url: `redis://127.0.0.1:${relay.port}`, keyPrefix },
    });
  });

  after(async () => {
    await end(...clients);
    await b?.stop();
    await a?.stop();
    await relay?.stop();
    await redis?.stop();
  });

  it("gets its queue, then the live messages: each once, in order", async () => {
    const topic = `resume/${randomBytes(3).toString("hex")}`;
    const subscriberId = `${topic.replace("/", "-")}-sub`;
    const first = await connect(b.urls.tcp as string, { clientId: subscriberId, clean: false });
    await first.subscribeAsync(topic, { qos: 2 });
    await first.endAsync();

    const publisher = await connect(a.urls.tcp as string, { clientId: `${subscriberId}-pub` });
    clients.push(publisher);
    for (let seq = 0; seq < QUEUED; seq++) {
      await publisher.publishAsync(topic, String(seq), { qos: 2 });
    }

    let resumeAt: () => void = () => {};
    const resumeNow = new Promise<void>((resolve) => {
      resumeAt = resolve;
    });
    const publishing = (async () => {
      for (let seq = QUEUED; seq < QUEUED + LIVE; seq++) {
        await publisher.publishAsync(topic, String(seq), { qos: 2 });
        if (seq === QUEUED + 10) resumeAt();
        await new Promise((resolve) => setTimeout(resolve, PACE_MS));
      }
    })();
    await withDeadline(resumeNow, 10_000, "the publisher under way");
    const { client, inbox, sessionPresent } = await connectWithConnack(b.urls.tcp as string, {
      clientId: subscriberId,
      clean: false,
    });
    clients.push(client);
    assert.equal(sessionPresent, true);
    await withDeadline(publishing, 30_000, "every message published");
    // Published after every other: once it is in, so is anything written before it.
    const marker = new Promise<void>((resolve) => {
      client.on("message", (_topic, payload) => {
        if (payload.toString() === "end") resolve();
      });
    });
    await publisher.publishAsync(topic, "end", { qos: 2 });
    await withDeadline(marker, 30_000, "the last message received");

    const received = inbox.received
      .map((m) => m.payload.toString())
      .filter((payload) => payload !== "end")
      .map(Number);
    const expected = Array.from({ length: QUEUED + LIVE }, (_, seq) => seq);
    const outOfOrder = received.filter((seq, i) => i > 0 && seq < (received[i - 1] ?? -1));
    const copies = received.length - new Set(received).size;
    assert.deepEqual(
      { outOfOrder: outOfOrder.length, copies },
      { outOfOrder: 0, copies: 0 },
      `first out of order: ${outOfOrder[0]}`,
    );
    assert.deepEqual(received, expected);
  });
});
