import assert from "node:assert/strict";
import { describe, it } from "node:test";
import mqttPacket from "mqtt-packet";
import { PacketGuard, PacketViolationError } from "../../src/engine/packet-guard.js";

interface Parsed {
  packets: mqttPacket.Packet[];
  errors: Error[];
}

/** What a v5 parser emits for the chunks, with the packet guard installed or not. */
function parse(chunks: Buffer[], guarded: boolean): Parsed {
  const parser = mqttPacket.parser({ protocolVersion: 5 });
  if (guarded) {
    new PacketGuard({ maxPacketBytes: 1_000_000, maxTopicBytes: 1_000 }).install({
      _parser: parser,
    });
  }
  const parsed: Parsed = { packets: [], errors: [] };
  parser.on("packet", (packet) => parsed.packets.push(withNullPrototypePairs(packet)));
  parser.on("error", (error) => parsed.errors.push(error));
  for (const chunk of chunks) parser.parse(chunk);
  return parsed;
}

/**
 * The packet with its user properties in a null-prototype object, as mqtt-packet makes them:
 * the reader's differ only in their (empty, frozen) prototype. A copy: the reader's list may be
 * frozen (shared).
 */
function withNullPrototypePairs(packet: mqttPacket.Packet): mqttPacket.Packet {
  const publishPacket = packet as mqttPacket.IPublishPacket;
  const properties = publishPacket.properties;
  const pairs = properties?.userProperties;
  if (properties === undefined || pairs === undefined) return packet;
  if (Object.getPrototypeOf(pairs) !== null) {
    publishPacket.properties = {
      ...properties,
      userProperties: Object.assign(Object.create(null), pairs) as typeof pairs,
    };
  }
  return packet;
}

/**
 * A guarded parse with every PUBLISH's own `properties` checked (the reader gives each one it
 * reads, so that all have one shape; a list split across chunks is mqtt-packet's to read) and
 * an undefined one then removed, as mqtt-packet leaves it out.
 */
function withPropertiesAlways(parsed: Parsed, whole = true): Parsed {
  for (const packet of parsed.packets) {
    if (whole) assert.ok(Object.hasOwn(packet, "properties"), "a v5 PUBLISH's own properties");
    const fields = packet as { properties?: unknown };
    if (fields.properties === undefined) delete fields.properties;
  }
  return parsed;
}

/** The properties objects a guarded v5 parser hands on for the chunks, as read. */
function readProperties(chunks: Buffer[]): Array<Record<string, unknown> | undefined> {
  const parser = mqttPacket.parser({ protocolVersion: 5 });
  new PacketGuard({ maxPacketBytes: 1_000_000, maxTopicBytes: 1_000 }).install({
    _parser: parser,
  });
  const read: Array<Record<string, unknown> | undefined> = [];
  parser.on("packet", (packet) =>
    read.push((packet as mqttPacket.IPublishPacket).properties as Record<string, unknown>),
  );
  for (const chunk of chunks) parser.parse(chunk);
  return read;
}

function publish(properties: object | undefined, qos: 0 | 1 = 1): Buffer {
  return mqttPacket.generate(
    {
      cmd: "publish",
      topic: "plant/7/pump",
      qos,
      messageId: qos > 0 ? 7 : undefined,
      payload: Buffer.from("payload"),
      retain: false,
      dup: false,
      properties,
    } as mqttPacket.IPublishPacket,
    { protocolVersion: 5 },
  );
}

/** A PUBLISH whose properties are the given bytes, as a client might send them. */
function rawPublish(properties: Buffer): Buffer {
  const body = Buffer.concat([
    Buffer.from([0, 1, 0x74]),
    Buffer.from([properties.length]),
    properties,
    Buffer.from("x"),
  ]);
  return Buffer.concat([Buffer.from([0x30, body.length]), body]);
}

const PROPERTIES = [
  undefined,
  { userProperties: { site: "plant-7/line-3" } },
  {
    payloadFormatIndicator: true,
    messageExpiryInterval: 300,
    topicAlias: 3,
    responseTopic: "reply/ü",
    correlationData: Buffer.from([0xff, 0, 1]),
    userProperties: { site: "plant-7", tags: ["a", "bb", "ccc"], 日本: "ü", empty: "" },
    contentType: "application/json",
  },
  { payloadFormatIndicator: false, userProperties: { a: "1" } },
];

