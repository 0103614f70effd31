import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as pause } from "node:timers/promises";
import { Redis, type RedisOptions } from "ioredis";
import type { IPublishPacket, Packet } from "mqtt";
import mqtt from "mqtt";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, readyWithin, startNode } from "../../harness/in-process-node.js";
import { LogCapture } from "../../harness/log-capture.js";
import {
  connect,
  connectWithConnack,
  end,
  Inbox,
  type MqttClient,
  subscribe,
} from "../../harness/mqtt-client.js";
import { metricValue } from "../../harness/node-metrics.js";
import { RedisSentinels } from "../../harness/redis-sentinel.js";
import { RedisServer } from "../../harness/redis-server.js";
import { InboundReservations, type Reservation } from "../../src/engine/inbound-qos2.js";
import {
  ReplicaAcks,
  ReplicaEpochChanged,
  ReplicaShortfall,
} from "../../src/engine/replica-acks.js";

/**
 * Issue 17, "No loss" across a Sentinel failover: Redis replicates asynchronously, so what the
 * primary acknowledged and had not yet sent its replica is gone once Sentinel promotes that
 * replica. The replica here replicates through a relay that holds its stream back; a write the
 * test wants lost is dropped with the relay as the primary is killed. `redis.replicaAcks`
 * (engine/replica-acks.ts) keeps the acknowledgement until a replica confirms.
 */
/** How long the relay holds each chunk of the replication stream, each way. */
const HOLD_MS = 300;
const FAILOVER_MS = 20_000;
const DEADLINE_MS = 10_000;

/** A node on a Sentinel group whose (only) replica replicates through the relay. */
async function withGroup(
  label: string,
  redisExtra: Record<string, unknown>,
  test: (group: RedisSentinels, node: RunningNode, log: LogCapture) => Promise<void>,
): Promise<void> {
  const group = await RedisSentinels.start(`sluice-${label}`, { relayed: true });
  const log = new LogCapture("info");
  let node: RunningNode | undefined;
  try {
    node = await startNode(
      {
        nodeId: `${label}-1`,
        redis: {
          sentinels: group.endpoints,
          name: group.name,
          keyPrefix: `${label}${randomBytes(4).toString("hex")}:`,
          ...redisExtra,
        },
      },
      process.cwd(),
      { logger: log.logger },
    );
    await test(group, node, log);
  } finally {
    await node?.stop();
    await group.stop();
  }
}

function relay(group: RedisSentinels): NonNullable<RedisSentinels["replication"]> {
  const replication = group.replication;
  if (replication === undefined) throw new Error("the group has no relay");
  return replication;
}

/** Resolves once `holds()` is true: checked now and at each message `client` gets. */
function untilMessage(client: MqttClient, holds: () => boolean, what: string): Promise<void> {
  return withDeadline(
    new Promise<void>((resolve) => {
      const check = (): void => {
        if (holds()) resolve();
        else client.once("message", check);
      };
      check();
    }),
    DEADLINE_MS,
    what,
  );
}

/** The packets of one kind a client receives from now on. */
function received(client: MqttClient, cmd: Packet["cmd"]): Packet[] {
  const packets: Packet[] = [];
  client.on("packetreceive", (packet: Packet) => {
    if (packet.cmd === cmd) packets.push(packet);
  });
  return packets;
}

