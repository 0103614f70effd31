import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { after, afterEach, before, describe, it } from "node:test";
import { Cluster, Redis } from "ioredis";
import { pino } from "pino";
import { withDeadline } from "../../harness/deadline.js";
import { RedisCluster } from "../../harness/redis-cluster.js";
import type { RedisServer } from "../../harness/redis-server.js";
import { ShardChannels } from "../../src/cluster/shard-channels.js";
import { ShardedSubscriber } from "../../src/cluster/sharded-subscriber.js";
import { SubscriptionLag } from "../../src/cluster/subscription-lag.js";

/**
 * A node's sharded subscription on a real Redis Cluster (three primaries), paused and watched
 * as the backpressure pauses and watches it: every shard connection stops reading, including
 * one made while paused (a resharding), none stays paused once resumed, and what waits for a
 * paused node in any primary's output buffer is read as that node's lag.
 */
const DEADLINE_MS = 30_000;
const LAG_BOUND = 256 * 1024;
const NAME_A = "sluice/node-a/aaaa/subscriber";
const NAME_B = "sluice/node-b/bbbb/subscriber";
const log = pino({ level: "silent" });

let cluster: RedisCluster;
let channels: ShardChannels;
let keyPrefix: string;
/** What the running test opened, closed at its end whatever its outcome. */
let closers: Array<() => void> = [];

before(async () => {
  cluster = await RedisCluster.start();
  // The paused subscription's buffers grow past the default limit's soft part in this test.
  for (const server of cluster.servers) {
    assert.equal(
      await server.command("CONFIG", "SET", "client-output-buffer-limit", "pubsub 0 0 0"),
      "+OK",
    );
  }
  keyPrefix = `sp${randomBytes(3).toString("hex")}:`;
  channels = new ShardChannels(keyPrefix);
});
afterEach(() => {
  for (const close of closers) close();
  closers = [];
});
after(async () => {
  await cluster?.stop();
});

/** A node's subscription: its own topology Cluster (which also publishes), as RedisFabric has. */
async function subscription(name: string) {
  const topology = new Cluster(cluster.nodes);
  const subscriber = new ShardedSubscriber(
    topology,
    channels.all,
    channels.slots,
    (host, port) =>
      new Redis({
        host,
        port,
        enableReadyCheck: false,
        autoResubscribe: false,
        connectionName: name,
      }),
    log,
  );
  const received: string[] = [];
  subscriber.on("messageBuffer", (_channel, payload) => received.push(payload.toString()));
  closers.push(
    () => subscriber.disconnect(),
    () => topology.disconnect(),
  );
  await withDeadline(once(subscriber, "ready"), DEADLINE_MS, `${name} subscribed`);
  return { topology, subscriber, received };
}

/** Resolves once `done()` holds, checked at each change of the lag; past the deadline, fails. */
function lagUntil(lag: SubscriptionLag, done: () => boolean, what: string): Promise<void> {
  return withDeadline(
    new Promise<void>((resolve) => {
      if (done()) return resolve();
      lag.onChange(() => {
        if (done()) resolve();
      });
    }),
    DEADLINE_MS,
    what,
  );
}

/** Resolves once `received` holds `payload`; past the deadline, fails. */
async function arrives(subscriber: ShardedSubscriber, received: string[], payload: string) {
  if (received.includes(payload)) return;
  await withDeadline(
    new Promise<void>((resolve) => {
      const listener = (_channel: Buffer, message: Buffer) => {
        if (message.toString() !== payload) return;
        subscriber.off("messageBuffer", listener);
        resolve();
      };
      subscriber.on("messageBuffer", listener);
    }),
    DEADLINE_MS,
    `message ${payload}`,
  );
}

