import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import mqtt, { type IClientOptions, type IConnackPacket, type IPublishPacket } from "mqtt";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import {
  connect,
  connectWithConnack,
  end,
  Inbox,
  type MqttClient,
} from "../../harness/mqtt-client.js";
import { type NodePair, startNodePair } from "../../harness/node-pair.js";

/**
 * MQTT 5 through Sluice on aedes 2.0.0-beta.1 (issue 15's spike): a v5 CONNECT is answered in
 * v5, PUBLISH properties reach subscribers intact (across two nodes over Redis too), and v3.1.1
 * and v5 clients exchange messages.
 */
const V5: IClientOptions = { protocolVersion: 5 };

/** The properties a request/response exchange carries, as MQTT.js hands them over. */
const PROPERTIES = {
  userProperties: { site: "plant-7", tag: ["a", "b"] },
  contentType: "application/json",
  correlationData: Buffer.from([0, 1, 2, 0xff]),
  responseTopic: "reply/plc-1",
  payloadFormatIndicator: true,
};

function assertCarries(packet: IPublishPacket): void {
  const properties = packet.properties ?? {};
  // mqtt-packet parses user properties into a null-prototype object
  assert.deepEqual({ ...properties.userProperties }, PROPERTIES.userProperties);
  assert.equal(properties.contentType, PROPERTIES.contentType);
  assert.deepEqual(properties.correlationData, PROPERTIES.correlationData);
  assert.equal(properties.responseTopic, PROPERTIES.responseTopic);
  assert.equal(properties.payloadFormatIndicator, true);
}

/** Subscribes (at QoS 1) and returns an inbox attached before the SUBACK. */
async function subscribed(client: MqttClient, filter: string): Promise<Inbox> {
  const inbox = new Inbox(client);
  await client.subscribeAsync(filter, { qos: 1 });
  return inbox;
}

/**
 * [MQTT-3.1.2-5] A session resumed with Clean Start 0 gets what was queued while it was away,
 * whatever this connection's own Session Expiry Interval (absent here: it ends with it). Paho's
 * interoperability tests test_offline_message_queueing and test_publication_expiry do this.
 */
async function resumedWithoutExpiry(subscribeUrl: string, publishUrl: string, id: string) {
  const first = await connect(subscribeUrl, {
    ...V5,
    clientId: id,
    clean: true,
    properties: { sessionExpiryInterval: 99_999 },
  });
  await first.subscribeAsync(`${id}/+`, { qos: 2 });
  await end(first);
  const publisher = await connect(publishUrl, { ...V5, clientId: `${id}-pub` });
  try {
    await publisher.publishAsync(`${id}/1`, "q1", { qos: 1 });
    await publisher.publishAsync(`${id}/2`, "q2", { qos: 2 });
  } finally {
    await end(publisher);
  }
  const back = await connectWithConnack(subscribeUrl, { ...V5, clientId: id, clean: false });
  try {
    assert.equal(back.sessionPresent, true);
    const queued = await withDeadline(back.inbox.waitFor(2), 5_000, "the queued messages");
    assert.deepEqual(queued.map((m) => m.payload.toString()).sort(), ["q1", "q2"]);
  } finally {
    await end(back.client);
  }
}

describe("MQTT 5 on one node, in memory", () => {
  let node: RunningNode;
  let url: string;
  before(async () => {
    node = await startNode();
    url = node.urls.tcp as string;
  });
  after(async () => {
    await node?.stop();
  });

  it("a v5 CONNECT gets a v5 CONNACK", async () => {
    const client = mqtt.connect(url, { ...V5, reconnectPeriod: 0, clientId: "v5-connack" });
    try {
      const connack = await new Promise<IConnackPacket>((resolve, reject) => {
        client.once("connect", resolve);
        client.once("error", reject);
      });
      // Only a v5 CONNACK has properties: mqtt5.topicAliasMaximum and receiveMaximum; shared
      // subscriptions are available (the default, not sent)
      assert.equal(connack.reasonCode, 0);
      assert.equal(connack.properties?.sharedSubscriptionAvailable, undefined);
      assert.equal(connack.properties?.topicAliasMaximum, 10);
      assert.equal(connack.properties?.receiveMaximum, 1000);
    } finally {
      await end(client);
    }
  });

  it("user properties, content type, correlation data and response topic arrive intact", async () => {
    const subscriber = await connect(url, { ...V5, clientId: "v5-props-sub" });
    const publisher = await connect(url, { ...V5, clientId: "v5-props-pub" });
    try {
      const inbox = await subscribed(subscriber, "props/#");
      await publisher.publishAsync("props/1", "{}", { qos: 1, properties: PROPERTIES });
      const [message] = await inbox.waitFor(1);
      assert.equal(message?.payload.toString(), "{}");
      assertCarries(message?.packet as IPublishPacket);
    } finally {
      await end(subscriber, publisher);
    }
  });

  it("a v3.1.1 and a v5 client exchange messages both ways", async () => {
    const v5 = await connect(url, { ...V5, clientId: "interop-v5" });
    const v4 = await connect(url, { clientId: "interop-v4" });
    try {
      const toV5 = await subscribed(v5, "interop/to-v5");
      const toV4 = await subscribed(v4, "interop/to-v4");
      await v4.publishAsync("interop/to-v5", "from v3.1.1", { qos: 1 });
      await v5.publishAsync("interop/to-v4", "from v5", { qos: 1, properties: PROPERTIES });
      const [atV5] = await toV5.waitFor(1);
      const [atV4] = await toV4.waitFor(1);
      assert.equal(atV5?.payload.toString(), "from v3.1.1");
      assert.equal(atV4?.payload.toString(), "from v5");
      assert.equal(atV4?.packet.properties, undefined, "v3.1.1 has no properties");
    } finally {
      await end(v5, v4);
    }
  });

  it("a user property longer than the topic limit is no topic: it arrives; a topic that long closes", async () => {
    const long = "p".repeat(5_000); // limits.maxTopicBytes defaults to 4,096
    const subscriber = await connect(url, { ...V5, clientId: "v5-long-sub" });
    const publisher = await connect(url, { ...V5, clientId: "v5-long-pub" });
    try {
      const inbox = await subscribed(subscriber, "long/#");
      await publisher.publishAsync("long/1", "x", {
        qos: 1,
        properties: { userProperties: { note: long } },
      });
      const [message] = await inbox.waitFor(1);
      assert.equal(message?.packet.properties?.userProperties?.note, long);
      const closed = new Promise<void>((resolve) => publisher.once("close", () => resolve()));
      publisher.publish(`long/${long}`, "x", { qos: 0 });
      await closed;
    } finally {
      await end(subscriber, publisher);
    }
  });

  it("a session resumed with Clean Start 0 and no Session Expiry gets its queued messages", async () => {
    await resumedWithoutExpiry(url, url, "resume-mem");
  });

  it("a PUBLISH the ACL refuses gets PUBACK 0x87 (not authorized), and the connection stays", async () => {
    const client = await connect(url, { ...V5, clientId: "v5-denied" });
    try {
      await assert.rejects(client.publishAsync("$SYS/forged", "x", { qos: 1 }), {
        code: 0x87,
      });
      await client.publishAsync("allowed/after", "x", { qos: 1 });
      assert.equal(client.connected, true);
    } finally {
      await end(client);
    }
  });
});

