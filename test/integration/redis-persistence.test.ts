import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { Aedes } from "aedes";
import { Cluster, Redis } from "ioredis";
import { pino } from "pino";
import { RedisCluster } from "../../harness/redis-cluster.js";
import { RedisServer } from "../../harness/redis-server.js";
import { drain, storedPublish as publish } from "../../harness/stored-packets.js";
import { redisEmitter } from "../../src/engine/emitters.js";
import type { StoredPacket } from "../../src/engine/persistence-types.js";
import { type PersistenceBroker, RedisPersistence } from "../../src/engine/redis-persistence.js";
import { PersistenceKeys } from "../../src/redis/redis-keys.js";

/**
 * Sluice's Redis persistence against a real Redis and a real Redis Cluster (three primaries),
 * each test under a random key prefix, driven through real aedes brokers (setup, broadcasts).
 * On the Cluster a script touching keys of two slots fails (CROSSSLOT): every scenario passing
 * there shows each script's keys share the client's slot.
 */
const silent = pino({ level: "silent" });
interface Store {
  name: string;
  connect(prefix: string): Redis | Cluster;
  /** A plain connection to one server, for pub/sub between brokers. */
  pubsubUrl(): string;
}

interface Node {
  persistence: RedisPersistence;
  broker: PersistenceBroker & { close(done: () => void): void };
  drops: Array<[string, number]>;
  db: Redis | Cluster;
  close(): Promise<void>;
}

async function startNode(store: Store, prefix: string, id: string, cap = 100): Promise<Node> {
  const db = store.connect(prefix);
  const drops: Array<[string, number]> = [];
  const persistence = new RedisPersistence({
    db,
    log: silent,
    maxQueuedPerClient: cap,
    onQueueFull: (clientId, dropped) => drops.push([clientId, dropped]),
  });
  const pubConn = new Redis(store.pubsubUrl());
  const subConn = new Redis(store.pubsubUrl(), { enableReadyCheck: false });
  const mq = redisEmitter(pubConn, subConn, silent);
  const broker = (await Aedes.createBroker({
    id,
    persistence,
    mq,
  } as unknown as Parameters<typeof Aedes.createBroker>[0])) as unknown as Node["broker"];
  return {
    persistence,
    broker,
    drops,
    db,
    async close() {
      await new Promise<void>((resolve) => broker.close(resolve));
      db.disconnect();
      pubConn.disconnect();
      subConn.disconnect();
    },
  };
}

const stores: Array<{ name: string; start(): Promise<{ store: Store; stop(): Promise<void> }> }> = [
  {
    name: "Redis",
    async start() {
      const server = await RedisServer.start();
      return {
        store: {
          name: "Redis",
          connect: (keyPrefix) => new Redis(server.url, { keyPrefix }),
          pubsubUrl: () => server.url,
        },
        stop: () => server.stop(),
      };
    },
  },
  {
    name: "Redis Cluster",
    async start() {
      const cluster = await RedisCluster.start();
      return {
        store: {
          name: "Redis Cluster",
          connect: (keyPrefix) => new Cluster(cluster.nodes, { keyPrefix }),
          pubsubUrl: () => `redis://127.0.0.1:${cluster.ports[0]}`,
        },
        stop: () => cluster.stop(),
      };
    },
  },
];

