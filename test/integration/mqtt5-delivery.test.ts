import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import type { IClientOptions, IPublishPacket, Packet } from "mqtt";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, end, Inbox } from "../../harness/mqtt-client.js";
import { type NodePair, startNodePair } from "../../harness/node-pair.js";
import { rawConnect } from "../../harness/raw-socket.js";
import { WireClient } from "../../harness/wire-client.js";

/**
 * MQTT 5 outbound flow control and subscription features (issue 15): the client's Receive
 * Maximum, Maximum Packet Size and Topic Alias Maximum, every Subscription Identifier of a
 * message, and the subscription options; seen on the wire by a raw MQTT 5 client.
 */
const V5: IClientOptions = { protocolVersion: 5 };

type ConnectProperties = Record<string, number>;

/** A raw MQTT 5 connection, CONNACK received. */
async function wire(
  url: string,
  clientId: string,
  properties: ConnectProperties = {},
  clean = true,
): Promise<WireClient> {
  const socket = await rawConnect(Number(new URL(url).port));
  const client = new WireClient(socket, 5);
  client.send({
    cmd: "connect",
    protocolId: "MQTT",
    protocolVersion: 5,
    clean,
    clientId,
    keepalive: 60,
    properties,
  } as Packet);
  await client.waitFor("CONNACK", (p) => p.cmd === "connack");
  return client;
}

async function subscribeWire(
  client: WireClient,
  filter: string,
  qos: 0 | 1 | 2,
  messageId: number,
  subscriptionIdentifier?: number,
): Promise<void> {
  client.send({
    cmd: "subscribe",
    messageId,
    subscriptions: [{ topic: filter, qos }],
    ...(subscriptionIdentifier === undefined ? {} : { properties: { subscriptionIdentifier } }),
  } as Packet);
  await client.waitFor("SUBACK", (p) => p.cmd === "suback" && p.messageId === messageId);
}

function publishes(client: WireClient): IPublishPacket[] {
  return client.received("publish") as IPublishPacket[];
}

async function closeWire(client: WireClient): Promise<void> {
  client.send({ cmd: "disconnect" } as Packet);
  client.stream.destroy();
  await client.closed;
}

/** A counter's value for one label set, 0 when absent. */
async function counter(httpUrl: string, series: string): Promise<number> {
  const text = await fetch(`${httpUrl}/metrics`).then((r) => r.text());
  const [name, labels] = series.split("{");
  const line = text
    .split("\n")
    .find((l) => l.startsWith(`${name}{`) && l.includes((labels ?? "").replace("}", "")));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(" ") + 1));
}

const TOO_LARGE = 'sluice_dropped_messages_total{reason="packet_too_large"}';