describe("MQTT 5 across two nodes over Redis", () => {
  let pair: NodePair;
  let a: RunningNode;
  let b: RunningNode;
  before(async () => {
    pair = await startNodePair();
    ({ a, b } = pair);
  });
  after(async () => {
    await pair?.stop();
  });

  it("properties published on node A arrive intact on node B", async () => {
    const subscriber = await connect(b.urls.tcp as string, { ...V5, clientId: "x-props-sub" });
    const publisher = await connect(a.urls.tcp as string, { ...V5, clientId: "x-props-pub" });
    try {
      const inbox = await subscribed(subscriber, "xprops/#");
      await publisher.publishAsync("xprops/1", "live", { qos: 1, properties: PROPERTIES });
      await publisher.publishAsync("xprops/0", "qos 0", { qos: 0, properties: PROPERTIES });
      const messages = await inbox.waitFor(2);
      for (const message of messages) assertCarries(message.packet);
    } finally {
      await end(subscriber, publisher);
    }
  });

  it("a persistent v5 session's queued message and a retained message keep their properties", async () => {
    const session = {
      ...V5,
      clientId: "x-persistent",
      clean: false,
      properties: { sessionExpiryInterval: 600 },
    };
    const publisher = await connect(a.urls.tcp as string, { ...V5, clientId: "x-queue-pub" });
    const first = await connect(b.urls.tcp as string, session);
    await first.subscribeAsync("xqueue/#", { qos: 1 });
    await end(first);
    try {
      await publisher.publishAsync("xqueue/1", "queued", { qos: 1, properties: PROPERTIES });
      await publisher.publishAsync("xretained/1", "kept", {
        qos: 1,
        retain: true,
        properties: PROPERTIES,
      });
      const back = await connectWithConnack(b.urls.tcp as string, session);
      try {
        assert.equal(back.sessionPresent, true);
        const [queued] = await back.inbox.waitFor(1);
        assert.equal(queued?.payload.toString(), "queued");
        assertCarries(queued?.packet as IPublishPacket);
        const retained = await subscribed(back.client, "xretained/#");
        const [kept] = await retained.waitFor(1);
        assert.equal(kept?.packet.retain, true);
        assertCarries(kept?.packet as IPublishPacket);
      } finally {
        await end(back.client);
      }
    } finally {
      await end(publisher);
    }
  });

  it("a session resumed with Clean Start 0 and no Session Expiry gets what was queued on the other node", async () => {
    await resumedWithoutExpiry(b.urls.tcp as string, a.urls.tcp as string, "resume-redis");
  });

  it("a v3.1.1 client on one node and a v5 client on the other exchange messages", async () => {
    const v5 = await connect(a.urls.tcp as string, { ...V5, clientId: "x-interop-v5" });
    const v4 = await connect(b.urls.tcp as string, { clientId: "x-interop-v4" });
    try {
      const toV5 = await subscribed(v5, "xinterop/to-v5");
      const toV4 = await subscribed(v4, "xinterop/to-v4");
      await v4.publishAsync("xinterop/to-v5", "from v3.1.1", { qos: 1 });
      await v5.publishAsync("xinterop/to-v4", "from v5", { qos: 1, properties: PROPERTIES });
      assert.equal((await toV5.waitFor(1))[0]?.payload.toString(), "from v3.1.1");
      assert.equal((await toV4.waitFor(1))[0]?.payload.toString(), "from v5");
    } finally {
      await end(v5, v4);
    }
  });
});
