import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import type { IPublishPacket, Packet } from "mqtt-packet";
import { DelayRelay } from "../../harness/delay-relay.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, end, type MqttClient } from "../../harness/mqtt-client.js";
import { rawConnect } from "../../harness/raw-socket.js";
import { RedisServer } from "../../harness/redis-server.js";
import { WireClient } from "../../harness/wire-client.js";

/** One-way delay between node-b and Redis: each resent PUBLISH waits for a round trip of it. */
const REDIS_DELAY_MS = 5;
/** Messages the subscriber got but had not PUBREC'd when its connection went. */
const UNRECEIVED = 20;

/**
 * Issue 17 (chaos-lb-cut, about 1 run in 6 under load): a QoS 2 subscriber PUBRECs "a" and loses
 * its connection with "b1".."b20" received but not PUBREC'd; its stored queue then holds the
 * PUBLISHes of b1..b20 and, behind them, the PUBREL of "a" (a PUBREC moves a delivery to the
 * end as a PUBREL). It resumes on node-b, whose Redis round trips are slowed, and PUBRECs each
 * resent PUBLISH at once. The server must send PUBRELs in the order the PUBRECs came
 * [MQTT-4.6.0-4]: a's before b1's. A receiver that hands a QoS 2 message on at PUBREL (MQTT.js
 * does) gets the messages in the order published [MQTT-4.6.0-6].
 */
describe("a resumed QoS 2 session's stored PUBREL and its resent PUBLISHes", () => {
  let redis: RedisServer;
  let relay: DelayRelay;
  let a: RunningNode;
  let b: RunningNode;
  const clients: MqttClient[] = [];
  const wires: WireClient[] = [];

  before(async () => {
    redis = await RedisServer.start();
    relay = await DelayRelay.start("127.0.0.1", { host: "127.0.0.1", port: redis.port });
    relay.setDelay(REDIS_DELAY_MS);
    const keyPrefix = `p${randomBytes(4).toString("hex")}:`;
    a = await startNode({ nodeId: "node-a", redis: { url: redis.url, keyPrefix } });
    b = await startNode({
      nodeId: "node-b",
      redis: { url: `redis://127.0.0.1:${relay.port}`, keyPrefix },
    });
  });

  after(async () => {
    for (const wire of wires) wire.stream.destroy();
    await end(...clients);
    await b?.stop();
    await a?.stop();
    await relay?.stop();
    await redis?.stop();
  });

  async function session(node: RunningNode, clientId: string): Promise<WireClient> {
    const wire = new WireClient(await rawConnect(Number(new URL(node.urls.tcp as string).port)));
    wires.push(wire);
    wire.send({ cmd: "connect", protocolVersion: 4, clientId, keepalive: 60, clean: false });
    await wire.waitFor("CONNACK", (p) => p.cmd === "connack");
    return wire;
  }

  it("sends the stored PUBREL before the PUBRELs of the resent PUBLISHes", async () => {
    const topic = `pubrel-order/${randomBytes(3).toString("hex")}`;
    const clientId = `${topic.replace("/", "-")}-sub`;
    const first = await session(a, clientId);
    first.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 2 }] });
    await first.waitFor("SUBACK", (p) => p.cmd === "suback");

    const publisher = await connect(a.urls.tcp as string, { clientId: `${clientId}-pub` });
    clients.push(publisher);
    const payloads = ["a", ...Array.from({ length: UNRECEIVED }, (_, i) => `b${i + 1}`)];
    for (const payload of payloads) await publisher.publishAsync(topic, payload, { qos: 2 });
    await first.waitForCount("publish", payloads.length);
    const idOf = new Map<number, string>();
    for (const p of first.received("publish") as IPublishPacket[]) {
      idOf.set(p.messageId as number, p.payload.toString());
    }
    const aId = [...idOf].find(([, payload]) => payload === "a")?.[0] as number;
    first.send({ cmd: "pubrec", messageId: aId });
    await first.waitFor("a's PUBREL", (p) => p.cmd === "pubrel" && p.messageId === aId);
    // Gone without PUBCOMP: a's PUBREL and b1..b20's PUBLISHes are the session's to resend.
    first.stream.destroy();
    await first.closed;

    const resumed = await session(b, clientId);
    const handedOn = await completeEach(resumed, payloads.length, idOf);
    assert.deepEqual(handedOn, payloads, "handed on at PUBREL, in the order published");
  });
});

/**
 * Answers each PUBLISH with PUBREC and each PUBREL with PUBCOMP, as they come, until `count`
 * PUBRELs came; resolves with the payloads in the order of their PUBRELs (what a receiver that
 * hands a message on at PUBREL hands on). `idOf`: the payloads of packet ids sent before.
 */
async function completeEach(
  wire: WireClient,
  count: number,
  idOf: Map<number, string>,
): Promise<string[]> {
  const handedOn: string[] = [];
  let next = 0;
  while (handedOn.length < count) {
    const at = next;
    await wire.waitFor(`packet ${at}`, () => wire.packets.length > at);
    const arrived = wire.packets[at] as Packet;
    next++;
    if (arrived.cmd === "publish") {
      idOf.set(arrived.messageId as number, arrived.payload.toString());
      wire.send({ cmd: "pubrec", messageId: arrived.messageId as number });
    } else if (arrived.cmd === "pubrel") {
      handedOn.push(idOf.get(arrived.messageId as number) ?? `unknown id ${arrived.messageId}`);
      wire.send({ cmd: "pubcomp", messageId: arrived.messageId as number });
    }
  }
  return handedOn;
}
