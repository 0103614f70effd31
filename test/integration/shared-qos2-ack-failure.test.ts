import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { Redis } from "ioredis";
import type { IPublishPacket, Packet } from "mqtt-packet";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { LogCapture } from "../../harness/log-capture.js";
import { connect, end, type MqttClient } from "../../harness/mqtt-client.js";
import { rawConnect } from "../../harness/raw-socket.js";
import { RedisCluster } from "../../harness/redis-cluster.js";
import { RedisServer } from "../../harness/redis-server.js";
import { WireClient } from "../../harness/wire-client.js";

/**
 * Issue 17 (found by the Sentinel failover chaos run, about 1 run in 8): a member PUBRECs a QoS 2
 * delivery of its group as the primary dies; its session keeps the PUBREL, but the removal of
 * the group's entry fails, so the entry stays in the member's queue and was sent to the member
 * again (a new packet id: a second message for it). The member's session notes what it PUBREC'd,
 * and an entry it had is removed instead of sent again: by its node's next resend, and by a
 * node it joins after reconnecting. Redis is made to refuse XDEL alone (an ACL rule on the
 * nodes' user), as a store failing at that moment would, until the entry was seen again or has
 * moved (so no retry of the removal can come first). On a single Redis and on a Redis Cluster
 * (the session's keys and the group's are in different slots there).
 */
