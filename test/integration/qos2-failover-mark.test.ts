import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import type { Socket } from "node:net";
import { describe, it } from "node:test";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, readyWithin, startNode } from "../../harness/in-process-node.js";
import {
  connect,
  connectWithConnack,
  end,
  Inbox,
  type MqttClient,
  subscribe,
} from "../../harness/mqtt-client.js";
import {
  connectPacket,
  mqttString,
  packet,
  rawConnect,
  readBytes,
} from "../../harness/raw-socket.js";
import { RedisSentinels } from "../../harness/redis-sentinel.js";

/**
 * Issue 17, "No QoS 2 duplicates" across a Sentinel failover: an inbound QoS 2 message whose
 * PUBLISH ran on the primary (Redis handed it to the subscribers' nodes at once) while its
 * "published" mark had not yet reached the replica when the primary died. The promoted replica
 * has no mark, so the client's resend is published again. The replica here replicates through
 * a relay that holds its stream back; the relay is dropped with what it holds as the primary
 * is killed, right after the subscribers got the message.
 */
const HOLD_MS = 1_500;
const FAILOVER_MS = 20_000;
const DEADLINE_MS = 15_000;

/** A raw QoS 2 PUBLISH with the packet id a device picks (DUP set on a resend). */
function publishQos2(topic: string, id: number, payload: string, dup: boolean): Buffer {
  const identifier = Buffer.alloc(2);
  identifier.writeUInt16BE(id);
  const body = Buffer.concat([mqttString(topic), identifier, Buffer.from(payload)]);
  return packet(dup ? 0x3c : 0x34, body);
}

/** A raw MQTT 3.1.1 client of a persistent session, CONNACKed. */
async function rawSession(url: string, clientId: string): Promise<Socket> {
  const socket = await rawConnect(Number(new URL(url).port));
  socket.write(connectPacket(clientId, { clean: false }));
  const connack = await readBytes(socket, 4);
  // The session-present flag (byte 2) aside: accepted.
  assert.deepEqual([connack[0], connack[1], connack[3]], [0x20, 2, 0], `${clientId}'s CONNACK`);
  return socket;
}

/** Resolves once `inbox` holds a message with this payload. */
async function got(inbox: Inbox, payload: string, what: string): Promise<void> {
  await withDeadline(
    (async () => {
      for (let n = 1; ; n++) {
        const received = await inbox.waitFor(n);
        if (received.some((m) => m.payload.toString() === payload)) return;
      }
    })(),
    DEADLINE_MS,
    what,
  );
}

const copies = (inbox: Inbox, payload: string) =>
  inbox.received.filter((m) => m.payload.toString() === payload).length;

describe("QoS 2 across a Sentinel failover: a PUBLISH whose mark the primary took with it", () => {
  it("the client's resend reaches only those that missed the first copy", async () => {
    const group = await RedisSentinels.start("sluice-qos2-mark", { relayed: true });
    const relay = group.replication;
    if (relay === undefined) throw new Error("the group has no relay");
    const prefix = `m${randomBytes(4).toString("hex")}:`;
    const redis = {
      sentinels: group.endpoints,
      name: group.name,
      keyPrefix: prefix,
      // Past the relay's hold there and back.
      replicaAcks: { timeoutMs: 5_000 },
    };
    const nodes: RunningNode[] = [];
    const clients: MqttClient[] = [];
    const sockets: Socket[] = [];
    try {
      const a = await startNode({ nodeId: "mark-a", redis });
      nodes.push(a);
      const b = await startNode({ nodeId: "mark-b", redis });
      nodes.push(b);
      const urlA = a.urls.tcp as string;
      const urlB = b.urls.tcp as string;
      const topic = `mark/${randomBytes(4).toString("hex")}`;
      // Offline at the first copy: its queue gets it.
      const offline = await connect(urlA, { clientId: `${prefix}offline`, clean: false });
      await subscribe(offline, topic, 2);
      await end(offline);
      const publishes = new Map<string, number>();
      const published = new Set<() => void>();
      const subscriber = async (url: string, clientId: string, clean: boolean) => {
        // The persistent session resumes after its connection failed in the failover.
        const client = await connect(url, { clientId, clean, reconnectPeriod: clean ? 0 : 100 });
        clients.push(client);
        const inbox = new Inbox(client);
        client.on("packetreceive", (packet) => {
          if (packet.cmd !== "publish") return;
          publishes.set(clientId, (publishes.get(clientId) ?? 0) + 1);
          for (const check of published) check();
        });
        await subscribe(client, topic, 2);
        return inbox;
      };
      /** Resolves once these sessions have been sent a PUBLISH (MQTT.js emits QoS 2 at PUBREL). */
      const sent = (ids: string[], what: string) =>
        withDeadline(
          new Promise<void>((resolve) => {
            const check = (): void => {
              if (!ids.every((id) => (publishes.get(id) ?? 0) > 0)) return;
              published.delete(check);
              resolve();
            };
            published.add(check);
            check();
          }),
          DEADLINE_MS,
          what,
        );
      const onA = await subscriber(urlA, `${prefix}on-a`, true);
      const onB = await subscriber(urlB, `${prefix}on-b`, true);
      const persistentOnB = await subscriber(urlB, `${prefix}persistent-on-b`, false);

      relay.setDelay(HOLD_MS);
      const first = await rawSession(urlA, `${prefix}pub`);
      sockets.push(first);
      first.write(publishQos2(topic, 7, "m", false));
      await sent(
        [`${prefix}on-a`, `${prefix}on-b`, `${prefix}persistent-on-b`],
        "the first copy at each subscriber",
      );
      // The primary dies; what it had not sent the replica yet dies with the relay.
      await relay.stop();
      await group.killPrimary();
      // A replica for the promoted one: a QoS 2 message is published only once one confirms.
      await group.addReplica(await group.waitForSwitch(FAILOVER_MS));
      await Promise.all(nodes.map((node) => readyWithin(node, FAILOVER_MS)));

      // Subscribed after the first copy: a connection that missed it gets the resend.
      const late = await subscriber(urlB, `${prefix}late`, true);
      // The client's resend, through the other node.
      const resend = await rawSession(urlB, `${prefix}pub`);
      sockets.push(resend);
      resend.write(publishQos2(topic, 7, "m", true));
      await got(late, "m", "the resend at a connection that missed the first copy");

      // A message published after the resend was handed on reaches every subscriber after any
      // copy of it would have.
      const after = await connect(urlA, { clientId: `${prefix}after`, reconnectPeriod: 0 });
      clients.push(after);
      after.publish(topic, "after", { qos: 2 });
      for (const [inbox, name] of [
        [onA, "on-a"],
        [onB, "on-b"],
        [persistentOnB, "persistent-on-b"],
        [late, "late"],
      ] as const) {
        await got(inbox, "after", `the later message at ${name}`);
      }
      const { client: resumed, inbox: queued } = await connectWithConnack(urlA, {
        clientId: `${prefix}offline`,
        clean: false,
        reconnectPeriod: 0,
      });
      clients.push(resumed);
      await got(queued, "after", "the later message at the resumed session");

      assert.deepEqual(
        {
          onA: copies(onA, "m"),
          onB: copies(onB, "m"),
          persistentOnB: copies(persistentOnB, "m"),
          late: copies(late, "m"),
          resumed: copies(queued, "m"),
        },
        { onA: 1, onB: 1, persistentOnB: 1, late: 1, resumed: 1 },
      );
    } finally {
      for (const socket of sockets) socket.destroy();
      await end(...clients);
      for (const node of nodes) await node.stop();
      await group.stop();
    }
  });
});