describe("replica confirmations: acknowledgements survive a Sentinel failover", () => {
  it("a QoS 1 message PUBACKed for an offline session is there after the failover", async () => {
    await withGroup("acks-lost", {}, async (group, node, log) => {
      const url = node.urls.tcp as string;
      const topic = `acks/${randomBytes(4).toString("hex")}`;
      const subscriber = await connect(url, { clientId: "acks-sub", clean: false });
      await subscribe(subscriber, topic, 1);
      await end(subscriber);
      const publisher = await connect(url, { clientId: "acks-pub" });
      try {
        relay(group).setDelay(HOLD_MS);
        const sent = Date.now();
        await withDeadline(
          publisher.publishAsync(topic, "held", { qos: 1 }),
          DEADLINE_MS,
          "PUBACK",
        );
        const ackMs = Date.now() - sent;
        // The primary dies; what it had not sent the replica yet dies with the relay.
        await relay(group).stop();
        await group.killPrimary();
        await group.waitForSwitch(FAILOVER_MS);
        await readyWithin(node, FAILOVER_MS);
        const { client, inbox } = await connectWithConnack(url, {
          clientId: "acks-sub",
          clean: false,
        });
        try {
          const [message] = await withDeadline(
            inbox.waitFor(1),
            DEADLINE_MS,
            `the message PUBACKed after ${ackMs} ms, after the failover`,
          );
          assert.equal(message?.payload.toString(), "held");
          // The PUBACK waited for the replica: the relay's hold, there and back.
          assert.ok(ackMs >= HOLD_MS, `PUBACK after ${ackMs} ms`);
        } finally {
          await end(client);
        }
        // The promoted replica has no replica of its own: the node says so.
        assert.ok(log.lines.some((l) => l.event === "redis.replicas_short"));
      } finally {
        await end(publisher);
      }
    });
  });

  // The subscriber's PUBREC turns its queued delivery into a PUBREL record; once the subscriber
  // has the PUBREL it takes a PUBLISH with that id for a new message. Were the record lost with
  // the primary, the session's next resume would send the PUBLISH again: a second copy.
  it("a QoS 2 delivery released before the failover is not sent again after it", async () => {
    await withGroup("acks-pubrel", {}, async (group, node) => {
      const url = node.urls.tcp as string;
      const topic = `acks/${randomBytes(4).toString("hex")}`;
      const offline = await connect(url, { clientId: "rel-sub", clean: false });
      await subscribe(offline, topic, 2);
      await end(offline);
      const publisher = await connect(url, { clientId: "rel-pub" });
      // Queued for the offline session, and confirmed by the replica with the PUBREC.
      await withDeadline(
        publisher.publishAsync(topic, "released", { qos: 2 }),
        DEADLINE_MS,
        "PUBCOMP",
      );
      await end(publisher);
      relay(group).setDelay(HOLD_MS);
      const subscriber = mqtt.connect(url, {
        clientId: "rel-sub",
        clean: false,
        reconnectPeriod: 0,
      });
      const later: MqttClient[] = [];
      try {
        const pubrelMs = await withDeadline(
          new Promise<number>((resolve) => {
            let pubrecAt = 0;
            subscriber.on("packetsend", (packet: Packet) => {
              if (packet.cmd === "pubrec") pubrecAt = Date.now();
            });
            subscriber.on("packetreceive", (packet: Packet) => {
              if (packet.cmd === "pubrel") resolve(Date.now() - pubrecAt);
            });
          }),
          DEADLINE_MS,
          "PUBREL at the resumed subscriber",
        );
        await end(subscriber);
        // The primary dies; what it had not sent the replica yet dies with the relay.
        await relay(group).stop();
        await group.killPrimary();
        await group.waitForSwitch(FAILOVER_MS);
        await readyWithin(node, FAILOVER_MS);
        const { client, inbox } = await connectWithConnack(url, {
          clientId: "rel-sub",
          clean: false,
        });
        later.push(client);
        const sender = await connect(url, { clientId: "rel-later" });
        later.push(sender);
        // Delivered after whatever the resumed session gets first. QoS 0: the promoted replica
        // has no replica to confirm a QoS 1 or 2 message.
        await sender.publishAsync(topic, "after", { qos: 0 });
        await withDeadline(inbox.waitFor(1), DEADLINE_MS, "a message after the failover");
        const [first] = inbox.received.map((m) => m.payload.toString());
        assert.equal(first, "after", `PUBREL ${pubrelMs} ms after the PUBREC`);
        // The PUBREL waited for the replica: the relay's hold, there and back.
        assert.ok(pubrelMs >= HOLD_MS, `PUBREL after ${pubrelMs} ms`);
      } finally {
        await end(subscriber, ...later);
      }
    });
  });

  it("fewer replicas than asked: no PUBREL until a replica confirms; the resumed session gets it once", async () => {
    const options = { replicaAcks: { timeoutMs: 200 } };
    await withGroup("acks-pubrel-short", options, async (group, node) => {
      const url = node.urls.tcp as string;
      const topic = `acks/${randomBytes(4).toString("hex")}`;
      const offline = await connect(url, { clientId: "short-rel-sub", clean: false });
      await subscribe(offline, topic, 2);
      await end(offline);
      const publisher = await connect(url, { clientId: "short-rel-pub" });
      await withDeadline(
        publisher.publishAsync(topic, "held", { qos: 2 }),
        DEADLINE_MS,
        "PUBCOMP while the replica keeps up",
      );
      await end(publisher);
      // Each chunk held 1 s each way: no WAIT of 200 ms is answered. A primary short of
      // replicas may be one Sentinel has just replaced: a record it takes may be lost.
      relay(group).setDelay(1_000);
      const subscriber = mqtt.connect(url, {
        clientId: "short-rel-sub",
        clean: false,
        reconnectPeriod: 200,
      });
      const got: string[] = [];
      let pubrels = 0;
      subscriber.on("message", (_topic, payload) => got.push(payload.toString()));
      subscriber.on("packetreceive", (packet: Packet) => {
        if (packet.cmd === "pubrel") pubrels++;
      });
      try {
        // The PUBREC's record is not confirmed: aedes closes the connection.
        await withDeadline(
          new Promise<void>((resolve) => subscriber.once("close", () => resolve())),
          DEADLINE_MS,
          "the subscriber's connection closed",
        );
        assert.equal(pubrels, 0, "no PUBREL while the replica lags");
        assert.equal(got.length, 0, "nothing handed over while the replica lags");
        // The resumed session gets its stored PUBREL, replicas short or not: once.
        await untilMessage(subscriber, () => got.length > 0, "the message at the resumed session");
        relay(group).setDelay(0);
        // Anything sent after it arrives after any second copy.
        const sender = await connect(url, { clientId: "short-rel-later" });
        try {
          await sender.publishAsync(topic, "after", { qos: 0 });
          await untilMessage(subscriber, () => got.includes("after"), "a message after it");
        } finally {
          await end(sender);
        }
        assert.deepEqual(got, ["held", "after"]);
      } finally {
        await end(subscriber);
      }
    });
  });

  it("fewer replicas than asked: no acknowledgement, the client sends again, nothing lost", async () => {
    await withGroup("acks-short", { replicaAcks: { timeoutMs: 200 } }, async (group, node, log) => {
      const url = node.urls.tcp as string;
      const topic = `acks/${randomBytes(4).toString("hex")}`;
      const subscriber = await connect(url, { clientId: "short-sub", clean: false });
      const inbox = new Inbox(subscriber);
      await subscribe(subscriber, topic, 2);
      // Sends again what is unacknowledged at each reconnection (MQTT-4.4.0-1).
      const publisher = await connect(url, {
        clientId: "short-pub",
        clean: false,
        reconnectPeriod: 100,
      });
      try {
        const pubacks = received(publisher, "puback");
        const pubrecs = received(publisher, "pubrec");
        // Each chunk held 1 s each way: no WAIT of 200 ms is answered.
        relay(group).setDelay(1_000);
        const closed = new Promise<void>((resolve) => publisher.once("close", () => resolve()));
        const q1 = publisher.publishAsync(topic, "q1", { qos: 1 });
        await withDeadline(closed, DEADLINE_MS, "the publisher's connection closed");
        assert.equal(pubacks.length, 0, "no PUBACK while the replica lags");
        assert.ok((await metricValue(node.httpUrl, "sluice_redis_replica_ack_misses_total")) >= 1);
        await withDeadline(
          log.waitFor((l) => l.event === "redis.replica_acks_missed"),
          DEADLINE_MS,
          "redis.replica_acks_missed logged",
        );
        relay(group).setDelay(0);
        await withDeadline(q1, DEADLINE_MS, "PUBACK once the replica confirms");
        assert.ok(
          inbox.received.some((m) => m.payload.toString() === "q1"),
          "the QoS 1 message delivered",
        );

        // QoS 2: nothing is published while the replica lags (a primary short of replicas may
        // be one Sentinel has just replaced), no PUBREC; the message goes out once after.
        await withDeadline(
          new Promise<void>((resolve) => {
            if (publisher.connected) resolve();
            else publisher.once("connect", () => resolve());
          }),
          DEADLINE_MS,
          "publisher reconnected",
        );
        relay(group).setDelay(1_000);
        const q2 = publisher.publishAsync(topic, "q2", { qos: 2 });
        // Two confirmations (200 ms each) fail meanwhile.
        const misses = await metricValue(node.httpUrl, "sluice_redis_replica_ack_misses_total");
        await withDeadline(
          (async () => {
            while (
              (await metricValue(node.httpUrl, "sluice_redis_replica_ack_misses_total")) <
              misses + 2
            )
              await pause(50);
          })(),
          DEADLINE_MS,
          "confirmations failing",
        );
        assert.equal(pubrecs.length, 0, "no PUBREC while the replica lags");
        assert.ok(
          !inbox.received.some((m) => m.payload.toString() === "q2"),
          "the QoS 2 message not published while the replica lags",
        );
        // Short of replicas, a client with a will still connects, and a persistent session
        // still subscribes: their CONNACK and SUBACK wait for the confirmation, then go out.
        const late = await withDeadline(
          connect(url, {
            clientId: "short-late",
            clean: false,
            will: { topic: `${topic}/will`, payload: Buffer.from("gone"), qos: 1, retain: false },
          }),
          DEADLINE_MS,
          "CONNACK with a will while the replica lags",
        );
        try {
          assert.equal(
            await withDeadline(subscribe(late, `${topic}/late`, 1), DEADLINE_MS, "SUBACK"),
            1,
          );
        } finally {
          await end(late);
        }
        relay(group).setDelay(0);
        await withDeadline(q2, DEADLINE_MS, "PUBCOMP once the replica confirms");
        // Handed over at its PUBREL, which waits for the replica too; a QoS 2 message published
        // after it arrives after any second copy of it.
        const arrived = (payload: string, what: string) =>
          untilMessage(
            subscriber,
            () => inbox.received.some((m) => m.payload.toString() === payload),
            what,
          );
        await arrived("q2", "the QoS 2 message at the subscriber");
        await withDeadline(
          publisher.publishAsync(topic, "after", { qos: 2 }),
          DEADLINE_MS,
          "PUBCOMP",
        );
        await arrived("after", "a message published after it");
        const q2s = inbox.received.filter((m) => m.payload.toString() === "q2");
        assert.equal(q2s.length, 1, "the QoS 2 message delivered once");
        assert.equal((q2s[0]?.packet as IPublishPacket).qos, 2);
      } finally {
        await end(publisher, subscriber);
      }
    });
  });

  it("warns at start when Redis has fewer replicas than asked", async () => {
    await withGroup("acks-warn", { replicaAcks: { replicas: 2 } }, async (_group, _node, log) => {
      const line = await withDeadline(
        log.waitFor((l) => l.event === "redis.replicas_short"),
        DEADLINE_MS,
        "redis.replicas_short",
      );
      assert.equal(line.connected, 1);
      assert.equal(line.replicas, 2);
    });
  });
});

