import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { IPublishPacket, Packet } from "mqtt-packet";
import { connect, end } from "../../harness/mqtt-client.js";
import { type NodePair, startNodePair } from "../../harness/node-pair.js";
import { rawConnect } from "../../harness/raw-socket.js";
import { WireClient } from "../../harness/wire-client.js";

/**
 * A group's QoS 2 delivery is acknowledged to the group at the member's PUBREC (the entry leaves
 * its queue: no other member gets it). The member's session must then keep the PUBREL until
 * PUBCOMP, and send it again when the session resumes [MQTT-4.4.0-1]: a receiver that passes
 * the message on at PUBREL (MQTT.js does) loses it otherwise, and no member ever has it. Found
 * by the chaos-shared test (a member whose connection dropped between PUBREC and PUBREL).
 */
describe("shared subscriptions: QoS 2 released after PUBREC", () => {
  let pair: NodePair;

  before(async () => {
    pair = await startNodePair();
  });
  after(async () => pair?.stop());

  for (const resumeOn of ["node-a", "node-b"] as const) {
    it(`a member that lost its connection before PUBREL gets the PUBREL again (resumed on ${resumeOn})`, async () => {
      const clientId = `pubrel-member-${resumeOn}`;
      const topic = `pubrel/${resumeOn}`;
      const first = await session(pair.a.urls.tcp as string, clientId);
      // Published on the member's node, which knows the group at once.
      const publisher = await connect(pair.a.urls.tcp as string, { protocolVersion: 4 });
      let second: WireClient | undefined;
      try {
        first.send({
          cmd: "subscribe",
          messageId: 1,
          subscriptions: [{ topic: `$share/g-${resumeOn}/${topic}`, qos: 2 }],
        });
        await first.waitFor("SUBACK", (p) => p.cmd === "suback");
        await publisher.publishAsync(topic, "released", { qos: 2 });
        const delivery = (await first.waitFor(
          "the shared PUBLISH",
          (p) => p.cmd === "publish",
        )) as IPublishPacket;
        assert.equal(delivery.qos, 2);
        first.send({ cmd: "pubrec", messageId: delivery.messageId as number });
        await first.waitFor("PUBREL", (p) => isPubrel(p, delivery.messageId));
        // The PUBREL is lost with the connection: no PUBCOMP.
        first.stream.destroy();
        const url = (resumeOn === "node-a" ? pair.a : pair.b).urls.tcp as string;
        second = await session(url, clientId);
        const connack = second.packets.find((p) => p.cmd === "connack");
        assert.equal(connack?.cmd === "connack" && connack.sessionPresent, true);
        await second.waitFor("the PUBREL again", (p) => isPubrel(p, delivery.messageId));
        second.send({ cmd: "pubcomp", messageId: delivery.messageId as number });
        await second.roundTrip();
        assert.deepEqual(
          second.received("publish").map((p) => (p as IPublishPacket).payload.toString()),
          [],
          "not sent again as a new message",
        );
      } finally {
        first.stream.destroy();
        second?.stream.destroy();
        await end(publisher);
      }
    });
  }
});

/** A persistent session's raw connection, CONNACK received. */
async function session(url: string, clientId: string): Promise<WireClient> {
  const wire = new WireClient(await rawConnect(Number(new URL(url).port)), 4);
  wire.send({ cmd: "connect", protocolVersion: 4, clientId, keepalive: 60, clean: false });
  await wire.waitFor("CONNACK", (p) => p.cmd === "connack");
  return wire;
}

function isPubrel(packet: Packet, messageId: number | undefined): boolean {
  return packet.cmd === "pubrel" && packet.messageId === messageId;
}
