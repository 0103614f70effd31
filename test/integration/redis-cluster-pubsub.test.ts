import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { LogCapture } from "../../harness/log-capture.js";
import { connect, end, Inbox, subscribe } from "../../harness/mqtt-client.js";
import { RedisCluster } from "../../harness/redis-cluster.js";
import type { RedisServer } from "../../harness/redis-server.js";
import type { LogLine } from "../../harness/sluice-process.js";
import { SHARD_CHANNEL_COUNT, ShardChannels } from "../../src/cluster/shard-channels.js";

/**
 * Pub/sub between nodes on a real Redis Cluster (three primaries) is sharded: each topic's
 * messages are SPUBLISHed to one of the shard channels, which spread over the primaries, and
 * every node SSUBSCRIBEs all of them on their primaries.
 */
const DEADLINE_MS = 30_000;

let cluster: RedisCluster;
let keyPrefix: string;
let channels: ShardChannels;
let logA: LogCapture;
let logB: LogCapture;
let a: RunningNode;
let b: RunningNode;

before(async () => {
  cluster = await RedisCluster.start();
  keyPrefix = `rs${randomBytes(3).toString("hex")}:`;
  channels = new ShardChannels(keyPrefix);
  logA = new LogCapture();
  logB = new LogCapture();
  const redis = { cluster: cluster.nodes, keyPrefix };
  a = await startNode({ nodeId: "rs-a", redis }, process.cwd(), { logger: logA.logger });
  b = await startNode({ nodeId: "rs-b", redis }, process.cwd(), { logger: logB.logger });
});
after(async () => {
  await a?.stop();
  await b?.stop();
  await cluster?.stop();
});

/** A command stat of one primary (INFO commandstats): its calls, 0 if never called. */
async function calls(server: RedisServer, command: string): Promise<number> {
  const stats = await server.bulk("INFO", "commandstats");
  return Number(new RegExp(`^cmdstat_${command}:calls=(\\d+),`, "m").exec(stats)?.[1] ?? 0);
}

/** The shard channels a primary has subscribers on (PUBSUB SHARDCHANNELS), of this test. */
async function shardChannelsOn(server: RedisServer): Promise<string[]> {
  const lines = await server.reply("PUBSUB", "SHARDCHANNELS", `${keyPrefix}*`);
  return lines.filter((line) => !/^[*$]/.test(line));
}

/** A topic whose shard channel is one of these. */
function topicOn(owned: readonly string[], stem: string): string {
  for (let i = 0; i < 10_000; i++) {
    const topic = `${stem}/${i}`;
    if (owned.includes(channels.of(topic))) return topic;
  }
  throw new Error("no topic maps to these channels");
}

/** Groups messages by topic, each topic's payloads as numbers in arrival order. */
function byTopic(messages: ReadonlyArray<{ topic: string; payload: Buffer }>) {
  const groups = new Map<string, number[]>();
  for (const { topic, payload } of messages) {
    const group = groups.get(topic) ?? [];
    group.push(Number(payload.toString()));
    groups.set(topic, group);
  }
  return groups;
}

/** Resolves at the next line of this event in a node's log, after the call. */
function nextLine(log: LogCapture, event: string): Promise<LogLine> {
  const mark = log.lines.length;
  return withDeadline(
    log.waitFor((l) => l.event === event && log.lines.indexOf(l) >= mark),
    DEADLINE_MS,
    event,
  );
}

async function resetsCounted(node: RunningNode): Promise<number> {
  const text = await (await fetch(`${node.httpUrl}/metrics`)).text();
  const match = /^sluice_redis_subscription_resets_total(?:\{[^}]*\})? (\d+)$/m.exec(text);
  assert.ok(match, "sluice_redis_subscription_resets_total is exported");
  return Number(match[1]);
}

/** Publishes on a from a fresh client and waits until b's subscriber has it. */
async function crossesNodes(topic: string, payload: string): Promise<void> {
  const subscriber = await connect(b.urls.tcp as string);
  const publisher = await connect(a.urls.tcp as string);
  try {
    const inbox = new Inbox(subscriber);
    await subscribe(subscriber, topic, 1);
    await publisher.publishAsync(topic, payload, { qos: 1 });
    const [message] = await withDeadline(inbox.waitFor(1), DEADLINE_MS, `message on ${topic}`);
    assert.equal(message?.payload.toString(), payload);
  } finally {
    await end(subscriber, publisher);
  }
}

