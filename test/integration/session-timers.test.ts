import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { Redis } from "ioredis";
import type { IPublishPacket } from "mqtt";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { end } from "../../harness/mqtt-client.js";
import { dropConnection, openV5, pause } from "../../harness/mqtt5-session.js";
import { metricSum } from "../../harness/node-metrics.js";
import { RedisCluster } from "../../harness/redis-cluster.js";
import { RedisServer } from "../../harness/redis-server.js";

/**
 * MQTT 5 session expiry, will delay and message expiry (issue 15) with the timings of the
 * independent interoperability suite (paho.mqtt.testing's test_session_expiry and
 * test_will_delay), on one node in memory and across two nodes over Redis: the second
 * connection goes to the other node, so the timers must hold cluster-wide.
 */

/** Where each step connects: the same node, or the first node then the second. */
interface Placement {
  first(): string;
  second(): string;
  /** The nodes' HTTP URLs, whose sluice_sessions_expired_total add up. */
  httpUrls(): string[];
}

async function sessionsExpired(at: Placement): Promise<number> {
  const counts = await Promise.all(
    at.httpUrls().map((url) => metricSum(url, "sluice_sessions_expired_total")),
  );
  return counts.reduce((sum, count) => sum + count, 0);
}

/** Seconds from `since` to now. */
function secondsSince(since: number): number {
  return (Date.now() - since) / 1000;
}

/** paho's test_session_expiry: 5 s kept at 3 s, gone at 9 s; 1 s set to 5 at DISCONNECT; 0 ends. */
async function sessionExpirySequence(at: Placement, id: string): Promise<void> {
  const first = await openV5(at.first(), id, { cleanStart: true, expiry: 5 });
  assert.equal(first.connack.sessionPresent, false);
  await first.client.subscribeAsync(`expiry/${id}`, { qos: 2 });
  await first.client.endAsync();
  await pause(3_000);
  const kept = await openV5(at.second(), id, { expiry: 5 });
  assert.equal(kept.connack.sessionPresent, true, "a 5 s session is there after 3 s");
  await kept.client.endAsync();
  await pause(6_000);
  const gone = await openV5(at.first(), id, { expiry: 0 });
  assert.equal(gone.connack.sessionPresent, false, "a 5 s session is gone after 6 s");
  await gone.client.endAsync();

  const short = await openV5(at.first(), id, { cleanStart: true, expiry: 1 });
  assert.equal(short.connack.sessionPresent, false);
  await short.client.endAsync(false, { properties: { sessionExpiryInterval: 5 } });
  await pause(3_000);
  const extended = await openV5(at.second(), id);
  assert.equal(extended.connack.sessionPresent, true, "DISCONNECT made 1 s into 5 s");
  await extended.client.endAsync(false, { properties: { sessionExpiryInterval: 0 } });
  const ended = await openV5(at.first(), id);
  assert.equal(ended.connack.sessionPresent, false, "DISCONNECT with 0 ended it at once");
  await ended.client.endAsync();
}

/**
 * paho's test_will_delay: the device connects to the first node, the watcher to the second;
 * the device's connection drops; resolves with the seconds until its will arrived.
 */
async function willDelay(
  at: Placement,
  id: string,
  willDelaySeconds: number,
  expiry: number,
): Promise<number> {
  const topic = `will-delay/${id}`;
  const watcher = await openV5(at.second(), `${id}-watcher`, { cleanStart: true });
  await watcher.client.subscribeAsync(topic, { qos: 2 });
  const device = await openV5(at.first(), id, {
    cleanStart: true,
    expiry,
    will: {
      topic,
      payload: Buffer.from("gone"),
      qos: 1,
      retain: false,
      properties: { willDelayInterval: willDelaySeconds },
    },
  });
  try {
    const droppedAt = Date.now();
    await dropConnection(device.client);
    const [will] = await withDeadline(watcher.inbox.waitFor(1), 15_000, "the will");
    assert.equal(will?.payload.toString(), "gone");
    const properties = (will?.packet as IPublishPacket).properties ?? {};
    assert.equal(
      (properties as Record<string, unknown>).willDelayInterval,
      undefined,
      "no Will Delay Interval on the PUBLISH",
    );
    return secondsSince(droppedAt);
  } finally {
    await end(watcher.client, device.client);
  }
}

