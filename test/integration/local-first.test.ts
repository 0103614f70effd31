import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { Redis } from "ioredis";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, end, Inbox, type MqttClient, subscribe } from "../../harness/mqtt-client.js";
import { metricSum } from "../../harness/node-metrics.js";
import { RedisServer } from "../../harness/redis-server.js";
import { type EmittedMessage, encodeEnvelope } from "../../src/engine/envelope.js";

/**
 * Local-first delivery on two nodes over one real Redis: a message reaches its own node's
 * subscribers without the Redis round trip, the other node once through Redis, and the PUBACK
 * still waits for Redis. Redis is held with CLIENT PAUSE WRITE (PUBLISH is a write there),
 * always lifted by the test.
 */
let redis: RedisServer;
let control: Redis;
let a: RunningNode;
let b: RunningNode;

before(async () => {
  redis = await RedisServer.start();
  control = new Redis(redis.url);
  const prefix = `t${randomBytes(4).toString("hex")}:`;
  a = await startNode({ nodeId: "node-a", redis: { url: redis.url, keyPrefix: prefix } });
  b = await startNode({ nodeId: "node-b", redis: { url: redis.url, keyPrefix: prefix } });
});
after(async () => {
  await control?.call("CLIENT", "UNPAUSE").catch(() => undefined);
  await a?.stop();
  await b?.stop();
  control?.disconnect();
  await redis?.stop();
});

const payloads = (inbox: Inbox): string[] => inbox.received.map((m) => m.payload.toString());