/** Each scenario with the publisher on `pub` and the subscriber on `sub` (one node or two). */
function scenarios(nodes: () => { pub: RunningNode; sub: RunningNode }): void {
  const pubUrl = () => nodes().pub.urls.tcp as string;
  const subUrl = () => nodes().sub.urls.tcp as string;
  const tag = randomBytes(3).toString("hex");

  it("Receive Maximum 2: the third QoS 1 message waits for the first PUBACK", async () => {
    const sub = await wire(subUrl(), `rm-sub-${tag}`, { receiveMaximum: 2 });
    const publisher = await connect(pubUrl(), V5);
    try {
      await subscribeWire(sub, `rm/${tag}`, 1, 1);
      for (const n of [1, 2, 3]) await publisher.publishAsync(`rm/${tag}`, `m${n}`, { qos: 1 });
      // A QoS 0 message after them passes the window: once it is here, the third has waited
      await publisher.publishAsync(`rm/${tag}`, "marker", { qos: 0 });
      await sub.waitFor("marker", (p) => p.cmd === "publish" && p.payload.toString() === "marker");
      assert.deepEqual(sub.publishedPayloads(), ["m1", "m2", "marker"]);
      sub.send({ cmd: "puback", messageId: publishes(sub)[0]?.messageId } as Packet);
      await sub.waitFor("m3", (p) => p.cmd === "publish" && p.payload.toString() === "m3");
    } finally {
      await end(publisher);
      await closeWire(sub);
    }
  });

  it("Maximum Packet Size 64: a 32-byte payload arrives, a 64-byte one is dropped and counted", async () => {
    const sub = await wire(subUrl(), `mps-sub-${tag}`, { maximumPacketSize: 64 });
    const publisher = await connect(pubUrl(), V5);
    try {
      await subscribeWire(sub, `mps/${tag}`, 1, 1);
      const before = await counter(nodes().sub.httpUrl, TOO_LARGE);
      await publisher.publishAsync(`mps/${tag}`, ".".repeat(32), { qos: 0 });
      await publisher.publishAsync(`mps/${tag}`, ".".repeat(64), { qos: 1 });
      await publisher.publishAsync(`mps/${tag}`, "end", { qos: 1 });
      await sub.waitFor("end", (p) => p.cmd === "publish" && p.payload.toString() === "end");
      assert.deepEqual(sub.publishedPayloads(), [".".repeat(32), "end"]);
      assert.equal(await counter(nodes().sub.httpUrl, TOO_LARGE), before + 1);
      // the dropped QoS 1 message held no slot: the window is not short of one
      assert.ok(publishes(sub).every((p) => p.length === undefined || p.length <= 64));
    } finally {
      await end(publisher);
      await closeWire(sub);
    }
  });

  it("Maximum Packet Size: a persistent session's too-large message leaves its stored queue", async () => {
    const id = `mps-persist-${tag}`;
    const session = { maximumPacketSize: 64, sessionExpiryInterval: 300 };
    const first = await wire(subUrl(), id, session);
    const publisher = await connect(pubUrl(), V5);
    try {
      await subscribeWire(first, `mpsp/${tag}`, 1, 1);
      await publisher.publishAsync(`mpsp/${tag}`, ".".repeat(100), { qos: 1 });
      await publisher.publishAsync(`mpsp/${tag}`, "small", { qos: 1 });
      const small = await first.waitFor("small", (p) => p.cmd === "publish");
      first.send({ cmd: "puback", messageId: (small as IPublishPacket).messageId } as Packet);
      await first.roundTrip();
      await closeWire(first);
      const again = await wire(subUrl(), id, session, false);
      try {
        await again.roundTrip();
        assert.deepEqual(again.publishedPayloads(), [], "nothing left to resend");
      } finally {
        await closeWire(again);
      }
    } finally {
      await end(publisher);
      const cleanup = await wire(subUrl(), id, {}, true);
      await closeWire(cleanup);
    }
  });

  it("Topic Alias Maximum 1: topic and alias first, then the alias alone; none without a maximum", async () => {
    const sub = await wire(subUrl(), `ta-sub-${tag}`, { topicAliasMaximum: 1 });
    const plain = await wire(subUrl(), `ta-plain-${tag}`);
    const publisher = await connect(pubUrl(), V5);
    try {
      await subscribeWire(sub, `ta/${tag}/#`, 2, 1);
      await subscribeWire(plain, `ta/${tag}/#`, 2, 1);
      const topic = `ta/${tag}/x`;
      await Promise.all(
        ([0, 1, 2] as const).map((qos) => publisher.publishAsync(topic, `q${qos}`, { qos })),
      );
      await publisher.publishAsync(`ta/${tag}/y`, "other", { qos: 0 });
      await sub.waitForCount("publish", 4);
      await plain.waitForCount("publish", 4);
      const [p1, p2, p3, p4] = publishes(sub);
      assert.equal(p1?.topic, topic);
      assert.equal(p1?.properties?.topicAlias, 1);
      for (const later of [p2, p3]) {
        assert.equal(later?.topic, "");
        assert.equal(later?.properties?.topicAlias, 1);
      }
      // the only alias is taken: another topic goes in full
      assert.equal(p4?.topic, `ta/${tag}/y`);
      assert.equal(p4?.properties?.topicAlias, undefined);
      for (const p of publishes(plain)) {
        assert.notEqual(p.topic, "");
        assert.equal(p.properties?.topicAlias, undefined);
      }
      // QoS 1 and 2 acknowledged so that the session ends clean
      for (const p of [p2, p3]) {
        if (p?.qos === 1) sub.send({ cmd: "puback", messageId: p.messageId } as Packet);
      }
    } finally {
      await end(publisher);
      await closeWire(sub);
      await closeWire(plain);
    }
  });

  it("Topic Alias: a stored message resent after reconnect names its topic (aliases are per connection)", async () => {
    const id = `ta-persist-${tag}`;
    const session = { topicAliasMaximum: 1, sessionExpiryInterval: 300 };
    const first = await wire(subUrl(), id, session);
    const publisher = await connect(pubUrl(), V5);
    try {
      await subscribeWire(first, `tap/${tag}`, 1, 1);
      await publisher.publishAsync(`tap/${tag}`, "live", { qos: 0 });
      await publisher.publishAsync(`tap/${tag}`, "unacked", { qos: 1 });
      await first.waitForCount("publish", 2);
      await closeWire(first);
      const again = await wire(subUrl(), id, session, false);
      try {
        const resent = (await again.waitFor(
          "resend",
          (p) => p.cmd === "publish",
        )) as IPublishPacket;
        assert.equal(resent.payload.toString(), "unacked");
        assert.equal(resent.topic, `tap/${tag}`);
        assert.equal(resent.dup, true);
        again.send({ cmd: "puback", messageId: resent.messageId } as Packet);
        await again.roundTrip();
      } finally {
        await closeWire(again);
      }
    } finally {
      await end(publisher);
      await closeWire(await wire(subUrl(), id, {}, true));
    }
  });

  it("a stored or retained message published without properties is sent again without any", async () => {
    // A v5 PUBLISH with an empty list has them undefined, which a store over Redis reads back
    // as null: mqtt-packet's writer would throw on it.
    const id = `noprops-persist-${tag}`;
    const session = { sessionExpiryInterval: 300 };
    const first = await wire(subUrl(), id, session);
    const publisher = await connect(pubUrl(), V5);
    try {
      await subscribeWire(first, `np/${tag}`, 1, 1);
      await closeWire(first);
      await publisher.publishAsync(`np/${tag}`, "queued", { qos: 1 });
      await publisher.publishAsync(`npr/${tag}`, "retained", { qos: 1, retain: true });
      const again = await wire(subUrl(), id, session, false);
      try {
        const queued = (await again.waitFor(
          "queued",
          (p) => p.cmd === "publish",
        )) as IPublishPacket;
        assert.equal(queued.payload.toString(), "queued");
        assert.deepEqual(queued.properties ?? {}, {});
        again.send({ cmd: "puback", messageId: queued.messageId } as Packet);
        await subscribeWire(again, `npr/${tag}`, 1, 2);
        const retained = (await again.waitFor(
          "retained",
          (p) => p.cmd === "publish" && p.payload.toString() === "retained",
        )) as IPublishPacket;
        assert.deepEqual(retained.properties ?? {}, {});
        again.send({ cmd: "puback", messageId: retained.messageId } as Packet);
        await again.roundTrip();
      } finally {
        await closeWire(again);
      }
    } finally {
      await publisher.publishAsync(`npr/${tag}`, "", { qos: 1, retain: true });
      await end(publisher);
      await closeWire(await wire(subUrl(), id, {}, true));
    }
  });

  it("Subscription Identifiers: one message carries every matching subscription's", async () => {
    const sub = await wire(subUrl(), `sid-sub-${tag}`);
    const other = await wire(subUrl(), `sid-other-${tag}`);
    const publisher = await connect(pubUrl(), V5);
    try {
      const topic = `sid/${tag}`;
      await subscribeWire(sub, topic, 1, 1, 2);
      await subscribeWire(sub, `${topic}/#`, 1, 2, 3);
      await subscribeWire(other, topic, 1, 1, 456789);
      await publisher.publishAsync(topic, "hello", { qos: 1 });
      await publisher.publishAsync(topic, "end", { qos: 0 });
      await sub.waitFor("end", (p) => p.cmd === "publish" && p.payload.toString() === "end");
      await other.waitFor("end", (p) => p.cmd === "publish" && p.payload.toString() === "end");
      const [hello] = publishes(sub);
      assert.equal(publishes(sub).length, 2, "delivered once");
      assert.deepEqual(hello?.properties?.subscriptionIdentifier, [2, 3]);
      assert.deepEqual(publishes(other)[0]?.properties?.subscriptionIdentifier, 456789);
    } finally {
      await end(publisher);
      await closeWire(sub);
      await closeWire(other);
    }
  });

  it("Subscription Identifiers: a stored message resent on reconnect carries them", async () => {
    const id = `sid-persist-${tag}`;
    const session = { sessionExpiryInterval: 300 };
    const first = await wire(subUrl(), id, session);
    const publisher = await connect(pubUrl(), V5);
    try {
      await subscribeWire(first, `sidp/${tag}/#`, 1, 1, 7);
      await closeWire(first);
      await publisher.publishAsync(`sidp/${tag}/x`, "queued", { qos: 1 });
      const again = await wire(subUrl(), id, session, false);
      try {
        const resent = (await again.waitFor(
          "queued",
          (p) => p.cmd === "publish",
        )) as IPublishPacket;
        assert.equal(resent.payload.toString(), "queued");
        assert.equal(resent.properties?.subscriptionIdentifier, 7);
        again.send({ cmd: "puback", messageId: resent.messageId } as Packet);
        await again.roundTrip();
      } finally {
        await closeWire(again);
      }
    } finally {
      await end(publisher);
      await closeWire(await wire(subUrl(), id, {}, true));
    }
  });

  it("No Local, Retain As Published and Retain Handling 0/1/2; retained messages keep user properties", async () => {
    const a = await connect(subUrl(), V5);
    const b = await connect(pubUrl(), V5);
    const base = `opt/${tag}`;
    try {
      // No Local: a client's own message is not sent back to it, another client's is
      const inboxA = new Inbox(a);
      const inboxB = new Inbox(b);
      await a.subscribeAsync(`${base}/nl`, { qos: 1, nl: true });
      await b.subscribeAsync(`${base}/nl`, { qos: 1, nl: true });
      await a.publishAsync(`${base}/nl`, "from a", { qos: 1 });
      await b.publishAsync(`${base}/nl`, "from b", { qos: 1 });
      const [fromB] = await inboxA.waitFor(1);
      const [fromA] = await inboxB.waitFor(1);
      assert.equal(fromB?.payload.toString(), "from b");
      assert.equal(fromA?.payload.toString(), "from a");

      // Retain As Published: the retain flag as published; without it, cleared
      await a.subscribeAsync(`${base}/rap`, { qos: 1, rap: true });
      await b.subscribeAsync(`${base}/rap`, { qos: 1 });
      await b.publishAsync(`${base}/rap`, "retained", {
        qos: 1,
        retain: true,
        properties: { userProperties: { a: "2", c: "3" } },
      });
      const [, rap] = await inboxA.waitFor(2);
      const [, cleared] = await inboxB.waitFor(2);
      assert.equal(rap?.packet.retain, true);
      assert.equal(cleared?.packet.retain, false);

      // Retain Handling: 0 at every SUBSCRIBE, 1 only at a new one, 2 never
      const c = await connect(subUrl(), V5);
      try {
        const inboxC = new Inbox(c);
        await c.subscribeAsync(`${base}/rap`, { qos: 1, rh: 2 });
        await c.subscribeAsync(`${base}/+`, { qos: 1, rh: 1 });
        await c.subscribeAsync(`${base}/+`, { qos: 1, rh: 1 });
        await c.subscribeAsync(`${base}/#`, { qos: 1, rh: 0 });
        await c.subscribeAsync(`${base}/#`, { qos: 1, rh: 0 });
        // over Redis the retained messages are read after the SUBACK: awaited, then a marker
        await waitForPayload(inboxC, "retained", 3);
        await c.publishAsync(`${base}/end`, "end", { qos: 1 });
        const received = await waitForPayload(inboxC, "end");
        const retained = received.filter((m) => m.payload.toString() === "retained");
        assert.equal(retained.length, 3, "rh 1 once, rh 0 twice, rh 2 never");
        for (const message of retained) {
          assert.equal(message.packet.retain, true);
          assert.deepEqual({ ...message.packet.properties?.userProperties }, { a: "2", c: "3" });
        }
      } finally {
        await end(c);
      }
    } finally {
      await b.publishAsync(`${base}/rap`, "", { qos: 1, retain: true });
      await end(a, b);
    }
  });
}