describe("a paused sharded subscription on a Redis Cluster", () => {
  it("a paused node's buffer on any one primary is read as its lag: every primary is asked; resumed, it drains", async () => {
    const a = await subscription(NAME_A);
    const b = await subscription(NAME_B);
    const query = new Cluster(cluster.nodes, { keyPrefix: `${keyPrefix}{state}:` });
    closers.push(() => query.disconnect());
    const lag = new SubscriptionLag(
      query,
      NAME_A,
      { boundBytes: LAG_BOUND, stallMs: 600_000, readingPausedKey: (id) => `paused:${id}` },
      log,
    );
    lag.start();
    closers.push(() => lag.stop());
    for (const server of cluster.servers) {
      const names = (await server.otherClients()).map((line) => / name=(\S*)/.exec(line)?.[1]);
      assert.ok(names.includes(NAME_A) && names.includes(NAME_B), `both nodes on ${server.port}`);
    }
    const payload = "x".repeat(64 * 1024);
    let sent = 0;
    // One primary at a time: a lag read on some primaries only misses the others' turn.
    for (const server of cluster.servers) {
      const owned = await shardChannelsOn(server);
      assert.equal(b.subscriber.pauseReading(true), true);
      assert.deepEqual([...b.subscriber.readingState().values()], [true, true, true]);
      // 64 KiB on each of its channels a round, at most 16 rounds: the kernel's socket buffers
      // between the primary and node-b (megabytes) fill before Redis' output buffer grows.
      for (let round = 0; round < 16 && (await omemOf(server, NAME_B)) <= LAG_BOUND; round++) {
        await Promise.all(owned.map((channel) => a.topology.spublish(channel, payload)));
        sent += owned.length;
      }
      const omem = await omems(NAME_B);
      const where = `node-b's buffers ${omem.join(", ")}, on ${server.port}`;
      assert.deepEqual(
        omem.map((bytes) => bytes > LAG_BOUND),
        cluster.servers.map((other) => other === server),
        where,
      );
      await lagUntil(
        lag,
        () => lag.clusterBytes > LAG_BOUND && lag.laggingNode === "node-b",
        `node-b's lag past the bound (${where})`,
      );
      assert.ok(lag.bytes <= LAG_BOUND, `node-a reads: its own lag ${lag.bytes}`);
      assert.equal(b.subscriber.pauseReading(false), true);
      await lagUntil(lag, () => lag.clusterBytes === 0, `node-b drained (${where})`);
    }
    await withDeadline(
      (async () => {
        while (b.received.length < sent) await once(b.subscriber, "messageBuffer");
      })(),
      DEADLINE_MS,
      `node-b reads all ${sent}`,
    );
  });

  it("a shard connection made while paused (a resharding) pauses once subscribed; resumed, none is left paused", async () => {
    const [from, to] = cluster.servers as [RedisServer, RedisServer];
    const b = await subscription(NAME_B);
    const publisher = await subscription(NAME_A);
    assert.equal(b.subscriber.pauseReading(true), true);
    const owned = await shardChannelsOn(from);
    const channel = owned[0] as string;
    const slot = String(channels.slots[channels.all.indexOf(channel)]);
    const fromId = (await from.bulk("CLUSTER", "MYID")).trim();
    const toId = (await to.bulk("CLUSTER", "MYID")).trim();
    const before = new Map(b.subscriber.readingState());
    assert.equal(await to.command("CLUSTER", "SETSLOT", slot, "IMPORTING", fromId), "+OK");
    assert.equal(await from.command("CLUSTER", "SETSLOT", slot, "MIGRATING", toId), "+OK");
    for (const server of [to, from]) {
      assert.equal(await server.command("CLUSTER", "SETSLOT", slot, "NODE", toId), "+OK");
    }
    // The paused node learns of it from its own publish (MOVED, then a slot-cache refresh).
    const whole = once(b.subscriber, "ready");
    await b.topology.spublish(channel, "moved");
    await withDeadline(whole, DEADLINE_MS, "node-b subscribed again");
    const after = b.subscriber.readingState();
    assert.deepEqual(
      [...after.keys()].sort(),
      [...before.keys()].sort(),
      "the same primaries (new connections to two of them)",
    );
    assert.deepEqual([...after.values()], [true, true, true], "every shard connection paused");
    assert.deepEqual(
      (await to.reply("PUBSUB", "SHARDNUMSUB", channel)).at(-1),
      ":2",
      "the moved channel is subscribed on its new primary",
    );
    await publisher.topology.spublish(channel, "while paused");
    assert.equal(b.subscriber.pauseReading(false), true);
    assert.deepEqual([...b.subscriber.readingState().values()], [false, false, false]);
    await arrives(b.subscriber, b.received, "while paused");
    for (const other of channels.all) await publisher.topology.spublish(other, `after:${other}`);
    for (const other of channels.all) await arrives(b.subscriber, b.received, `after:${other}`);
  });
});

/** Each primary's output buffer for the connection of this name. */
function omems(name: string): Promise<number[]> {
  return Promise.all(cluster.servers.map((server) => omemOf(server, name)));
}

/** The output buffer Redis holds for the connection of this name (CLIENT LIST omem). */
async function omemOf(server: RedisServer, name: string): Promise<number> {
  const line = (await server.otherClients()).find((l) => l.includes(` name=${name} `));
  return Number(/ omem=(\d+)/.exec(line ?? "")?.[1] ?? 0);
}

/** The shard channels a primary has subscribers on (PUBSUB SHARDCHANNELS), of this test. */
async function shardChannelsOn(server: RedisServer): Promise<string[]> {
  const lines = await server.reply("PUBSUB", "SHARDCHANNELS", `${keyPrefix}*`);
  return lines.filter((line) => !/^[*$]/.test(line));
}