/** The device drops, then comes back within the delay: its will is never published. */
async function willVoidedByReconnect(at: Placement, id: string): Promise<void> {
  const topic = `will-void/${id}`;
  const watcher = await openV5(at.second(), `${id}-watcher`, { cleanStart: true });
  await watcher.client.subscribeAsync(topic, { qos: 1 });
  const will = {
    topic,
    payload: Buffer.from("gone"),
    qos: 1 as const,
    retain: false,
    properties: { willDelayInterval: 2 },
  };
  const device = await openV5(at.first(), id, { cleanStart: true, expiry: 10, will });
  await dropConnection(device.client);
  await pause(1_000);
  const back = await openV5(at.second(), id, { expiry: 10 });
  assert.equal(back.connack.sessionPresent, true);
  // Twice the delay, and the poll that would have fired it.
  await pause(3_000);
  try {
    assert.deepEqual(watcher.inbox.received, [], "no will: the client came back in time");
  } finally {
    await back.client.endAsync();
    await end(watcher.client);
  }
}

/** Queued messages for an offline session expire; those left carry their remaining interval. */
async function queuedMessagesExpire(at: Placement, id: string): Promise<void> {
  const topic = `message-expiry/${id}`;
  const subscriber = await openV5(at.first(), id, { cleanStart: true, expiry: 60 });
  await subscriber.client.subscribeAsync(topic, { qos: 1 });
  await subscriber.client.endAsync();
  const publisher = await openV5(at.second(), `${id}-publisher`, { cleanStart: true });
  await publisher.client.publishAsync(topic, "short", {
    qos: 1,
    properties: { messageExpiryInterval: 1 },
  });
  await publisher.client.publishAsync(topic, "long", {
    qos: 1,
    properties: { messageExpiryInterval: 30 },
  });
  await publisher.client.publishAsync(topic, "forever", { qos: 1 });
  await pause(2_100);
  const back = await openV5(at.second(), id, { expiry: 60 });
  try {
    assert.equal(back.connack.sessionPresent, true);
    const messages = await withDeadline(back.inbox.waitFor(2), 10_000, "queued messages");
    await pause(300); // a third (the expired one) would arrive with these
    assert.deepEqual(
      back.inbox.received.map((m) => m.payload.toString()),
      ["long", "forever"],
    );
    const remaining = messages[0]?.packet.properties?.messageExpiryInterval ?? 0;
    assert.ok(remaining >= 26 && remaining <= 28, `remaining interval ${remaining} s of 30`);
    assert.equal(messages[1]?.packet.properties?.messageExpiryInterval, undefined);
  } finally {
    await end(back.client, publisher.client);
  }
}

/** Retained messages expire too; one still alive carries its remaining interval. */
async function retainedMessagesExpire(at: Placement, id: string): Promise<void> {
  const publisher = await openV5(at.first(), `${id}-publisher`, { cleanStart: true });
  await publisher.client.publishAsync(`retained/${id}/short`, "short", {
    qos: 1,
    retain: true,
    properties: { messageExpiryInterval: 1 },
  });
  await publisher.client.publishAsync(`retained/${id}/long`, "long", {
    qos: 1,
    retain: true,
    properties: { messageExpiryInterval: 30 },
  });
  await pause(2_100);
  const subscriber = await openV5(at.second(), id, { cleanStart: true });
  try {
    await subscriber.client.subscribeAsync(`retained/${id}/#`, { qos: 1 });
    const [message] = await withDeadline(subscriber.inbox.waitFor(1), 10_000, "retained");
    await pause(300);
    assert.deepEqual(
      subscriber.inbox.received.map((m) => m.payload.toString()),
      ["long"],
    );
    const remaining = message?.packet.properties?.messageExpiryInterval ?? 0;
    assert.ok(remaining >= 26 && remaining <= 28, `remaining interval ${remaining} s of 30`);
  } finally {
    await end(subscriber.client, publisher.client);
  }
}