/** The messages received until the `times`-th one with this payload (among the first 50). */
async function waitForPayload(
  inbox: Inbox,
  payload: string,
  times = 1,
): Promise<Inbox["received"]> {
  let seen = 0;
  for (let count = 1; count <= 50; count++) {
    const items = await inbox.waitFor(count);
    if (items[count - 1]?.payload.toString() === payload && ++seen === times) return items;
  }
  throw new Error(`no ${payload} among the first 50 messages`);
}

describe("MQTT 5 delivery on one node, in memory", () => {
  let node: RunningNode;
  before(async () => {
    node = await startNode();
  });
  after(async () => {
    await node?.stop();
  });

  scenarios(() => ({ pub: node, sub: node }));

  it("inbound Topic Alias: the maximum is advertised; alias 0 or above it is DISCONNECT 0x94", async () => {
    const url = node.urls.tcp as string;
    const sub = await connect(url, V5);
    const inbox = new Inbox(sub);
    await sub.subscribeAsync("alias/in", { qos: 0 });
    try {
      const good = await wire(url, "alias-good");
      const connack = good.received("connack")[0] as Packet & {
        properties?: { topicAliasMaximum?: number };
      };
      assert.equal(connack.properties?.topicAliasMaximum, 10);
      good.send({
        cmd: "publish",
        topic: "alias/in",
        payload: Buffer.from("set"),
        qos: 0,
        properties: { topicAlias: 10 },
      } as Packet);
      good.send({
        cmd: "publish",
        topic: "",
        payload: Buffer.from("used"),
        qos: 0,
        properties: { topicAlias: 10 },
      } as Packet);
      const [set, used] = await inbox.waitFor(2);
      assert.equal(set?.topic, "alias/in");
      assert.equal(used?.topic, "alias/in");
      await closeWire(good);
      for (const alias of [0, 11]) {
        const bad = await wire(url, `alias-bad-${alias}`);
        // mqtt-packet refuses to encode alias 0: the PUBLISH is written by hand
        const publish = Buffer.from([
          0x30,
          0x0b,
          0x00,
          0x03,
          0x61,
          0x2f,
          0x62,
          0x03,
          0x23,
          0x00,
          alias,
          0x68,
          0x69,
        ]);
        bad.send(publish);
        const disconnect = await bad.waitFor("DISCONNECT", (p) => p.cmd === "disconnect");
        assert.equal((disconnect as Packet & { reasonCode?: number }).reasonCode, 0x94);
        await bad.closedWithin();
      }
    } finally {
      await end(sub);
    }
  });
});

describe("MQTT 5 delivery across two nodes over Redis", () => {
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

  scenarios(() => ({ pub: a, sub: b }));
});
