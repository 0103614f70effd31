import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import {
  connect,
  end,
  Inbox,
  type MqttClient,
  subscribeGranted,
} from "../../harness/mqtt-client.js";

/**
 * `limits.maxTopicBytes`: an over-long PUBLISH topic or UNSUBSCRIBE filter closes the
 * connection (as aedes does for too many topic levels), an over-long SUBSCRIBE filter gets
 * SUBACK 0x80, a CONNECT with an over-long will topic is refused; each is counted.
 */
const LIMIT = 64;
let node: RunningNode;

before(async () => {
  node = await startNode({ limits: { maxTopicBytes: LIMIT } });
});
after(async () => {
  await node.stop();
});

async function counter(name: string, reason: string): Promise<number> {
  const metrics = await fetch(`${node.httpUrl}/metrics`).then((r) => r.text());
  const line = new RegExp(`^${name}\\{reason="${reason}",[^}]*\\} (\\d+)`, "m");
  return Number(line.exec(metrics)?.[1] ?? 0);
}

function closed(client: MqttClient): Promise<void> {
  return new Promise((resolve) => client.once("close", () => resolve()));
}

/** 64 bytes exactly, with two-byte characters: the limit counts bytes, not characters. */
const atLimit = `plant/${"ü".repeat(29)}`;
const overLimit = `${atLimit}x`;

describe("topic length limit", () => {
  it("a PUBLISH to a topic of exactly the limit is delivered", async () => {
    assert.equal(Buffer.byteLength(atLimit), LIMIT);
    const subscriber = await connect(node.urls.tcp as string);
    const publisher = await connect(node.urls.tcp as string);
    try {
      const inbox = new Inbox(subscriber);
      await subscriber.subscribeAsync(atLimit, { qos: 1 });
      await publisher.publishAsync(atLimit, "ok", { qos: 1 });
      const [message] = await inbox.waitFor(1);
      assert.equal(message?.topic, atLimit);
    } finally {
      await end(subscriber, publisher);
    }
  });

  it("a PUBLISH to a longer topic closes the connection, is not delivered, and is counted", async () => {
    const before = await counter("sluice_protocol_errors_total", "topic_too_long");
    const subscriber = await connect(node.urls.tcp as string);
    const publisher = await connect(node.urls.tcp as string);
    try {
      const inbox = new Inbox(subscriber);
      await subscriber.subscribeAsync("plant/#", { qos: 1 });
      const gone = closed(publisher);
      publisher.publish(overLimit, "too long", { qos: 1 });
      await gone;
      // A message published after it arrives alone: the over-long one went nowhere.
      const other = await connect(node.urls.tcp as string);
      await other.publishAsync("plant/after", "next", { qos: 1 });
      const [message] = await inbox.waitFor(1);
      assert.equal(message?.topic, "plant/after");
      await end(other);
      assert.equal(await counter("sluice_protocol_errors_total", "topic_too_long"), before + 1);
    } finally {
      await end(subscriber, publisher);
    }
  });

  it("an over-long SUBSCRIBE filter gets SUBACK 0x80, the others in the packet are granted", async () => {
    const before = await counter("sluice_subscriptions_refused_total", "topic_too_long");
    const client = await connect(node.urls.tcp as string);
    try {
      const granted = await subscribeGranted(client, {
        [`${overLimit}/#`]: { qos: 1 },
        "plant/ok": { qos: 1 },
      });
      assert.deepEqual(granted, [0x80, 1]);
      assert.equal(client.connected, true);
      assert.equal(
        await counter("sluice_subscriptions_refused_total", "topic_too_long"),
        before + 1,
      );
    } finally {
      await end(client);
    }
  });

  it("an over-long UNSUBSCRIBE filter closes the connection", async () => {
    const client = await connect(node.urls.tcp as string);
    try {
      const gone = closed(client);
      client.unsubscribe(overLimit);
      await gone;
    } finally {
      await end(client);
    }
  });

  it("a CONNECT with an over-long will topic is refused without a CONNACK and counted", async () => {
    const before = await counter("sluice_protocol_errors_total", "topic_too_long");
    await assert.rejects(
      connect(node.urls.tcp as string, {
        will: { topic: overLimit, payload: Buffer.from("gone"), qos: 0, retain: false },
      }),
    );
    assert.equal(await counter("sluice_protocol_errors_total", "topic_too_long"), before + 1);
  });
});