/** The same behaviours wherever the clients connect. */
function timerSuite(at: Placement): void {
  it("session expiry: 5 s kept after 3 s and gone after 6 more; 1 s made 5 s at DISCONNECT; DISCONNECT 0 ends at once", async () => {
    const before = await sessionsExpired(at);
    await sessionExpirySequence(at, `se-${randomBytes(3).toString("hex")}`);
    // One expiry: DISCONNECT 0 ends a session at once, which is no expiry.
    assert.equal((await sessionsExpired(at)) - before, 1, "sluice_sessions_expired_total");
  });

  it("will delay 3 s with session expiry 5 s: the will after 3-4 s", async () => {
    const seconds = await willDelay(at, `wd-a-${randomBytes(3).toString("hex")}`, 3, 5);
    assert.ok(seconds >= 2.9 && seconds <= 4.5, `will after ${seconds} s`);
  });

  it("will delay 5 s with session expiry 0: the will at once", async () => {
    const seconds = await willDelay(at, `wd-b-${randomBytes(3).toString("hex")}`, 5, 0);
    assert.ok(seconds <= 1, `will after ${seconds} s`);
  });

  it("will delay 5 s with session expiry 2 s: the will when the session ends, after 2-3 s", async () => {
    const seconds = await willDelay(at, `wd-c-${randomBytes(3).toString("hex")}`, 5, 2);
    assert.ok(seconds >= 1.9 && seconds <= 3.5, `will after ${seconds} s`);
  });

  it("will delay: a client back within the delay voids its will", async () => {
    await willVoidedByReconnect(at, `wv-${randomBytes(3).toString("hex")}`);
  });

  it("message expiry: queued messages past their interval are dropped, the others carry what is left", async () => {
    await queuedMessagesExpire(at, `me-${randomBytes(3).toString("hex")}`);
  });

  it("message expiry: retained messages past their interval are not sent", async () => {
    await retainedMessagesExpire(at, `mr-${randomBytes(3).toString("hex")}`);
  });
}

describe("MQTT 5 timers on one node, in memory", () => {
  let node: RunningNode;
  before(async () => {
    node = await startNode();
  });
  after(async () => {
    await node?.stop();
  });
  const url = () => node.urls.tcp as string;
  timerSuite({ first: url, second: url, httpUrls: () => [node.httpUrl] });
});