describe("local-first delivery", () => {
  it("a local subscriber gets the message while Redis holds it; the remote one gets it once through Redis; PUBACK after Redis", async () => {
    const local = await connect(a.urls.tcp as string);
    const remote = await connect(b.urls.tcp as string);
    const publisher = await connect(a.urls.tcp as string);
    const remotePublisher = await connect(b.urls.tcp as string);
    try {
      const localInbox = new Inbox(local);
      const remoteInbox = new Inbox(remote);
      await subscribe(local, "lf/+", 1);
      await subscribe(remote, "lf/+", 1);

      await control.call("CLIENT", "PAUSE", "10000", "WRITE");
      let acknowledged = false;
      const published = publisher.publishAsync("lf/1", "first", { qos: 1 }).then(() => {
        acknowledged = true;
      });
      try {
        await withDeadline(localInbox.waitFor(1), 5_000, "local delivery while Redis is paused");
        assert.deepEqual(payloads(remoteInbox), [], "the remote node waits for Redis");
        assert.equal(acknowledged, false, "no PUBACK before Redis has the message");
      } finally {
        await control.call("CLIENT", "UNPAUSE");
      }
      await withDeadline(published, 5_000, "PUBACK once Redis is back");
      await withDeadline(remoteInbox.waitFor(1), 5_000, "remote delivery once Redis is back");

      // Node B's message reaches node A through the same subscription after node A's echo of
      // "first" would have: were the echo delivered, it would come before this one.
      await remotePublisher.publishAsync("lf/2", "second", { qos: 1 });
      await withDeadline(localInbox.waitFor(2), 5_000, "second message on node A");
      await withDeadline(remoteInbox.waitFor(2), 5_000, "second message on node B");
      assert.deepEqual(payloads(localInbox), ["first", "second"], "no echo on node A");
      assert.deepEqual(payloads(remoteInbox), ["first", "second"]);
    } finally {
      await end(local, remote, publisher, remotePublisher);
    }
  });

  it("delivers a message once on a node whose Redis subscription gets it under several filters", async () => {
    // node B subscribes to one channel and two patterns that all match lf/ov/x: Redis sends it
    // three copies, which must reach each client once
    const wide = await connect(b.urls.tcp as string);
    const plus = await connect(b.urls.tcp as string);
    const exact = await connect(b.urls.tcp as string);
    const publisher = await connect(a.urls.tcp as string);
    try {
      const inboxes = [new Inbox(wide), new Inbox(plus), new Inbox(exact)];
      await subscribe(wide, "lf/#", 1);
      await subscribe(plus, "lf/ov/+", 1);
      await subscribe(exact, "lf/ov/x", 1);
      await publisher.publishAsync("lf/ov/x", "m1", { qos: 1 });
      await publisher.publishAsync("lf/ov/x", "m2", { qos: 1 });
      for (const inbox of inboxes) await withDeadline(inbox.waitFor(2), 5_000, "both messages");
      // a third message behind them: a duplicate of m1 or m2 would have arrived before it
      await publisher.publishAsync("lf/ov/x", "m3", { qos: 1 });
      for (const inbox of inboxes) {
        await withDeadline(inbox.waitFor(3), 5_000, "the third message");
        assert.deepEqual(payloads(inbox), ["m1", "m2", "m3"], "each once");
      }
    } finally {
      await end(wide, plus, exact, publisher);
    }
  });

  it("keeps each publisher's order for local and remote subscribers, at QoS 0 and 1", async () => {
    const count = 300;
    const subscribers = [await connect(a.urls.tcp as string), await connect(b.urls.tcp as string)];
    const publishers: Array<[string, MqttClient]> = [
      ["a", await connect(a.urls.tcp as string)],
      ["b", await connect(b.urls.tcp as string)],
    ];
    // MQTT orders per topic and QoS [MQTT-4.6.0-6]: a stream per publisher and QoS.
    const streams = publishers.flatMap(([name, client]) =>
      ([0, 1] as const).map((qos) => ({ stream: `${name}${qos}`, client, qos })),
    );
    try {
      const inboxes = subscribers.map((client) => new Inbox(client));
      for (const client of subscribers) await subscribe(client, "order/#", 1);
      // Not awaited one by one: each stream's messages are in flight together.
      await publishInOrder("order", streams, count, inboxes);
    } finally {
      await end(...subscribers, ...publishers.map(([, client]) => client));
    }
  });

  it("aedes' CONNECT, disconnection and SUBSCRIBE notices stay on their node; other traffic goes through Redis", async () => {
    const watcher = new Redis(redis.url);
    const channels: string[] = [];
    watcher.on("pmessage", (_pattern: string, channel: string) => channels.push(channel));
    await watcher.psubscribe("*");
    const client = await connect(a.urls.tcp as string);
    try {
      // A client that comes and goes: its CONNECT and its disconnection are noticed by aedes.
      await end(await connect(a.urls.tcp as string));
      await withDeadline(openConnections(a, 1), 5_000, "the leaver's close handled");
      await subscribe(client, "notice/probe", 1);
      const probed = new Promise<void>((resolve) =>
        watcher.on("pmessage", (_pattern: string, channel: string) => {
          if (channel === "notice/probe") resolve();
        }),
      );
      // Published after the SUBSCRIBE on the node's one publisher connection: Redis carries the
      // notice, if the node sent one, before this.
      await client.publishAsync("notice/probe", "after", { qos: 1 });
      await withDeadline(probed, 5_000, "the probe through Redis");
      assert.deepEqual(
        channels.filter((c) => /\/(new|disconnect)\/(subscribes|clients)$/.test(c)),
        [],
        "no connect, disconnect or subscribe notice through Redis",
      );
    } finally {
      await end(client);
      watcher.disconnect();
    }
  });

  it("a message on Sentinel's hello channel is not delivered; one on a channel of its length is", async () => {
    const client = await connect(b.urls.tcp as string);
    try {
      const inbox = new Inbox(client);
      await subscribe(client, "#", 0);
      // Another node's envelopes (not this node's echo), as a "#" subscription's PSUBSCRIBE * hears
      const hello = "__sentinel__:hello";
      const sameLength = "x".repeat(Buffer.byteLength(hello));
      const envelope = (topic: string, sequence: number, payload: string): Buffer =>
        encodeEnvelope(`elsewhere:${sequence}`, {
          cmd: "publish",
          brokerId: "elsewhere",
          brokerCounter: sequence,
          topic,
          payload: Buffer.from(payload),
          qos: 0,
          retain: false,
          dup: false,
        } as EmittedMessage);
      await control.publish(hello, envelope(hello, 1, "hello"));
      await control.publish(sameLength, envelope(sameLength, 2, "after"));
      await withDeadline(inbox.waitFor(1), 5_000, "the message on a channel of the hello's length");
      assert.deepEqual(payloads(inbox), ["after"], "Redis sent the hello first: it was dropped");
    } finally {
      await end(client);
    }
  });
});

