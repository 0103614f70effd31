import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { LogCapture } from "../../harness/log-capture.js";
import { connect, end, Inbox, type MqttClient } from "../../harness/mqtt-client.js";
import { dropConnection, openV5 } from "../../harness/mqtt5-session.js";
import { RedisServer } from "../../harness/redis-server.js";
import type { LogLine } from "../../harness/sluice-process.js";

/**
 * Issue 17, "wills exactly once": a will whose PUBLISH fails is published again later
 * (durable-wills.ts). Redis is made to refuse PUBLISH alone (an ACL rule), so the will reaches
 * the holder's node's own subscribers and the stored queues of offline sessions (local-first
 * delivery, before Redis answers) and not the other node. Its retry must reach the other node
 * and no one twice. A session of expiry 0 ends meanwhile (its stored state wiped): the will it
 * left must still go out.
 */
describe("a will whose PUBLISH failed after reaching some subscribers", () => {
  let redis: RedisServer;
  let a: RunningNode;
  let b: RunningNode;
  const log = new LogCapture("debug");
  const logB = new LogCapture("debug");
  const clients: MqttClient[] = [];
  const prefix = `wr${randomBytes(4).toString("hex")}:`;

  const refusePublish = async (refuse: boolean) =>
    assert.equal(
      await redis.command("ACL", "SETUSER", "default", refuse ? "-publish" : "+publish"),
      "+OK",
    );

  before(async () => {
    redis = await RedisServer.start();
    const redisConfig = { url: redis.url, keyPrefix: prefix };
    a = await startNode({ nodeId: "node-a", redis: redisConfig }, process.cwd(), {
      logger: log.logger,
    });
    b = await startNode({ nodeId: "node-b", redis: redisConfig }, process.cwd(), {
      logger: logB.logger,
    });
  });

  after(async () => {
    // The fault is removed whatever happened.
    await redis?.command("ACL", "SETUSER", "default", "+publish").catch(() => {});
    await end(...clients);
    await a?.stop();
    await b?.stop();
    await redis?.stop();
  });

  /** Watchers on both nodes and an offline session; resolves once the path across nodes works. */
  async function watchers(topic: string) {
    const local = await connect(a.urls.tcp as string);
    const remote = await connect(b.urls.tcp as string);
    const offlineId = `${topic.replaceAll("/", "-")}-offline`;
    const offline = await connect(a.urls.tcp as string, { clientId: offlineId, clean: false });
    const publisher = await connect(a.urls.tcp as string);
    clients.push(local, remote, publisher);
    for (const client of [local, remote, offline]) await client.subscribeAsync(topic, { qos: 1 });
    await offline.endAsync();
    const inboxes = [new Inbox(local), new Inbox(remote)];
    await publisher.publishAsync(topic, "ready", { qos: 1 });
    await withDeadline(Promise.all(inboxes.map((i) => i.waitFor(1))), 5_000, "ready everywhere");
    return { inboxes, publisher, offlineId };
  }

  /** The holder's connection drops while Redis refuses PUBLISH; resolves once the will is out. */
  async function dropDuringFault(id: string, drop: () => Promise<void>): Promise<void> {
    await refusePublish(true);
    try {
      await drop();
      await withDeadline(
        log.waitFor((l) => l.event === "client.will_deferred" && l.clientId === id),
        10_000,
        "the will kept",
      );
    } finally {
      await refusePublish(false);
    }
    await withDeadline(
      log.waitFor((l) => l.event === "client.will_published_late" && l.clientId === id),
      10_000,
      "the will published again",
    );
  }

  /** Each watcher and the offline session got the will once, before a later marker. */
  async function assertOnce(
    topic: string,
    watched: Awaited<ReturnType<typeof watchers>>,
  ): Promise<void> {
    await watched.publisher.publishAsync(topic, "marker", { qos: 1 });
    for (const [i, inbox] of watched.inboxes.entries()) {
      await withDeadline(inbox.waitFor(3), 10_000, `the marker at watcher ${i}`);
      const payloads = inbox.received.map((m) => m.payload.toString());
      assert.deepEqual(payloads, ["ready", "gone", "marker"], `watcher ${i}: the will once`);
    }
    const offline = await connect(a.urls.tcp as string, {
      clientId: watched.offlineId,
      clean: false,
    });
    clients.push(offline);
    const queued = new Inbox(offline);
    await withDeadline(queued.waitFor(3), 10_000, "the offline session's queue");
    assert.deepEqual(
      queued.received.map((m) => m.payload.toString()),
      ["ready", "gone", "marker"],
      "the offline session: the will once",
    );
  }

  it("MQTT 3.1.1: its retry reaches the other node, and no one twice", async () => {
    const topic = `will-retry/v4-${randomBytes(3).toString("hex")}`;
    const watched = await watchers(topic);
    const id = `holder-${randomBytes(3).toString("hex")}`;
    const holder = await connect(a.urls.tcp as string, {
      clientId: id,
      will: { topic, payload: Buffer.from("gone"), qos: 1, retain: false },
    });
    holder.on("error", () => {});
    await dropDuringFault(id, async () => {
      holder.stream.destroy();
    });
    await assertOnce(topic, watched);
  });

  it("MQTT 5, Clean Start 0 and expiry 0: the session ends, its will still goes out once", async () => {
    const topic = `will-retry/v5-${randomBytes(3).toString("hex")}`;
    const watched = await watchers(topic);
    const id = `holder5-${randomBytes(3).toString("hex")}`;
    const holder = await openV5(a.urls.tcp as string, id, {
      cleanStart: false,
      expiry: 0,
      will: { topic, payload: Buffer.from("gone"), qos: 1, retain: false },
    });
    await dropDuringFault(id, () => dropConnection(holder.client));
    await assertOnce(topic, watched);
  });

  it("MQTT 5 delayed will fired by the cluster's timers: published once at its next turn", async () => {
    const topic = `will-retry/delayed-${randomBytes(3).toString("hex")}`;
    const watched = await watchers(topic);
    const id = `delayed-${randomBytes(3).toString("hex")}`;
    const holder = await openV5(a.urls.tcp as string, id, {
      cleanStart: true,
      expiry: 30,
      will: {
        topic,
        payload: Buffer.from("gone"),
        qos: 1,
        retain: false,
        properties: { willDelayInterval: 1 },
      },
    });
    const failed = (line: LogLine) =>
      line.event === "due_schedule.handler_failed" && line.key === "session-timers";
    const published = (line: LogLine) =>
      line.event === "client.will_published" && line.clientId === id;
    await refusePublish(true);
    try {
      await dropConnection(holder.client);
      // Either node's timers may fire it.
      await withDeadline(
        Promise.race([log.waitFor(failed), logB.waitFor(failed)]),
        10_000,
        "the timer's PUBLISH failed",
      );
    } finally {
      await refusePublish(false);
    }
    // Due again after the timer claim's lease (10 s).
    await withDeadline(
      Promise.race([log.waitFor(published), logB.waitFor(published)]),
      20_000,
      "the will published at the timer's next turn",
    );
    await assertOnce(topic, watched);
  });
});