/**
 * A primary and its replica, and a connection to the primary (with `options`) once the replica
 * acknowledges: its first sync may still run on a loaded machine.
 */
async function withReplica(
  options: RedisOptions,
  test: (parts: {
    primary: RedisServer;
    replica: RedisServer;
    connection: Redis;
    log: LogCapture;
  }) => Promise<void>,
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "sluice-acks-"));
  const primary = await RedisServer.start();
  let replica: RedisServer | undefined;
  const connection = new Redis({ port: primary.port, lazyConnect: true, ...options });
  try {
    replica = await RedisServer.start({ replicaOf: { port: primary.port, dir } });
    await connection.connect();
    await connection.set("replica-in-sync", "1");
    assert.equal(await connection.wait(1, DEADLINE_MS), 1, "the replica in sync");
    await test({ primary, replica, connection, log: new LogCapture("info") });
  } finally {
    connection.disconnect();
    await replica?.kill();
    await primary.kill();
    await rm(dir, { recursive: true, force: true });
  }
}

describe("replica confirmations on a primary and its replica", () => {
  it("confirmations asked in one turn share one WAIT; a stopped replica makes them fail", async () => {
    await withReplica({}, async ({ primary, replica, connection, log }) => {
      const acks = new ReplicaAcks(connection, { replicas: 1, timeoutMs: 300 }, log.logger);
      const waits = async (): Promise<number> =>
        Number(
          /cmdstat_wait:calls=(\d+)/.exec(await primary.bulk("INFO", "commandstats"))?.[1] ?? 0,
        );
      const before = await waits();
      await Promise.all(Array.from({ length: 50 }, () => acks.confirmed()));
      assert.equal((await waits()) - before, 1, "one WAIT for the turn's 50");

      // The replica stopped (SIGSTOP): it acknowledges nothing until it runs again.
      const pid = Number(/process_id:(\d+)/.exec(await replica.bulk("INFO", "server"))?.[1]);
      process.kill(pid, "SIGSTOP");
      try {
        const missed = new Promise<number>((resolve) => acks.once("missed", resolve));
        await assert.rejects(
          Promise.all([acks.confirmed(), acks.confirmed()]),
          (error: unknown) => error instanceof ReplicaShortfall && error.confirmed === 0,
        );
        assert.equal(await missed, 2);
        assert.ok(log.lines.some((l) => l.event === "redis.replica_acks_missed"));
      } finally {
        process.kill(pid, "SIGCONT");
      }
      await withDeadline(acks.confirmed(), DEADLINE_MS, "confirmed once the replica runs again");
      assert.ok(log.lines.some((l) => l.event === "redis.replica_acks_confirmed"));
    });
  });
});