describe("publish properties", () => {
  it("are read as mqtt-packet reads them, in one chunk or split", () => {
    for (const properties of PROPERTIES) {
      for (const qos of [0, 1] as const) {
        const bytes = publish(properties, qos);
        const expected = parse([bytes], false);
        assert.equal(expected.errors.length, 0);
        assert.deepEqual(withPropertiesAlways(parse([bytes], true)), expected);
        const split = parse([bytes.subarray(0, 12), bytes.subarray(12)], true);
        assert.deepEqual(withPropertiesAlways(split, false), expected);
        // several packets in one chunk
        const twice = parse([Buffer.concat([bytes, bytes])], true);
        assert.deepEqual(withPropertiesAlways(twice).packets, [
          ...expected.packets,
          ...expected.packets,
        ]);
      }
    }
  });

  it("read alike twice in a row are one frozen object, unless aedes rewrites one of them", () => {
    const tagged = { userProperties: { site: "plant-7/line-3", tags: ["a", "b"] } };
    const other = { userProperties: { site: "plant-8" }, contentType: "text/plain" };
    const [first, second, third, fourth] = readProperties(
      [tagged, tagged, other, tagged].map((properties) => publish(properties)),
    );
    assert.equal(first, second);
    assert.notEqual(third, second);
    assert.notEqual(fourth, third);
    assert.deepEqual(
      { ...fourth, userProperties: { ...(fourth?.userProperties as object) } },
      tagged,
    );
    assert.deepEqual({ ...third, userProperties: { ...(third?.userProperties as object) } }, other);
    for (const read of [first, third]) {
      const pairs = read?.userProperties as Record<string, unknown>;
      assert.ok(Object.isFrozen(read) && Object.isFrozen(pairs));
    }
    assert.ok(Object.isFrozen((first?.userProperties as { tags: string[] }).tags));
    // aedes sets a Topic Alias to undefined and a queued message's expiry: never shared
    for (const rewritten of [
      { topicAlias: 3, userProperties: { site: "plant-7" } },
      { messageExpiryInterval: 60 },
    ]) {
      const [one, two] = readProperties([publish(rewritten), publish(rewritten)]);
      assert.notEqual(one, two);
      assert.ok(!Object.isFrozen(one) && !Object.isFrozen(two));
    }
  });

  it("keep mqtt-packet's reading of repeated user properties, and refuse any other repeated", () => {
    // user property a="" then a="b": the empty value is replaced
    const users = rawPublish(Buffer.from([0x26, 0, 1, 0x61, 0, 0, 0x26, 0, 1, 0x61, 0, 1, 0x62]));
    assert.deepEqual(parse([users], true), parse([users], false));
    for (const properties of [
      // payloadFormatIndicator 0 twice (mqtt-packet replaces a falsy value), then 1
      Buffer.from([0x01, 0, 0x01, 0, 0x01, 1]),
      // topicAlias twice (mqtt-packet: an array)
      Buffer.from([0x23, 0, 1, 0x23, 0, 2]),
    ]) {
      const { errors, packets } = parse([rawPublish(properties)], true);
      assert.equal(packets.length, 0);
      assert.ok(errors[0] instanceof PacketViolationError);
      assert.equal(errors[0].violation, "protocol_error");
    }
  });

  it("leave malformed properties to mqtt-packet and the guard", () => {
    // an unknown property, a zero code
    for (const properties of [Buffer.from([0x7f, 0]), Buffer.from([0x00, 0])]) {
      const bytes = rawPublish(properties);
      const guarded = parse([bytes], true);
      const plain = parse([bytes], false);
      assert.deepEqual(
        guarded.errors.map((error) => error.message),
        plain.errors.map((error) => error.message),
      );
      assert.deepEqual(guarded.packets, plain.packets);
    }
    // a string running past the properties
    const cut = parse([rawPublish(Buffer.from([0x03, 0, 9, 0x61]))], true);
    assert.equal(cut.packets.length, 0);
    assert.ok(cut.errors[0] instanceof PacketViolationError);
    assert.equal(cut.errors[0].violation, "malformed");
    // a user property that is not UTF-8, and one with U+0000
    for (const [value, violation] of [
      [Buffer.from([0xc3, 0x28]), "invalid_utf8"],
      [Buffer.from([0x61, 0x00]), "null_character"],
    ] as const) {
      const properties = Buffer.concat([Buffer.from([0x26, 0, 1, 0x61, 0, value.length]), value]);
      const { errors, packets } = parse([rawPublish(properties)], true);
      assert.equal(packets.length, 0);
      assert.ok(errors[0] instanceof PacketViolationError);
      assert.equal(errors[0].violation, violation);
    }
  });

  it("give user properties nothing inherited, so that no name reaches Object.prototype", () => {
    const bytes = rawPublish(
      Buffer.from([
        0x26,
        0,
        9,
        ...Buffer.from("__proto__"),
        0,
        1,
        0x78,
        0x26,
        0,
        8,
        ...Buffer.from("toString"),
        0,
        1,
        0x79,
      ]),
    );
    const [packet] = parse([bytes], true).packets as mqttPacket.IPublishPacket[];
    const pairs = packet?.properties?.userProperties as Record<string, unknown>;
    assert.deepEqual(Object.getOwnPropertyNames(pairs), ["__proto__", "toString"]);
    assert.equal(pairs.__proto__, "x");
    assert.equal(pairs.toString, "y");
    // read before the copy made for comparison: the reader's own object
    const parser = mqttPacket.parser({ protocolVersion: 5 });
    new PacketGuard({ maxPacketBytes: 1_000, maxTopicBytes: 100 }).install({ _parser: parser });
    let own: Record<string, unknown> | undefined;
    parser.on("packet", (read) => {
      own = (read as mqttPacket.IPublishPacket).properties?.userProperties as Record<
        string,
        unknown
      >;
    });
    parser.parse(bytes);
    const prototype = Object.getPrototypeOf(own) as object;
    assert.notEqual(prototype, Object.prototype);
    assert.equal(Object.getPrototypeOf(prototype), null);
    assert.deepEqual(Reflect.ownKeys(prototype), []);
    assert.ok(Object.isFrozen(prototype));
    assert.equal("hasOwnProperty" in (own as object), false);
  });
});
