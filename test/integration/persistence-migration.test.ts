import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import { after, before, describe, it } from "node:test";
import { Aedes } from "aedes";
import { Cluster, Redis } from "ioredis";
import { pino } from "pino";
import { RedisCluster } from "../../harness/redis-cluster.js";
import { RedisServer } from "../../harness/redis-server.js";
import { drain, storedPublish } from "../../harness/stored-packets.js";
import type { StoredPacket } from "../../src/engine/persistence-types.js";
import { RedisPersistence } from "../../src/engine/redis-persistence.js";
import { PersistenceKeys } from "../../src/redis/redis-keys.js";

/**
 * The upgrade from a store written by aedes-persistence-redis 11.2.2 (the published package,
 * installed as the `aedes-persistence-redis-legacy` alias, writing through its own code and a
 * real aedes broker): a Sluice node starting on it converts it once, and finds every session,
 * queued message (with its packet identifier, and a PUBREL), inbound QoS 2 packet, will and
 * retained message; no key of the old layout is left.
 */
type Broker = { close(done: () => void): void };
interface LegacyStore {
  addSubscriptions(
    client: { id: string },
    subs: Array<{ topic: string; qos: number }>,
  ): Promise<void>;
  outgoingEnqueueCombi(subs: Array<{ clientId: string }>, packet: StoredPacket): Promise<void>;
  outgoingUpdate(client: { id: string }, packet: Partial<StoredPacket>): Promise<void>;
  incomingStorePacket(client: { id: string }, packet: StoredPacket): Promise<void>;
  putWill(client: { id: string }, packet: StoredPacket): Promise<void>;
  storeRetained(packet: StoredPacket): Promise<void>;
}
const LegacyPersistence = createRequire(import.meta.url)(
  "aedes-persistence-redis-legacy/asyncPersistence.js",
) as new (options: {
  conn: Redis | Cluster;
  cluster?: true;
}) => LegacyStore;

const silent = pino({ level: "silent" });
const createBroker = (options: Record<string, unknown>) =>
  Aedes.createBroker(
    options as Parameters<typeof Aedes.createBroker>[0],
  ) as unknown as Promise<Broker>;
const closeBroker = (broker: Broker) => new Promise<void>((resolve) => broker.close(resolve));

const packet = (topic: string, payload: string, qos = 1): StoredPacket =>
  storedPublish(topic, payload, qos, "old-node");

/** Every key under the prefix, without it (SCAN on every primary of a Cluster). */
async function keysUnder(db: Redis | Cluster, prefix: string): Promise<string[]> {
  const servers = db instanceof Cluster ? db.nodes("master") : [db];
  const keys: string[] = [];
  for (const server of servers) {
    for await (const chunk of server.scanStream({ match: `${prefix}*`, count: 1000 })) {
      keys.push(...(chunk as string[]).map((key) => key.slice(prefix.length)));
    }
  }
  return keys.sort();
}

/** Writes sessions, queues, in-flight state, a will and a retained message the old way. */
async function writeLegacyStore(db: Redis | Cluster): Promise<void> {
  const legacy = new LegacyPersistence({
    conn: db,
    ...(db instanceof Cluster ? { cluster: true as const } : {}),
  });
  const broker = await createBroker({ id: "old-node", persistence: legacy });
  const plc = { id: "plc/1" };
  await legacy.addSubscriptions(plc, [
    { topic: "cmd/#", qos: 1 },
    { topic: "status", qos: 0 },
  ]);
  await legacy.addSubscriptions({ id: "hmi" }, [{ topic: "alarms/+", qos: 2 }]);
  const first = packet("cmd/a", "first");
  const second = packet("cmd/b", "second", 2);
  const third = packet("cmd/c", "third");
  await legacy.outgoingEnqueueCombi([{ clientId: "plc/1" }, { clientId: "hmi" }], first);
  await legacy.outgoingEnqueueCombi([{ clientId: "plc/1" }], second);
  await legacy.outgoingEnqueueCombi([{ clientId: "plc/1" }], third);
  // `first` went out with packet identifier 11; `second` with 12 and was PUBREC'd.
  await legacy.outgoingUpdate(plc, { ...first, messageId: 11 });
  await legacy.outgoingUpdate(plc, { ...second, messageId: 12 });
  await legacy.outgoingUpdate(plc, { cmd: "pubrel", messageId: 12 });
  await legacy.incomingStorePacket(plc, { ...packet("up/1", "inbound", 2), messageId: 21 });
  await legacy.putWill(plc, { ...packet("plc/1/state", "offline"), retain: false });
  await legacy.storeRetained({ ...packet("site/state", "running"), retain: true });
  // Closing the broker disconnects the legacy store's connection.
  await closeBroker(broker);
}