for (const { name, start } of stores) {
  describe(`Redis persistence (${name})`, () => {
    let store: Store;
    let stop: () => Promise<void>;
    const nodes: Node[] = [];
    const node = async (prefix: string, id = "node-a", cap = 100): Promise<Node> => {
      const started = await startNode(store, prefix, id, cap);
      nodes.push(started);
      return started;
    };
    const newPrefix = () => `t${randomBytes(4).toString("hex")}:`;

    before(async () => {
      ({ store, stop } = await start());
    });
    after(async () => {
      await Promise.allSettled(nodes.map((n) => n.close()));
      await stop?.();
    });

    it("retained: `+` matches an empty level, each message once, glob characters literal", async () => {
      const { persistence } = await node(newPrefix());
      for (const topic of ["a/", "a/b", "b/c", "g/*[x]", "g/y"]) {
        await persistence.storeRetained({ ...publish(topic), retain: true });
      }
      const matched = await drain(persistence.createRetainedStreamCombi(["a/+", "a/#", "a/b"]));
      assert.deepEqual(matched.map((p) => p.topic).sort(), ["a/", "a/b"]);
      const glob = await drain(persistence.createRetainedStream("g/*[x]/#"));
      assert.deepEqual(
        glob.map((p) => p.topic),
        ["g/*[x]"],
      );
      await persistence.storeRetained({ ...publish("a/", ""), retain: true });
      const after = await drain(persistence.createRetainedStream("a/+"));
      assert.deepEqual(
        after.map((p) => p.topic),
        ["a/b"],
        "an empty payload clears",
      );
    });

    it("retained, exact filters: the streams asked for in one turn each get their own messages, once", async () => {
      const { persistence, db } = await node(newPrefix());
      for (const topic of ["x/1", "x/2"]) {
        await persistence.storeRetained({ ...publish(topic), retain: true });
      }
      const single = db instanceof Redis;
      if (single) await db.config("RESETSTAT");
      const streams = [["x/1"], ["x/2", "x/1", "x/1"], ["x/3"]].map((filters) =>
        persistence.createRetainedStreamCombi(filters),
      );
      const drained = await Promise.all(streams.map((stream) => drain(stream)));
      assert.deepEqual(
        drained.map((packets) => packets.map((p) => p.topic)),
        [["x/1"], ["x/2", "x/1"], []],
      );
      if (!single) return;
      // On a single Redis, one HMGET for the three streams (an HGET per filter before).
      const stats = await db.info("commandstats");
      const calls = (command: string): number =>
        Number(new RegExp(`^cmdstat_${command}:calls=(\\d+)`, "m").exec(stats)?.[1] ?? 0);
      assert.equal(calls("hget"), 0, "no HGET per filter");
      assert.equal(calls("hmget"), 1, "one HMGET for the turn");
    });

    it("subscriptions: stored with their options, QoS 1/2 matched, the last removal ends the session's queue", async () => {
      const prefix = newPrefix();
      const { persistence, db } = await node(prefix);
      const client = { id: "plc-{1}" };
      await persistence.addSubscriptions(client, [
        { topic: "a/+", qos: 1, rh: 0, rap: false, nl: false },
        { topic: "b/#", qos: 0 },
      ]);
      const stored = await persistence.subscriptionsByClient(client);
      assert.deepEqual(
        stored.sort((x, y) => x.topic.localeCompare(y.topic)),
        [
          { topic: "a/+", qos: 1, rh: 0, rap: false, nl: false },
          { topic: "b/#", qos: 0 },
        ],
      );
      assert.deepEqual(
        (await persistence.subscriptionsByTopic("a/")).map((s) => s.clientId),
        ["plc-{1}"],
      );
      assert.deepEqual(await persistence.subscriptionsByTopic("b/x"), [], "QoS 0: not queued");
      assert.deepEqual(await persistence.countOffline(), { subsCount: 1, clientsCount: 1 });
      assert.deepEqual(await drain(persistence.getClientList("a/+")), ["plc-{1}"]);

      await persistence.outgoingEnqueue({ clientId: client.id }, publish("a/1"));
      await persistence.removeSubscriptions(client, ["a/+"]);
      assert.equal((await drain(persistence.outgoingStream(client))).length, 1, "one filter left");
      await persistence.cleanSubscriptions(client);
      assert.deepEqual(await persistence.subscriptionsByClient(client), []);
      assert.deepEqual(await drain(persistence.outgoingStream(client)), []);
      assert.deepEqual(await persistence.countOffline(), { subsCount: 0, clientsCount: 0 });
      const keys = new PersistenceKeys(prefix);
      assert.equal(await db.exists(keys.queue(client.id), keys.packets(client.id)), 0);
    });

    it("queue cap: the oldest are dropped past it (PUBRELs count, and stay), identifiers survive a resume", async () => {
      const { persistence, drops } = await node(newPrefix(), "node-a", 3);
      const client = { id: "offline-plc" };
      const first = publish("q", "first", 2);
      await persistence.outgoingEnqueueCombi([{ clientId: client.id }], first);
      // Delivered with packet identifier 7; the client answered PUBREC.
      await persistence.outgoingUpdate(client, { ...first, messageId: 7 });
      await persistence.outgoingUpdate(client, { cmd: "pubrel", messageId: 7 } as StoredPacket);
      const second = publish("q", "second");
      await persistence.outgoingEnqueue({ clientId: client.id }, second);
      await persistence.outgoingUpdate(client, { ...second, messageId: 8 });
      for (let i = 0; i < 4; i++) {
        await persistence.outgoingEnqueue({ clientId: client.id }, publish("q", `m${i}`));
      }
      assert.deepEqual(drops, [
        ["offline-plc", 1],
        ["offline-plc", 1],
        ["offline-plc", 1],
      ]);
      const queued = await drain(persistence.outgoingStream(client));
      assert.deepEqual(
        queued.map((p) => (p.cmd === "pubrel" ? `pubrel ${p.messageId}` : p.payload?.toString())),
        ["pubrel 7", "m2", "m3"],
      );
      const [pubrel] = queued;
      assert.equal(pubrel?.brokerId, first.brokerId);
      assert.equal(pubrel?.brokerCounter, first.brokerCounter);

      // PUBCOMP 7, and a PUBACK for the dropped message 8: nothing to clear, no error.
      assert.equal(
        (await persistence.outgoingClearMessageId(client, { messageId: 8 }))?.cmd,
        undefined,
      );
      await persistence.outgoingClearMessageId(client, { messageId: 7 });
      const third = queued[1] as StoredPacket;
      await persistence.outgoingUpdate(client, { ...third, messageId: 9 });
      const resumed = await drain(persistence.outgoingStream(client));
      assert.deepEqual(
        resumed.map((p) => [p.payload?.toString(), p.messageId ?? null]),
        [
          ["m2", 9],
          ["m3", null],
        ],
      );
    });

    it("the work of one turn is one script per slot group: a message to two sessions, their deliveries, their acknowledgements", async () => {
      const { persistence, broker, db } = await node(newPrefix());
      const clients = [{ id: "acker-1" }, { id: "acker-2" }];
      const subs = clients.map((c) => ({ clientId: c.id }));
      const packets = Array.from({ length: 5 }, (_, i) => publish("acks", `p${i}`));
      // The scripts are loaded (EVALSHA fails once, then EVAL) before counting.
      await Promise.all(
        clients.map((c) => persistence.outgoingClearMessageId(c, { messageId: 999 })),
      );
      await Promise.all(
        clients.map((c) => persistence.outgoingUpdate(c, { ...publish("warm"), messageId: 999 })),
      );
      await persistence.outgoingEnqueueCombi(subs, publish("warm"));
      // On a single Redis one call holds every session; on a Cluster, one call per session.
      const calls = db instanceof Cluster ? clients.length : 1;

      let before = await evalshaCalls(db);
      for (const packet of packets) await persistence.outgoingEnqueueCombi(subs, packet);
      assert.equal((await evalshaCalls(db)) - before, packets.length * calls, "enqueue");

      before = await evalshaCalls(db);
      await Promise.all(
        clients.flatMap((c) =>
          packets.map((packet, i) =>
            persistence.outgoingUpdate(c, { ...packet, messageId: i + 1 }),
          ),
        ),
      );
      assert.equal((await evalshaCalls(db)) - before, calls, "packet identifiers recorded");

      const onAck = () => {};
      (broker as unknown as NodeJS.EventEmitter).on("ack", onAck);
      before = await evalshaCalls(db);
      const cleared = await Promise.all(
        clients.map((c) =>
          Promise.all(
            packets.map((_, i) => persistence.outgoingClearMessageId(c, { messageId: i + 1 })),
          ),
        ),
      );
      const after = await evalshaCalls(db);
      (broker as unknown as NodeJS.EventEmitter).off("ack", onAck);
      assert.equal(after - before, calls, "acknowledgements");
      for (const [n, client] of clients.entries()) {
        assert.deepEqual(
          (cleared[n] ?? []).map((p) => [p?.payload?.toString(), p?.messageId]),
          packets.map((p, i) => [p.payload?.toString(), i + 1]),
          `${client.id} got each packet back for its ack listener`,
        );
        assert.deepEqual(
          (await drain(persistence.outgoingStream(client))).map((p) => p.topic),
          ["warm"],
        );
      }
    });

    it("a clean session's PUBACK and PUBCOMP cost no Redis command; the queue it inherits is still cleared", async () => {
      const { persistence, db } = await node(newPrefix());
      const persistent = { id: "cleaner" };
      const packets = [publish("inherited", "a"), publish("inherited", "b")];
      for (const packet of packets)
        await persistence.outgoingEnqueueCombi([{ clientId: "cleaner" }], packet);
      await Promise.all(
        packets.map((packet, i) =>
          persistence.outgoingUpdate(persistent, { ...packet, messageId: i + 1 }),
        ),
      );
      const clean = { id: "cleaner", clean: true };

      const before = await totalCommands(db);
      const acknowledged = await Promise.all([
        persistence.outgoingClearMessageId(clean, { cmd: "puback", messageId: 1 }),
        persistence.outgoingClearMessageId(clean, { cmd: "pubcomp", messageId: 2 }),
      ]);
      assert.equal(await totalCommands(db), before, "no command for a clean session's acks");
      assert.deepEqual(acknowledged, [undefined, undefined]);

      // aedes' emptyQueue hands the stored packets themselves: those are cleared in Redis.
      const inherited = await drain(persistence.outgoingStream(clean));
      assert.equal(inherited.length, 2, "the inherited queue is untouched by the acks");
      await Promise.all(
        inherited.map((packet) => persistence.outgoingClearMessageId(clean, packet)),
      );
      assert.deepEqual(await drain(persistence.outgoingStream(clean)), []);
    });

    it("a delivery refused before it got a packet id leaves the queue; the others stay", async () => {
      const { persistence } = await node(newPrefix());
      const client = { id: "acl-plc", clean: false };
      const waiting = publish("acl/allowed", "waiting");
      const refused = publish("acl/denied", "refused");
      await persistence.outgoingEnqueue({ clientId: client.id }, waiting);
      await persistence.outgoingEnqueue({ clientId: client.id }, refused);
      // aedes clears a delivery authorizeForward refused with the packet as published: no id.
      await persistence.outgoingClearMessageId(client, { ...refused });
      const left = await drain(persistence.outgoingStream(client));
      assert.deepEqual(
        left.map((p) => p.topic),
        ["acl/allowed"],
      );
    });

    it("inbound QoS 2: stored, read, deleted; a clean session's ids end with it", async () => {
      const { persistence } = await node(newPrefix());
      const client = { id: "publisher" };
      await persistence.incomingStorePacket(client, { ...publish("in"), messageId: 5 });
      await persistence.incomingStorePacket(client, { ...publish("in"), messageId: 6 });
      assert.equal(
        (await persistence.incomingGetPacket(client, { messageId: 5 } as StoredPacket)).messageId,
        5,
      );
      await persistence.incomingDelPacket(client, { messageId: 5 } as StoredPacket);
      await assert.rejects(persistence.incomingGetPacket(client, { messageId: 5 } as StoredPacket));
      await persistence.cleanIncoming(client);
      await assert.rejects(persistence.incomingGetPacket(client, { messageId: 6 } as StoredPacket));
    });

    it("wills: one per client and broker, streamed only for brokers not alive", async () => {
      const { persistence } = await node(newPrefix(), "node-a");
      await persistence.putWill({ id: "w:1" }, { ...publish("will/1") });
      await persistence.putWill({ id: "w-2" }, { ...publish("will/2") });
      assert.equal((await persistence.getWill({ id: "w:1" }))?.brokerId, "node-a");
      assert.deepEqual(await drain(persistence.streamWill({ "node-a": Date.now() })), []);
      const orphaned = await drain(persistence.streamWill({}));
      assert.deepEqual(orphaned.map((w) => w.clientId).sort(), ["w-2", "w:1"]);
      // Another broker's will for the same client is its own.
      assert.equal(await persistence.delWill({ id: "w:1", brokerId: "node-b" }), null);
      assert.equal((await persistence.delWill({ id: "w:1", brokerId: "node-a" }))?.topic, "will/1");
      assert.deepEqual(
        (await drain(persistence.streamWill({}))).map((w) => w.clientId),
        ["w-2"],
      );
    });

    it("wills left with one broker: only its own, whatever glob characters or colons the ids hold", async () => {
      const prefix = newPrefix();
      const ids = ["n*1", "n*1:x", "nX1", "n?1"];
      const owners = await Promise.all(ids.map((id) => node(prefix, id)));
      for (const [i, owner] of owners.entries()) {
        await owner.persistence.putWill({ id: `c:${i}` }, { ...publish(`will/${i}`) });
        await owner.persistence.putWill({ id: `d{${i}}` }, { ...publish(`will/${i}`) });
      }
      const reader = owners[2] as Node;
      const wills = await drain(reader.persistence.willsLeftWith("n*1"));
      assert.deepEqual(wills.map((w) => `${w.brokerId}/${w.clientId}`).sort(), [
        "n*1/c:0",
        "n*1/d{0}",
      ]);
      assert.deepEqual(await drain(reader.persistence.willsLeftWith("n")), []);
    });

    it("subscriptions reach every node: loaded at start, broadcast after, re-read after a gap", async () => {
      const prefix = newPrefix();
      const a = await node(prefix, "node-a");
      for (let i = 0; i < 25; i++) {
        await a.persistence.addSubscriptions({ id: `early-${i}` }, [{ topic: "plant/#", qos: 1 }]);
      }
      const b = await node(prefix, "node-b");
      assert.equal((await b.persistence.subscriptionsByTopic("plant/x")).length, 25, "loaded");
      await a.persistence.addSubscriptions({ id: "late" }, [{ topic: "late/+", qos: 2 }]);
      // b's own change, announced after a's: once b hears its echo, it has heard a's (one
      // channel, delivered in order).
      await b.persistence.addSubscriptions({ id: "barrier" }, [{ topic: "barrier", qos: 0 }]);
      assert.deepEqual(
        (await b.persistence.subscriptionsByTopic("late/1")).map((s) => [s.clientId, s.qos]),
        [["late", 2]],
        "broadcast",
      );
      // A removal b never heard of (as during a pub/sub gap), then the re-read.
      const keys = new PersistenceKeys(prefix);
      await a.db.hdel(keys.subscriptions("early-0"), "plant/#");
      assert.equal(await b.persistence.resyncSubscriptions(), 26, "24 + late + barrier");
      assert.equal((await b.persistence.subscriptionsByTopic("plant/x")).length, 24);
    });
  });
}

/** EVALSHA calls Redis (every primary of a Cluster) has answered so far. */
async function evalshaCalls(db: Redis | Cluster): Promise<number> {
  const servers = db instanceof Cluster ? db.nodes("master") : [db];
  let calls = 0;
  for (const server of servers) {
    const info = await server.info("commandstats");
    calls += Number(/cmdstat_evalsha:calls=(\d+)/.exec(info)?.[1] ?? 0);
  }
  return calls;
}

/**
 * Commands every primary processed, less the INFO calls that read the figure and ioredis'
 * periodic CLUSTER SLOTS.
 */
async function totalCommands(db: Redis | Cluster): Promise<number> {
  const servers = db instanceof Cluster ? db.nodes("master") : [db];
  let commands = 0;
  for (const server of servers) {
    const info = await server.info("commandstats");
    for (const match of info.matchAll(/cmdstat_(\w+):calls=(\d+)/g)) {
      if (match[1] !== "info" && match[1] !== "cluster") commands += Number(match[2]);
    }
  }
  return commands;
}
