import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { Aedes, type PublishPacket } from "aedes";
import { pino } from "pino";
import { withDeadline } from "../../harness/deadline.js";
import { type DeadNodeWillStore, DeadNodeWills } from "../../src/engine/dead-node-wills.js";
import type { StoredPacket } from "../../src/engine/persistence-types.js";

/**
 * The targeted sweep on a real aedes broker: peers are other nodes' heartbeats published on the
 * broker's emitter (as they arrive over Redis), wills come from a store of this test's own.
 */
const HEARTBEAT_MS = 100;
const log = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

/** Wills by node, as the Redis persistence keeps them; records each deletion. */
class WillShelf implements DeadNodeWillStore {
  readonly deleted: string[] = [];
  /** The nodes whose wills were read, once per read. */
  readonly reads: string[] = [];
  private readonly wills = new Map<string, StoredPacket[]>();

  put(brokerId: string, clientId: string, topic: string): void {
    const will: StoredPacket = {
      cmd: "publish",
      brokerId,
      brokerCounter: 0,
      clientId,
      topic,
      payload: Buffer.from("offline"),
      qos: 0,
      retain: false,
    };
    this.wills.set(brokerId, [...(this.wills.get(brokerId) ?? []), will]);
  }

  async *willsLeftWith(brokerId: string): AsyncGenerator<StoredPacket> {
    this.reads.push(brokerId);
    yield* [...(this.wills.get(brokerId) ?? [])];
  }

  async delWill(client: { id: string; brokerId: string }): Promise<void> {
    const left = (this.wills.get(client.brokerId) ?? []).filter((w) => w.clientId !== client.id);
    this.wills.set(client.brokerId, left);
    this.deleted.push(`${client.brokerId}/${client.id}`);
  }
}

let broker: Aedes | undefined;
afterEach(
  () => new Promise<void>((resolve) => (broker ? broker.close(() => resolve()) : resolve())),
);

/** A broker whose authorizePublish refuses `refused/...` topics, and what it delivered. */
async function brokerWithSweep(shelf: WillShelf, fabric: { up: boolean; leases?: Set<string> }) {
  broker = await Aedes.createBroker({
    id: "self",
    // aedes' own sweep (every 4 heartbeats) stays out of these tests.
    heartbeatInterval: 60_000,
    authorizePublish: (client, packet: PublishPacket, callback) =>
      callback(
        client === null && packet.topic.startsWith("refused/") ? new Error("refused") : null,
      ),
  });
  const delivered: string[] = [];
  let waiters: Array<{ count: number; resolve: () => void }> = [];
  await new Promise<void>((resolve) =>
    broker?.subscribe(
      "#",
      (packet, done) => {
        if (!packet.topic.startsWith("$SYS")) delivered.push(packet.topic);
        waiters = waiters.filter((w) => {
          if (delivered.length < w.count) return true;
          w.resolve();
          return false;
        });
        done();
      },
      () => resolve(),
    ),
  );
  const sweep = new DeadNodeWills(broker, {
    heartbeatMs: HEARTBEAT_MS,
    store: shelf,
    isFabricUp: () => fabric.up,
    nodeGone: async (nodeId) => (fabric.leases?.has(nodeId) === true ? undefined : "lease"),
    log,
  });
  sweep.start();
  /** Resolves once `count` wills have been delivered. */
  const deliveries = (count: number) =>
    new Promise<void>((resolve) => {
      if (delivered.length >= count) resolve();
      else waiters.push({ count, resolve });
    });
  return { broker, delivered, deliveries };
}

