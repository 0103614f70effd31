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

  /** An MQTT 5 CONNECT (Clean Start, keep-alive 30) with `properties` (identifier, value bytes). */
  function v5Connect(clientId: string, properties: number[], trailing: number[] = []): Buffer {
    return packet(
      0x10,
      Buffer.concat([
        mqttString("MQTT"),
        Buffer.from([5, 0x02, 0, 30]),
        remainingLength(properties.length),
        Buffer.from(properties),
        mqttString(clientId),
        Buffer.from(trailing),
      ]),
    );
  }

  /** An MQTT 5 QoS 1 PUBLISH (packet id 1) with `properties`. */
  function v5Publish(topic: string, properties: number[], payload = "x", flags = 0x32): Buffer {
    return packet(
      flags,
      Buffer.concat([
        mqttString(topic),
        Buffer.from([0, 1]),
        remainingLength(properties.length),
        Buffer.from(properties),
        Buffer.from(payload),
      ]),
    );
  }

  /** An MQTT 5 connection, CONNACKed. */
  async function v5Connection(clientId: string) {
    const connection = engine.open(5);
    connection.wire.send(v5Connect(clientId, []));
    await connection.wire.waitFor("CONNACK", (p) => p.cmd === "connack");
    // aedes counts a client connected once its CONNACK is written: over an in-process pair the
    // CONNACK arrives before that, and a violation then closes without a DISCONNECT.
    await connection.wire.roundTrip();
    return connection;
  }

  /** The violation the broker closed `client` for. */
  function violationOf(client: Client): string {
    const error = errors.get(client);
    assert.ok(error instanceof PacketViolationError, `a packet violation, not ${error}`);
    return error.violation;
  }

  /** A 3.1.1 subscriber of `topic`, to show that a refused PUBLISH reached no one. */
  async function subscriberOf(name: string, topic: string): Promise<WireClient> {
    const { wire } = await engine.connect(name);
    wire.send(
      packet(0x82, Buffer.concat([Buffer.from([0, 1]), mqttString(topic), Buffer.from([1])])),
    );
    await wire.waitFor("SUBACK", (p) => p.cmd === "suback");
    return wire;
  }

  const SESSION_EXPIRY_10 = [0x11, 0, 0, 0, 10];
  const SESSION_EXPIRY_20 = [0x11, 0, 0, 0, 20];

  it("answers a CONNECT with a repeated property CONNACK 0x82 and closes; the broker goes on", async () => {
    // A repeated Session Expiry Interval became an array in aedes' session timer, which threw
    // when the connection closed, and ended the process.
    const { wire, client } = engine.open(5);
    wire.send(v5Connect("guard-twice", [...SESSION_EXPIRY_10, ...SESSION_EXPIRY_20]));
    await wire.closedWithin();
    assert.deepEqual([...Buffer.concat(wire.bytes)], [0x20, 0x03, 0x00, 0x82, 0x00]);
    assert.equal(violationOf(client), "protocol_error");
    await engine.connect("guard-twice-after");
  });

  it("takes an MQTT 5 DISCONNECT of no bytes, or of a reason code alone, as a DISCONNECT", async () => {
    for (const body of [[], [0x04]]) {
      const { wire, client } = await v5Connection(`guard-bye-${body.length}`);
      wire.send(packet(0xe0, Buffer.from(body)));
      await wire.closedWithin();
      assert.equal(errors.get(client), undefined, `DISCONNECT ${JSON.stringify(body)}`);
    }
  });

  it("refuses a DISCONNECT with a repeated Session Expiry Interval with DISCONNECT 0x82", async () => {
    const { wire, client } = engine.open(5);
    wire.send(v5Connect("guard-disconnect", SESSION_EXPIRY_10));
    await wire.waitFor("CONNACK", (p) => p.cmd === "connack");
    await wire.roundTrip();
    wire.send(packet(0xe0, Buffer.from([0x00, 10, ...SESSION_EXPIRY_10, ...SESSION_EXPIRY_20])));
    await wire.closedWithin();
    assert.deepEqual(
      [...(wire.bytes.at(-1) as Buffer)],
      [0xe0, 0x02, 0x82, 0x00],
      "DISCONNECT 0x82 protocol error",
    );
    assert.equal(violationOf(client), "protocol_error");
    await engine.connect("guard-disconnect-after");
  });

  for (const [what, properties] of [
    ["a Subscription Identifier, which only a server sends in a PUBLISH", [0x0b, 7]],
    ["a repeated Content Type", [0x03, 0, 1, 0x61, 0x03, 0, 1, 0x62]],
    ["a repeated falsy Payload Format Indicator", [0x01, 0, 0x01, 0]],
    ["a Payload Format Indicator of 2", [0x01, 2]],
    ["a Session Expiry Interval, a CONNECT's property", SESSION_EXPIRY_10],
  ] as const) {
    it(`refuses a PUBLISH with ${what}: DISCONNECT 0x82, delivered to no one`, async () => {
      const subscriber = await subscriberOf(`guard-sub-${what.length}`, "guard/props");
      const { wire, client } = await v5Connection(`guard-props-${what.length}`);
      wire.send(v5Publish("guard/props", [...properties]));
      await wire.closedWithin();
      assert.deepEqual([...(wire.bytes.at(-1) as Buffer)], [0xe0, 0x02, 0x82, 0x00]);
      assert.equal(violationOf(client), "protocol_error");
      await subscriber.roundTrip();
      assert.deepEqual(subscriber.received("publish"), []);
    });
  }

  it("takes a PUBLISH with allowed properties, User Properties repeated, and delivers it", async () => {
    const subscriber = await subscriberOf("guard-sub-allowed", "guard/allowed");
    const { wire } = await v5Connection("guard-allowed");
    const pair = [0x26, 0, 1, 0x6b, 0, 1, 0x76];
    wire.send(v5Publish("guard/allowed", [0x01, 1, 0x03, 0, 1, 0x74, ...pair, ...pair], "ok"));
    await wire.waitFor("PUBACK", (p) => p.cmd === "puback");
    await subscriber.waitFor("PUBLISH", (p) => p.cmd === "publish");
    assert.deepEqual(subscriber.publishedPayloads(), ["ok"]);
  });

  it("refuses a PUBLISH cut within its packet identifier, the next packet's bytes not taken for it", async () => {
    const subscriber = await subscriberOf("guard-sub-cut", "ab");
    // Remaining length 5: the topic "ab" and one byte of the identifier; a PINGREQ follows.
    await refused("guard-cut-id", Buffer.from("32050002616200c000", "hex"), "malformed");
    await subscriber.roundTrip();
    assert.deepEqual(subscriber.received("publish"), []);
  });

  it("refuses DUP on a QoS 0 PUBLISH [MQTT-3.3.1-2]", async () => {
    await refused(
      "guard-dup0",
      packet(0x38, Buffer.concat([mqttString("g/t"), Buffer.from("x")])),
      "malformed",
    );
  });

  it("refuses an MQTT 3.1.1 CONNECT with a password and no user name [MQTT-3.1.2-22]", async () => {
    const { wire, client } = engine.open();
    const body = Buffer.concat([
      mqttString("MQTT"),
      Buffer.from([4, 0x42, 0, 30]),
      mqttString("guard-password"),
      mqttString("secret"),
    ]);
    wire.send(packet(0x10, body));
    await wire.closedWithin();
    assert.equal(wire.received("connack").length, 0);
    assert.equal(violationOf(client), "protocol_error");
  });

  it("refuses bytes after a CONNECT's last field (MQTT 5: CONNACK 0x81)", async () => {
    const { wire, client } = engine.open(5);
    wire.send(v5Connect("guard-trailing", [], [0x00, 0x00]));
    await wire.closedWithin();
    assert.deepEqual([...Buffer.concat(wire.bytes)], [0x20, 0x03, 0x00, 0x81, 0x00]);
    assert.equal(violationOf(client), "malformed");
  });
});