describe("local-first delivery across a rolling upgrade: one node writes msgpack, one compact", () => {
  let older: RunningNode;
  let newer: RunningNode;
  let watcher: Redis;
  before(async () => {
    const prefix = `t${randomBytes(4).toString("hex")}:`;
    older = await startNode({
      nodeId: "node-msgpack",
      redis: { url: redis.url, keyPrefix: prefix, messageFormat: "msgpack" },
    });
    newer = await startNode({
      nodeId: "node-compact",
      redis: { url: redis.url, keyPrefix: prefix },
    });
    watcher = new Redis(redis.url);
  });
  after(async () => {
    watcher?.disconnect();
    await older?.stop();
    await newer?.stop();
  });

  it("each node writes its format, reads the other's, and keeps each publisher's order", async () => {
    const count = 200;
    const onWire: string[] = [];
    await watcher.subscribe("upgrade/msgpack/0", "upgrade/compact/0");
    // each message's channel and first byte, as Redis carries it
    watcher.on("messageBuffer", (channel: Buffer, message: Buffer) =>
      onWire.push(`${channel.toString()} ${message[0]?.toString(16)}`),
    );
    const nodes = { msgpack: older, compact: newer };
    const subscribers = [
      await connect(older.urls.tcp as string),
      await connect(newer.urls.tcp as string),
    ];
    const publishers = await Promise.all(
      Object.values(nodes).map((node) => connect(node.urls.tcp as string)),
    );
    try {
      const inboxes = subscribers.map((client) => new Inbox(client));
      for (const client of subscribers) await subscribe(client, "upgrade/#", 1);
      const streams = Object.keys(nodes).flatMap((format, index) =>
        ([0, 1] as const).map((qos) => ({
          stream: `${format}/${qos}`,
          client: publishers[index] as MqttClient,
          qos,
        })),
      );
      await publishInOrder("upgrade", streams, count, inboxes);
      await withDeadline(
        (async () => {
          while (onWire.length < 2 * count) await new Promise((resolve) => setTimeout(resolve, 10));
        })(),
        5_000,
        "the QoS 0 messages seen in Redis",
      );
      assert.deepEqual(
        [...new Set(onWire)].sort(),
        ["upgrade/compact/0 c1", "upgrade/msgpack/0 82"],
        "a compact envelope from one node, a msgpack map from the other",
      );
    } finally {
      await end(...subscribers, ...publishers);
    }
  });
});

describe("local-first delivery, bad input", () => {
  it("a PUBLISH into Redis that is not an envelope is dropped and counted; the node delivers the next message", async () => {
    const client = await connect(b.urls.tcp as string);
    try {
      const inbox = new Inbox(client);
      await subscribe(client, "stray/1", 0);
      const before = await metricSum(b.httpUrl, "sluice_dropped_messages_total");
      await control.publish("stray/1", "not an envelope");
      const publisher = await connect(a.urls.tcp as string);
      try {
        await publisher.publishAsync("stray/1", "after", { qos: 1 });
      } finally {
        await end(publisher);
      }
      await withDeadline(inbox.waitFor(1), 5_000, "the message after the stray one");
      assert.deepEqual(payloads(inbox), ["after"]);
      assert.equal(await metricSum(b.httpUrl, "sluice_dropped_messages_total"), before + 1);
    } finally {
      await end(client);
    }
  });
});

/** Resolves once the node counts exactly `count` open connections (its socket-close handling done). */
async function openConnections(node: RunningNode, count: number): Promise<void> {
  while ((await metricSum(node.httpUrl, "sluice_connections")) !== count)
    await new Promise((resolve) => setTimeout(resolve, 20));
}

/**
 * Publishes `count` messages on each stream (`<root>/<stream>`, every message of every stream
 * in flight together) and checks that each inbox gets every stream's messages in order [MQTT-4.6.0-6].
 */
async function publishInOrder(
  root: string,
  streams: Array<{ stream: string; client: MqttClient; qos: 0 | 1 }>,
  count: number,
  inboxes: Inbox[],
): Promise<void> {
  await Promise.all(
    streams.flatMap(({ stream, client, qos }) =>
      Array.from({ length: count }, (_, i) =>
        client.publishAsync(`${root}/${stream}`, `${stream}:${i}`, { qos }),
      ),
    ),
  );
  for (const [index, inbox] of inboxes.entries()) {
    const received = await withDeadline(
      inbox.waitFor(streams.length * count),
      10_000,
      `every message on subscriber ${index}`,
    );
    for (const { stream } of streams) {
      const sequence = received
        .map((m) => m.payload.toString())
        .filter((p) => p.startsWith(`${stream}:`))
        .map((p) => Number(p.slice(stream.length + 1)));
      assert.deepEqual(
        sequence,
        Array.from({ length: count }, (_, i) => i),
        `stream ${stream}`,
      );
    }
  }
}