for (const on of ["a single Redis", "a Redis Cluster"] as const) {
  describe(`shared subscriptions: a QoS 2 message whose group acknowledgement failed (${on})`, () => {
    let cluster: RedisCluster | undefined;
    let servers: RedisServer[] = [];
    const nodes: RunningNode[] = [];
    const logs = { a: new LogCapture("info"), b: new LogCapture("info") };
    const clients: MqttClient[] = [];
    const wires: WireClient[] = [];

    before(async () => {
      let redis: Record<string, unknown>;
      if (on === "a Redis Cluster") {
        cluster = await RedisCluster.start();
        servers = cluster.servers;
        redis = { cluster: cluster.nodes };
      } else {
        servers = [await RedisServer.start()];
        redis = { url: servers[0]?.url };
      }
      const keyPrefix = `x${randomBytes(4).toString("hex")}:`;
      for (const [nodeId, log] of [
        ["node-a", logs.a],
        ["node-b", logs.b],
      ] as const) {
        nodes.push(
          await startNode({ nodeId, redis: { ...redis, keyPrefix } }, process.cwd(), {
            logger: log.logger,
          }),
        );
      }
    });

    after(async () => {
      // The fault is removed whatever happened.
      await xdel("+xdel").catch(() => {});
      for (const wire of wires) wire.stream.destroy();
      await end(...clients);
      for (const node of nodes) await node.stop();
      if (cluster !== undefined) await cluster.stop();
      else for (const server of servers) await server.stop();
    });

    /** Lets ("+xdel") or refuses ("-xdel") XDEL on every server, to the nodes' user. */
    async function xdel(rule: "+xdel" | "-xdel"): Promise<void> {
      for (const server of servers) await server.command("ACL", "SETUSER", "default", rule);
    }

    function url(node: "a" | "b"): string {
      return (nodes[node === "a" ? 0 : 1] as RunningNode).urls.tcp as string;
    }

    /**
     * A member on node-a with a persistent session gets "one" (QoS 2) and PUBRECs it while Redis
     * refuses the group's XDEL (until the test lets it again); PUBREL and PUBCOMP complete.
     */
    async function memberThatHadOne(name: string): Promise<{ member: WireClient; topic: string }> {
      const topic = `ackfail/${name}`;
      const member = await session(url("a"), `member-${name}`);
      member.send({
        cmd: "subscribe",
        messageId: 1,
        subscriptions: [{ topic: `$share/g-${name}/${topic}`, qos: 2 }],
      });
      await member.waitFor("SUBACK", (p) => p.cmd === "suback");
      const publisher = await connect(url("a"), { protocolVersion: 4 });
      clients.push(publisher);
      await publisher.publishAsync(topic, "one", { qos: 2 });
      const delivery = (await member.waitFor("one", (p) => p.cmd === "publish")) as IPublishPacket;
      const failures = logs.a.lines.filter((l) => l.event === "shared.ack_failed").length;
      await xdel("-xdel");
      member.send({ cmd: "pubrec", messageId: delivery.messageId as number });
      await member.waitFor("PUBREL", (p) => isPubrel(p, delivery.messageId));
      await withDeadline(
        logs.a.waitFor(
          (l) =>
            l.event === "shared.ack_failed" &&
            logs.a.lines.filter((x) => x.event === "shared.ack_failed").length > failures,
        ),
        10_000,
        "the group acknowledgement refused",
      );
      member.send({ cmd: "pubcomp", messageId: delivery.messageId as number });
      await member.roundTrip();
      return { member, topic };
    }

    it("is not sent again to the member's connection (removed at the next resend)", async () => {
      const { member } = await memberThatHadOne("stay");
      // A refresh comes every 2 s: the entry is sent again then, or removed.
      const again = member.waitFor("one again", (p) => p.cmd === "publish" && isPayload(p, "one"));
      const skipped = logs.a.waitFor(
        (l) => l.event === "shared.redelivery_skipped" && l.clientId === "member-stay",
      );
      await withDeadline(Promise.race([again, skipped]), 10_000, "a resend");
      again.catch(() => {});
      await xdel("+xdel");
      await member.roundTrip();
      assert.deepEqual(member.publishedPayloads(), ["one"]);
    });

    it("is not sent again when the member resumes on another node", async () => {
      const { member, topic } = await memberThatHadOne("move");
      // The connection's queue goes to the group's backlog as it leaves (no other member).
      const watchers = servers.map((server) => new Redis(server.url));
      try {
        let backlogged: () => void = () => {};
        const moved = new Promise<void>((resolve) => {
          backlogged = resolve;
        });
        for (const watcher of watchers) {
          await watcher.config("SET", "notify-keyspace-events", "Et");
          watcher.on("message", (_channel: string, key: string) => {
            if (key.endsWith(":backlog")) backlogged();
          });
          await watcher.subscribe("__keyevent@0__:xadd");
        }
        member.stream.destroy();
        await withDeadline(moved, 10_000, "the member's queue moved to the backlog");
      } finally {
        for (const watcher of watchers) watcher.disconnect();
      }
      await xdel("+xdel");
      const resumed = await session(url("b"), "member-move");
      const connack = resumed.packets.find((p) => p.cmd === "connack");
      assert.equal(connack?.cmd === "connack" && connack.sessionPresent, true);
      const skipped = logs.b.waitFor(
        (l) => l.event === "shared.redelivery_skipped" && l.clientId === "member-move",
      );
      const again = resumed.waitFor("one again", (p) => p.cmd === "publish" && isPayload(p, "one"));
      await withDeadline(Promise.race([again, skipped]), 10_000, "the join on node-b");
      again.catch(() => {});
      const publisher = await connect(url("b"), { protocolVersion: 4 });
      clients.push(publisher);
      await publisher.publishAsync(topic, "two", { qos: 2 });
      await resumed.waitFor("two", (p) => p.cmd === "publish" && isPayload(p, "two"));
      await resumed.roundTrip();
      assert.deepEqual(resumed.publishedPayloads(), ["two"]);
    });

    /** A persistent session's raw MQTT 3.1.1 connection, CONNACK received. */
    async function session(to: string, clientId: string): Promise<WireClient> {
      const wire = new WireClient(await rawConnect(Number(new URL(to).port)), 4);
      wires.push(wire);
      wire.send({ cmd: "connect", protocolVersion: 4, clientId, keepalive: 60, clean: false });
      await wire.waitFor("CONNACK", (p) => p.cmd === "connack");
      return wire;
    }
  });
}

function isPubrel(packet: Packet, messageId: number | undefined): boolean {
  return packet.cmd === "pubrel" && packet.messageId === messageId;
}

function isPayload(packet: Packet, payload: string): boolean {
  return (packet as IPublishPacket).payload.toString() === payload;
}