const stores = [
  {
    name: "Redis",
    async start() {
      const server = await RedisServer.start();
      return {
        connect: (keyPrefix: string): Redis | Cluster => new Redis(server.url, { keyPrefix }),
        stop: () => server.stop(),
      };
    },
  },
  {
    name: "Redis Cluster",
    async start() {
      const cluster = await RedisCluster.start();
      return {
        connect: (keyPrefix: string): Redis | Cluster => new Cluster(cluster.nodes, { keyPrefix }),
        stop: () => cluster.stop(),
      };
    },
  },
];

for (const { name, start } of stores) {
  describe(`upgrade from aedes-persistence-redis 11 (${name})`, () => {
    let store: Awaited<ReturnType<(typeof stores)[number]["start"]>>;
    const cleanups: Array<() => Promise<void>> = [];
    const connections: Array<Redis | Cluster> = [];
    const connect = (keyPrefix: string) => {
      const db = store.connect(keyPrefix);
      connections.push(db);
      return db;
    };
    before(async () => {
      store = await start();
    });
    after(async () => {
      for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
      for (const db of connections) db.disconnect();
      await store?.stop();
    });

    it("two nodes starting at once: one converts, both find every session, nothing of the old layout is left", async () => {
      const prefix = `u${randomBytes(4).toString("hex")}:`;
      await writeLegacyStore(connect(prefix));

      const startNode = async (id: string) => {
        const db = connect(prefix);
        const persistence = new RedisPersistence({
          db,
          log: silent,
          maxQueuedPerClient: 100,
          onQueueFull: () => {},
        });
        const broker = await createBroker({ id, persistence });
        cleanups.push(() => closeBroker(broker));
        return { persistence, db };
      };
      const [a, b] = await Promise.all([startNode("new-a"), startNode("new-b")]);

      for (const { persistence } of [a, b]) {
        assert.deepEqual(await persistence.countOffline(), { subsCount: 2, clientsCount: 2 });
        assert.deepEqual(
          (await persistence.subscriptionsByTopic("alarms/1")).map((s) => [s.clientId, s.qos]),
          [["hmi", 2]],
        );
      }
      const { persistence } = a;
      const plc = { id: "plc/1" };
      const subscriptions = await persistence.subscriptionsByClient(plc);
      assert.deepEqual(
        subscriptions.sort((x, y) => x.topic.localeCompare(y.topic)),
        [
          { topic: "cmd/#", qos: 1 },
          { topic: "status", qos: 0 },
        ],
      );
      const describe = (p: StoredPacket) =>
        p.cmd === "pubrel"
          ? `pubrel ${p.messageId}`
          : `${p.payload?.toString()} ${p.messageId ?? "-"}`;
      // The stock persistence moves a PUBREC'd delivery to the end of the queue; a resume sends
      // the PUBRELs first (resend-order.ts).
      assert.deepEqual((await drain(persistence.outgoingStream(plc))).map(describe), [
        "pubrel 12",
        "first 11",
        "third -",
      ]);
      assert.deepEqual(
        (await drain(persistence.outgoingStream({ id: "hmi" }))).map((p) => p.payload?.toString()),
        ["first"],
      );
      // The converted identifiers are acknowledged like any.
      await persistence.outgoingClearMessageId(plc, { messageId: 11 });
      await persistence.outgoingClearMessageId(plc, { messageId: 12 });
      assert.deepEqual((await drain(persistence.outgoingStream(plc))).map(describe), ["third -"]);

      const inbound = await persistence.incomingGetPacket(plc, { messageId: 21 } as StoredPacket);
      assert.equal(inbound.payload?.toString(), "inbound");
      const wills = await drain(persistence.streamWill({}));
      assert.deepEqual(
        wills.map((w) => [w.clientId, w.brokerId, w.topic]),
        [["plc/1", "old-node", "plc/1/state"]],
      );
      const retained = await drain(persistence.createRetainedStream("site/#"));
      assert.deepEqual(
        retained.map((p) => p.payload?.toString()),
        ["running"],
      );

      const keys = new PersistenceKeys(prefix);
      const left = (await keysUnder(a.db, prefix)).filter(
        (key) =>
          !key.startsWith("client:{") &&
          !key.startsWith("persistence:") &&
          key !== keys.retainedHash &&
          !key.startsWith(keys.retainedTopic("")),
      );
      assert.deepEqual(left, [], "no key of the old layout");
    });
  });
}