/** Publishes a peer's heartbeat every heartbeat until stopped; resolves the last one's time. */
function heartbeats(target: Aedes, peer: string): { stop(): number } {
  let last = Date.now();
  const beat = () => {
    last = Date.now();
    target.publish(
      {
        cmd: "publish",
        topic: `$SYS/${peer}/heartbeat`,
        payload: Buffer.from(peer),
        qos: 0,
        retain: false,
        dup: false,
      },
      () => {},
    );
  };
  beat();
  const timer = setInterval(beat, HEARTBEAT_MS);
  return {
    stop() {
      clearInterval(timer);
      return last;
    },
  };
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("DeadNodeWills", () => {
  it("a node silent for 3 heartbeats: its wills published once and deleted, a refused one kept", async () => {
    const shelf = new WillShelf();
    shelf.put("peer-a", "dev-1", "will/dev-1");
    shelf.put("peer-a", "dev-2", "will/dev-2");
    shelf.put("peer-a", "dev-3", "refused/dev-3");
    shelf.put("peer-b", "dev-4", "will/dev-4");
    const { broker, delivered, deliveries } = await brokerWithSweep(shelf, { up: true });
    const a = heartbeats(broker, "peer-a");
    const b = heartbeats(broker, "peer-b");
    await pause(2 * HEARTBEAT_MS);
    const lastBeat = a.stop();
    try {
      await withDeadline(deliveries(2), 10 * HEARTBEAT_MS, "peer-a's wills");
      const after = Date.now() - lastBeat;
      assert.ok(after > 3 * HEARTBEAT_MS, `not before 3 silent heartbeats (${after} ms)`);
      assert.ok(after <= 3 * HEARTBEAT_MS + HEARTBEAT_MS, `within a heartbeat of it (${after} ms)`);
      // aedes keeps peer-a's last heartbeat until its own sweep: it is judged once all the same.
      await pause(6 * HEARTBEAT_MS);
      assert.deepEqual(delivered.sort(), ["will/dev-1", "will/dev-2"]);
      assert.deepEqual(shelf.deleted.sort(), ["peer-a/dev-1", "peer-a/dev-2"]);
      assert.deepEqual(shelf.reads, ["peer-a"], "read once, and only the dead node's");
    } finally {
      b.stop();
    }
  });

  it("no node is judged while this node's fabric is down, nor until it has been up 3 heartbeats", async () => {
    const shelf = new WillShelf();
    shelf.put("peer-c", "dev-5", "will/dev-5");
    const fabric = { up: true };
    const { broker, delivered, deliveries } = await brokerWithSweep(shelf, fabric);
    const c = heartbeats(broker, "peer-c");
    await pause(2 * HEARTBEAT_MS);
    fabric.up = false;
    c.stop();
    await pause(6 * HEARTBEAT_MS);
    assert.deepEqual(delivered, [], "nothing while the fabric is down");
    const upAt = Date.now();
    fabric.up = true;
    await withDeadline(deliveries(1), 10 * HEARTBEAT_MS, "peer-c's will once up");
    const after = Date.now() - upAt;
    assert.ok(after > 3 * HEARTBEAT_MS, `only after 3 heartbeats up (${after} ms)`);
    assert.deepEqual(delivered, ["will/dev-5"]);
  });

  it("waits for a silent node's lease to be gone: one only cut off keeps its clients' wills", async () => {
    const shelf = new WillShelf();
    shelf.put("peer-d", "dev-6", "will/dev-6");
    const fabric = { up: true, leases: new Set(["peer-d"]) };
    const { broker, delivered, deliveries } = await brokerWithSweep(shelf, fabric);
    const d = heartbeats(broker, "peer-d");
    await pause(2 * HEARTBEAT_MS);
    d.stop();
    await pause(6 * HEARTBEAT_MS);
    assert.deepEqual(delivered, [], "nothing while its lease is held");
    const goneAt = Date.now();
    fabric.leases.delete("peer-d");
    await withDeadline(deliveries(1), 4 * HEARTBEAT_MS, "peer-d's will once its lease is gone");
    assert.ok(Date.now() - goneAt <= HEARTBEAT_MS, "within a quarter heartbeat or so");
    assert.deepEqual(delivered, ["will/dev-6"]);
  });
});
