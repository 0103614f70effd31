import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, connectWithConnack, end, Inbox, subscribe } from "../../harness/mqtt-client.js";
import { RedisCluster } from "../../harness/redis-cluster.js";

/**
 * Two nodes on a real Redis Cluster (three primaries): pub/sub, retained messages spread over
 * the cluster's slots, sessions and client-id ownership work as on a single Redis.
 */
let cluster: RedisCluster;
let a: RunningNode;
let b: RunningNode;

before(async () => {
  cluster = await RedisCluster.start();
  const keyPrefix = `rc${randomBytes(3).toString("hex")}:`;
  const node = (nodeId: string) =>
    startNode({ nodeId, redis: { cluster: cluster.nodes, keyPrefix } });
  a = await node("rc-a");
  b = await node("rc-b");
});
after(async () => {
  await a?.stop();
  await b?.stop();
  await cluster?.stop();
});

describe("Redis Cluster", () => {
  it("a message published on one node reaches a subscriber on the other, once", async () => {
    const subscriber = await connect(b.urls.tcp as string);
    const publisher = await connect(a.urls.tcp as string);
    try {
      const inbox = new Inbox(subscriber);
      await subscribe(subscriber, "rc/live/#", 1);
      for (let i = 0; i < 20; i++)
        await publisher.publishAsync(`rc/live/${i}`, `m${i}`, { qos: 1 });
      await publisher.publishAsync("rc/live/end", "end", { qos: 1 });
      const messages = await inbox.waitFor(21);
      assert.equal(messages.at(-1)?.payload.toString(), "end");
      assert.equal(new Set(messages.map((m) => m.topic)).size, 21, "no duplicates");
    } finally {
      await end(subscriber, publisher);
    }
  });

  it("keeps one publisher's messages on a topic in order across nodes [MQTT-4.6.0-6]", async () => {
    const subscriber = await connect(b.urls.tcp as string);
    const publisher = await connect(a.urls.tcp as string);
    try {
      const inbox = new Inbox(subscriber);
      await subscribe(subscriber, "rc/ordered", 1);
      // Pipelined, so that consecutive messages are in Redis at the same time: an engine that
      // spread its PUBLISHes over the primaries would let the cluster bus reorder them.
      const count = 300;
      await Promise.all(
        Array.from({ length: count }, (_, i) =>
          publisher.publishAsync("rc/ordered", String(i), { qos: 1 }),
        ),
      );
      const messages = await inbox.waitFor(count);
      const order = messages.map((m) => Number(m.payload.toString()));
      assert.deepEqual(
        order,
        Array.from({ length: count }, (_, i) => i),
      );
    } finally {
      await end(subscriber, publisher);
    }
  });

  it("retained messages spread over the slots are all found by a wildcard on the other node", async () => {
    const publisher = await connect(a.urls.tcp as string);
    const topics = Array.from({ length: 30 }, (_, i) => `rc/kept/station-${i}/level`);
    for (const topic of topics) {
      await publisher.publishAsync(topic, topic, { qos: 1, retain: true });
    }
    await end(publisher);
    const subscriber = await connect(b.urls.tcp as string);
    try {
      const inbox = new Inbox(subscriber);
      await subscribe(subscriber, "rc/kept/+/level", 1);
      const messages = await inbox.waitFor(topics.length);
      assert.deepEqual(messages.map((m) => m.topic).sort(), [...topics].sort());
      assert.ok(messages.every((m) => m.packet.retain));
    } finally {
      await end(subscriber);
    }
  });

  it("a persistent session resumes on the other node with the messages queued meanwhile", async () => {
    const first = await connect(a.urls.tcp as string, { clientId: "rc-plc", clean: false });
    await subscribe(first, "rc/commands/plc", 1);
    await end(first);
    const publisher = await connect(a.urls.tcp as string);
    await publisher.publishAsync("rc/commands/plc", "open valve", { qos: 1 });
    await end(publisher);
    const resumed = await connectWithConnack(b.urls.tcp as string, {
      clientId: "rc-plc",
      clean: false,
    });
    try {
      assert.equal(resumed.sessionPresent, true);
      const [message] = await resumed.inbox.waitFor(1);
      assert.equal(message?.payload.toString(), "open valve");
    } finally {
      await end(resumed.client);
    }
  });

  it("a client id connected on one node is taken over by a connection on the other", async () => {
    const first = await connect(a.urls.tcp as string, { clientId: "rc-rtu" });
    const closed = new Promise<void>((resolve) => first.once("close", () => resolve()));
    const second = await connect(b.urls.tcp as string, { clientId: "rc-rtu" });
    try {
      await closed;
      assert.equal(second.connected, true);
    } finally {
      await end(first, second);
    }
  });

  it("counts the retained messages across the cluster's primaries", async () => {
    const metrics = await fetch(`${a.httpUrl}/metrics`).then((r) => r.text());
    const count = Number(/^sluice_retained_messages\{node="rc-a"\} (\d+)$/m.exec(metrics)?.[1]);
    assert.ok(count >= 30, `retained count ${count}`);
  });

  it("a shared subscription's messages go to one member each, members on both nodes", async () => {
    const filter = "$share/rc/line/#";
    const members = [
      await connect(a.urls.tcp as string, { protocolVersion: 5, clientId: "rc-m1" }),
      await connect(b.urls.tcp as string, { protocolVersion: 5, clientId: "rc-m2" }),
    ];
    const inboxes = members.map((m) => new Inbox(m));
    for (const m of members) await m.subscribeAsync(filter, { qos: 1 });
    // The publishing node sees both members (its view of the group, from the cluster's state).
    const deadline = Date.now() + 10_000;
    for (;;) {
      const metrics = await fetch(`${a.httpUrl}/metrics`).then((r) => r.text());
      if (/^sluice_shared_members\{group="rc\/line\/#",node="rc-a"\} 2$/m.test(metrics)) break;
      assert.ok(Date.now() < deadline, "rc-a sees both members");
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const publisher = await connect(a.urls.tcp as string, { clientId: "rc-share-pub" });
    try {
      for (let i = 0; i < 100; i++)
        await publisher.publishAsync(`line/${i % 3}`, `s${i}`, { qos: 1 });
      const counts = () => inboxes.map((inbox) => inbox.received.length);
      while (counts().reduce((x, y) => x + y, 0) < 100) {
        assert.ok(Date.now() < deadline + 10_000, `100 shared messages (got ${counts()})`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const got = inboxes.flatMap((inbox) => inbox.received.map((r) => r.payload.toString()));
      assert.deepEqual(got.sort(), Array.from({ length: 100 }, (_, i) => `s${i}`).sort());
      for (const count of counts()) assert.ok(count >= 35, `round robin: ${counts()}`);
    } finally {
      await end(publisher, ...members);
    }
  });
});