describe("MQTT 5 timers across two nodes over Redis", () => {
  let redis: RedisServer;
  let control: Redis;
  let keyPrefix: string;
  let a: RunningNode;
  let b: RunningNode;
  before(async () => {
    redis = await RedisServer.start();
    control = new Redis(redis.url);
    keyPrefix = `st${randomBytes(4).toString("hex")}:`;
    a = await startNode({ nodeId: "node-a", redis: { url: redis.url, keyPrefix } });
    b = await startNode({ nodeId: "node-b", redis: { url: redis.url, keyPrefix } });
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    control?.disconnect();
    await redis?.stop();
  });
  timerSuite({
    first: () => a.urls.tcp as string,
    second: () => b.urls.tcp as string,
    httpUrls: () => [a.httpUrl, b.httpUrl],
  });

  it("an expired session leaves nothing in Redis: subscriptions, queue, packets, record", async () => {
    const id = `wipe-${randomBytes(3).toString("hex")}`;
    const topic = `wipe/${id}`;
    const device = await openV5(a.urls.tcp as string, id, { cleanStart: true, expiry: 1 });
    await device.client.subscribeAsync(topic, { qos: 1 });
    await device.client.endAsync();
    const publisher = await openV5(b.urls.tcp as string, `${id}-pub`, { cleanStart: true });
    await publisher.client.publishAsync(topic, "queued", { qos: 1 });
    await end(publisher.client);
    const clientKeys = () => control.keys(`${keyPrefix}client:{${id}}:*`);
    assert.ok((await clientKeys()).length > 0, "the session is stored while it lasts");
    await pause(2_000);
    assert.deepEqual(await clientKeys(), []);
    assert.equal(await control.hget(`${keyPrefix}sessions`, id), null);
    assert.equal(await control.sismember(`${keyPrefix}persistence:subscribed`, id), 0);
    // Every node forgot its subscription: a message for it is stored nowhere.
    const again = await openV5(b.urls.tcp as string, `${id}-pub`, { cleanStart: true });
    await again.client.publishAsync(topic, "nobody", { qos: 1 });
    await end(again.client);
    assert.deepEqual(await clientKeys(), []);
  });

  it("Clean Start 0 with expiry 0 resumes a stored session on the other node (session present)", async () => {
    const id = `resume-${randomBytes(3).toString("hex")}`;
    const first = await openV5(a.urls.tcp as string, id, { cleanStart: true, expiry: 30 });
    await first.client.subscribeAsync(`resume/${id}`, { qos: 1 });
    await first.client.endAsync();
    const inbox = await openV5(b.urls.tcp as string, id, { expiry: 0 });
    try {
      assert.equal(inbox.connack.sessionPresent, true);
    } finally {
      await inbox.client.endAsync();
    }
    // The node ends the session as it handles the close, a round trip after the client's end.
    const deadline = Date.now() + 5_000;
    while ((await control.hget(`${keyPrefix}sessions`, id)) !== null) {
      assert.ok(Date.now() < deadline, "the session record goes with the connection");
      await pause(50);
    }
    const after = await openV5(b.urls.tcp as string, id, { expiry: 0 });
    await after.client.endAsync();
    assert.equal(after.connack.sessionPresent, false, "expiry 0 ended it with the connection");
  });
});

describe("MQTT 5 timers across two nodes over a Redis Cluster", () => {
  let cluster: RedisCluster;
  let a: RunningNode;
  let b: RunningNode;
  before(async () => {
    cluster = await RedisCluster.start();
    const keyPrefix = `sc${randomBytes(3).toString("hex")}:`;
    const node = (nodeId: string) =>
      startNode({ nodeId, redis: { cluster: cluster.nodes, keyPrefix } });
    a = await node("sc-a");
    b = await node("sc-b");
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await cluster?.stop();
  });
  timerSuite({
    first: () => a.urls.tcp as string,
    second: () => b.urls.tcp as string,
    httpUrls: () => [a.httpUrl, b.httpUrl],
  });
});

describe("mqtt5.maxSessionExpirySeconds", () => {
  let node: RunningNode;
  before(async () => {
    node = await startNode({ mqtt5: { maxSessionExpirySeconds: 2 } });
  });
  after(async () => {
    await node?.stop();
  });

  it("caps the interval a client asks for, and the CONNACK reports the value applied", async () => {
    const url = node.urls.tcp as string;
    const asked = await openV5(url, "capped", { cleanStart: true, expiry: 3_600 });
    assert.equal(asked.connack.properties?.sessionExpiryInterval, 2);
    await asked.client.endAsync();
    await pause(2_800);
    const late = await openV5(url, "capped");
    await late.client.endAsync();
    assert.equal(late.connack.sessionPresent, false, "expired after the capped 2 s");
    const within = await openV5(url, "within", { cleanStart: true, expiry: 1 });
    assert.equal(within.connack.properties?.sessionExpiryInterval, undefined);
    await within.client.endAsync();
  });
});
