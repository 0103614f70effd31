import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Client } from "aedes";
import { Engine } from "../../harness/engine-harness.js";
import { connectPacket, mqttString, packet, remainingLength } from "../../harness/raw-socket.js";
import type { WireClient } from "../../harness/wire-client.js";
import { PacketViolationError } from "../../src/engine/packet-guard.js";

/**
 * The packet guard (engine/packet-guard.ts), installed on every client by the node's
 * ConnectionIntake: each violation closes the connection, reported as a PacketViolationError.
 */
describe("engine: packet guard", () => {
  const MAX_PACKET = 1024;
  const MAX_TOPIC = 32;
  let engine: Engine;
  const errors = new Map<Client, Error>();

  before(async () => {
    engine = await Engine.start({
      limits: { maxPacketBytes: MAX_PACKET, maxTopicBytes: MAX_TOPIC },
    });
    // Before CONNECT a client has no id: aedes reports its errors as connectionError.
    const record = (client: Client, error: Error): void => {
      if (!errors.has(client)) errors.set(client, error);
    };
    engine.broker.on("clientError", record);
    engine.broker.on("connectionError", record);
  });
  after(() => engine.close());

  /** A QoS 1 PUBLISH (packet id 1 unless given) from raw parts. */
  function rawPublish(topic: string | Buffer, payload: Buffer, messageId = 1): Buffer {
    const id = Buffer.alloc(2);
    id.writeUInt16BE(messageId);
    return packet(0x32, Buffer.concat([mqttString(topic), id, payload]));
  }

  /** Sends `bytes` on a fresh connection; it must be closed for `violation`. */
  async function refused(name: string, bytes: Buffer, violation: string): Promise<WireClient> {
    const { wire, client } = await engine.connect(name);
    wire.send(bytes);
    await wire.closedWithin();
    const error = errors.get(client);
    assert.ok(error instanceof PacketViolationError, `a packet violation, not ${error}`);
    assert.equal(error.violation, violation);
    assert.equal(wire.received("puback").length, 0);
    return wire;
  }

  it("takes a packet of exactly maxPacketBytes", async () => {
    const { wire } = await engine.connect("guard-fits");
    const fits = rawPublish("g/t", Buffer.alloc(MAX_PACKET - 3 - 2 - 3 - 2));
    assert.equal(fits.length, MAX_PACKET);
    wire.send(fits);
    await wire.waitFor("PUBACK", (p) => p.cmd === "puback");
  });

  it("refuses a larger packet from its fixed header, before its body arrives", async () => {
    await refused(
      "guard-large",
      Buffer.concat([Buffer.from([0x32]), remainingLength(MAX_PACKET)]),
      "packet_too_large",
    );
  });

  it("refuses malformed UTF-8 [MQTT-1.5.3-1]", async () => {
    await refused(
      "guard-utf8",
      rawPublish(Buffer.from([0x67, 0x2f, 0xc3, 0x28]), Buffer.from("x")),
      "invalid_utf8",
    );
  });

  it("refuses U+0000 [MQTT-1.5.3-2]", async () => {
    await refused("guard-null", rawPublish("g/\u0000", Buffer.from("x")), "null_character");
  });

  it("refuses packet identifier 0 [MQTT-2.3.1-1]", async () => {
    await refused("guard-id0", rawPublish("g/t", Buffer.from("x"), 0), "packet_id_zero");
  });

  it("refuses a topic over maxTopicBytes; one of exactly maxTopicBytes passes", async () => {
    const { wire } = await engine.connect("guard-topic-fits");
    wire.send(rawPublish(`g/${"x".repeat(MAX_TOPIC - 2)}`, Buffer.from("x")));
    await wire.waitFor("PUBACK", (p) => p.cmd === "puback");
    await refused(
      "guard-topic",
      rawPublish(`g/${"x".repeat(MAX_TOPIC - 1)}`, Buffer.from("x")),
      "topic_too_long",
    );
  });

  it("answers CONNACK 0x01 to an unsupported protocol level, then closes [MQTT-3.1.2-2]", async () => {
    const { wire, client } = engine.open();
    wire.send(connectPacket("guard-level", { level: 6 }));
    await wire.closedWithin();
    assert.deepEqual([...Buffer.concat(wire.bytes)], [0x20, 0x02, 0x00, 0x01]);
    const error = errors.get(client);
    assert.ok(error instanceof PacketViolationError, `a packet violation, not ${error}`);
    assert.equal(error.violation, "unsupported_protocol_level");
  });
});