describe("sharded pub/sub on a Redis Cluster", () => {
  it("every node subscribes every shard channel on its primary, and nothing else", async () => {
    const seen: string[] = [];
    for (const server of cluster.servers) {
      const owned = await shardChannelsOn(server);
      assert.ok(owned.length > 0, `primary ${server.port} carries shard channels`);
      seen.push(...owned);
      // mqemitter-redis' per-filter (P)SUBSCRIBEs never reach Redis on a Cluster.
      assert.equal(await server.command("PUBSUB", "NUMPAT"), ":0");
      assert.deepEqual(await server.reply("PUBSUB", "CHANNELS", `${keyPrefix}*`), ["*0"]);
    }
    assert.deepEqual(seen.sort(), [...channels.all].sort());
    assert.equal(seen.length, SHARD_CHANNEL_COUNT);
    for (const server of cluster.servers) {
      const [channel] = await shardChannelsOn(server);
      const numsub = await server.reply("PUBSUB", "SHARDNUMSUB", channel as string);
      assert.equal(numsub.at(-1), ":2", `both nodes subscribe ${channel}`);
    }
  });

  it("keeps each topic's messages complete and in order across nodes, for exact and wildcard filters [MQTT-4.6.0-6]", async () => {
    const topics = Array.from({ length: 8 }, (_, i) => `rs/order/line-${i}/value`);
    assert.ok(new Set(topics.map((t) => channels.of(t))).size >= 3, "several shard channels");
    const perTopic = 150;
    const total = topics.length * perTopic;
    const exact = await connect(b.urls.tcp as string);
    const wildcard = await connect(b.urls.tcp as string);
    const publisher = await connect(a.urls.tcp as string);
    try {
      const exactInbox = new Inbox(exact);
      const wildcardInbox = new Inbox(wildcard);
      for (const topic of topics) await subscribe(exact, topic, 1);
      await subscribe(wildcard, "rs/order/+/value", 1);
      // Pipelined and interleaved: every topic's messages are in Redis at the same time.
      const sent: Array<Promise<unknown>> = [];
      for (let i = 0; i < perTopic; i++) {
        for (const topic of topics) sent.push(publisher.publishAsync(topic, String(i), { qos: 1 }));
      }
      await Promise.all(sent);
      const expected = Array.from({ length: perTopic }, (_, i) => i);
      for (const [name, inbox] of [
        ["exact", exactInbox],
        ["wildcard", wildcardInbox],
      ] as const) {
        const groups = byTopic(await withDeadline(inbox.waitFor(total), DEADLINE_MS, name));
        assert.deepEqual([...groups.keys()].sort(), [...topics].sort(), `${name}: every topic`);
        for (const topic of topics)
          assert.deepEqual(groups.get(topic), expected, `${name} ${topic}`);
      }
    } finally {
      await end(exact, wildcard, publisher);
    }
  });

  it("spreads the traffic over the primaries: more than one SPUBLISHes, none PUBLISHes", async () => {
    for (const server of cluster.servers)
      assert.equal(await server.command("CONFIG", "RESETSTAT"), "+OK");
    const topics = Array.from({ length: 64 }, (_, i) => `rs/spread/sensor-${i}`);
    const subscriber = await connect(b.urls.tcp as string);
    const publisher = await connect(a.urls.tcp as string);
    try {
      const inbox = new Inbox(subscriber);
      await subscribe(subscriber, "rs/spread/#", 1);
      await Promise.all(topics.map((topic) => publisher.publishAsync(topic, topic, { qos: 1 })));
      await withDeadline(inbox.waitFor(topics.length), DEADLINE_MS, "spread messages");
    } finally {
      await end(subscriber, publisher);
    }
    const spublish = await Promise.all(cluster.servers.map((s) => calls(s, "spublish")));
    const publish = await Promise.all(cluster.servers.map((s) => calls(s, "publish")));
    assert.ok(
      spublish.filter((count) => count > 0).length > 1,
      `SPUBLISH calls per primary: ${spublish.join(", ")}`,
    );
    assert.ok(
      spublish.reduce((sum, count) => sum + count, 0) >= topics.length,
      `SPUBLISH calls per primary: ${spublish.join(", ")}`,
    );
    assert.deepEqual(publish, [0, 0, 0], "no PUBLISH (cluster-bus broadcast)");
  });

  it("a primary that cuts the nodes' shard connections (CLIENT KILL) is a gap and a reset; they re-subscribe", async () => {
    const server = cluster.servers[0] as RedisServer;
    const owned = await shardChannelsOn(server);
    const gaps = [nextLine(logA, "pubsub.gap"), nextLine(logB, "pubsub.gap")];
    const before = await Promise.all([resetsCounted(a), resetsCounted(b)]);
    assert.equal(await server.command("CLIENT", "KILL", "TYPE", "pubsub"), ":2");
    await Promise.all(gaps);
    const counted = await Promise.all([resetsCounted(a), resetsCounted(b)]);
    assert.deepEqual(counted, [before[0] + 1, (before[1] as number) + 1], "counted once");
    assert.deepEqual((await shardChannelsOn(server)).sort(), owned.sort(), "re-subscribed");
    await crossesNodes(topicOn(owned, "rs/after-cut"), "after cut");
  });

  it("a shard channel whose slot moves to another primary (resharding) is subscribed there", async () => {
    const [from, to] = cluster.servers as [RedisServer, RedisServer];
    const channel = (await shardChannelsOn(from))[0] as string;
    const slot = String(channels.slots[channels.all.indexOf(channel)]);
    const fromId = (await from.bulk("CLUSTER", "MYID")).trim();
    const toId = (await to.bulk("CLUSTER", "MYID")).trim();
    const gaps = [logA, logB].map((log) => nextLine(log, "pubsub.gap"));
    assert.equal(await to.command("CLUSTER", "SETSLOT", slot, "IMPORTING", fromId), "+OK");
    assert.equal(await from.command("CLUSTER", "SETSLOT", slot, "MIGRATING", toId), "+OK");
    const keys = await from.reply("CLUSTER", "GETKEYSINSLOT", slot, "100");
    assert.deepEqual(keys, ["*0"], "no keys to migrate in a shard channel's slot");
    for (const server of [to, from]) {
      assert.equal(await server.command("CLUSTER", "SETSLOT", slot, "NODE", toId), "+OK");
    }
    await Promise.all(gaps);
    const numsub = await to.reply("PUBSUB", "SHARDNUMSUB", channel);
    assert.equal(numsub.at(-1), ":2", "both nodes subscribe it on its new primary");
    assert.deepEqual(await from.reply("PUBSUB", "SHARDNUMSUB", channel), numsub.with(-1, ":0"));
    await crossesNodes(topicOn([channel], "rs/after-move"), "after move");
  });

  it("a primary restarted is an outage, not a reset; the nodes re-subscribe on it", async () => {
    const server = cluster.servers[1] as RedisServer;
    const owned = await shardChannelsOn(server);
    const before = await Promise.all([resetsCounted(a), resetsCounted(b)]);
    const failed = [logA, logB].map((log) => nextLine(log, "redis.shard_subscriber_error"));
    const gaps = [logA, logB].map((log) => nextLine(log, "pubsub.gap"));
    await server.kill();
    // Started again only once both nodes saw a reconnect fail: a reconnect that found it back
    // already would look like a cut.
    await Promise.all(failed);
    await server.start();
    await Promise.all(gaps);
    const counted = await Promise.all([resetsCounted(a), resetsCounted(b)]);
    assert.deepEqual(counted, before, "no reset for an outage");
    assert.deepEqual((await shardChannelsOn(server)).sort(), owned.sort(), "re-subscribed");
    // A primary that rejoins refuses commands (CLUSTERDOWN) for a while; sharded pub/sub goes on.
    await withDeadline(cluster.waitUntilOk(), DEADLINE_MS, "cluster_state:ok");
    await crossesNodes(topicOn(owned, "rs/after-restart"), "after restart");
  });
});