describe("replica confirmations across a connection loss", () => {
  it("a write made before the node lost a Redis connection is not confirmed after it", async () => {
    // As the node's confirmation connection: no offline queue, nothing sent again.
    const options = { enableOfflineQueue: false, autoResendUnfulfilledCommands: false };
    await withReplica(options, async ({ primary, replica, connection, log }) => {
      const acks = new ReplicaAcks(connection, { replicas: 1, timeoutMs: 1_000 }, log.logger);
      const before = acks.epoch;
      await withDeadline(acks.confirmed(before), DEADLINE_MS, "confirmed in its epoch");

      // Asked, then a loss in the same turn: the batch goes after it, to whatever answers then.
      const asked = acks.confirmed();
      acks.connectionLost();
      await assert.rejects(asked, (error: unknown) => error instanceof ReplicaEpochChanged);

      // The confirmation connection itself lost and back.
      const epoch = acks.epoch;
      const back = new Promise((resolve) => connection.once("ready", resolve));
      connection.disconnect(true);
      await withDeadline(back, DEADLINE_MS, "reconnected");
      assert.ok(acks.epoch > epoch, "its close counted");
      await assert.rejects(acks.confirmed(epoch), ReplicaEpochChanged);
      await withDeadline(acks.confirmed(), DEADLINE_MS, "a write after the loss is confirmed");

      // A WAIT in flight as the connection drops and comes back at once: ioredis drops it
      // unanswered (nothing is resent on this connection), so the confirmation fails on the
      // close rather than waiting forever with every later one behind it.
      const pid = Number(/process_id:(\d+)/.exec(await replica.bulk("INFO", "server"))?.[1]);
      process.kill(pid, "SIGSTOP");
      try {
        const slow = new ReplicaAcks(connection, { replicas: 1, timeoutMs: 60_000 }, log.logger);
        const inFlight = slow.confirmed();
        const settled = inFlight.then(
          () => "confirmed",
          () => "failed",
        );
        await withDeadline(
          (async () => {
            while (!/blocked_clients:[1-9]/.test(await primary.bulk("INFO", "clients"))) {
              await pause(20);
            }
          })(),
          DEADLINE_MS,
          "the WAIT blocked on the primary",
        );
        const reconnected = new Promise((resolve) => connection.once("ready", resolve));
        connection.disconnect(true);
        await withDeadline(reconnected, DEADLINE_MS, "reconnected");
        assert.equal(
          await withDeadline(settled, DEADLINE_MS, "the WAIT in flight settled"),
          "failed",
        );
        process.kill(pid, "SIGCONT");
        await withDeadline(slow.confirmed(), DEADLINE_MS, "the next confirmation answered");
      } finally {
        process.kill(pid, "SIGCONT");
      }

      // A reserved QoS 2 message: published only if its reservation's epoch still holds.
      const reservations = new InboundReservations(acks);
      const reservation = (at: number): Reservation => ({
        clientId: "c",
        key: "k",
        field: "1",
        pending: "pending:t/t/d",
        origin: "t",
        again: false,
        published: Buffer.alloc(0),
        done: false,
        epoch: at,
      });
      const outcome = (at: number) =>
        new Promise<string>((resolve) =>
          reservations.afterConfirmed(
            reservation(at),
            () => resolve("published"),
            (error) => resolve(error.name),
          ),
        );
      assert.equal(await withDeadline(outcome(epoch), DEADLINE_MS, "stale"), "ReplicaEpochChanged");
      assert.equal(await withDeadline(outcome(acks.epoch), DEADLINE_MS, "current"), "published");
    });
  });
});
