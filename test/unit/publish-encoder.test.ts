import assert from "node:assert/strict";
import { once } from "node:events";
import { Writable } from "node:stream";
import { describe, it } from "node:test";
import mqttPacket from "mqtt-packet";
import { encodePublishesFor } from "../../src/engine/publish-encoder.js";

/** A stream keeping what it is written, and how many writes reached it. */
class Collector extends Writable {
  readonly chunks: Buffer[] = [];
  writes = 0;

  constructor() {
    super({
      write: (chunk: Buffer, _encoding, done) => {
        this.chunks.push(chunk);
        done();
      },
      writev: (chunks, done) => {
        for (const { chunk } of chunks) this.chunks.push(chunk as Buffer);
        done();
      },
    });
    const write = this.write;
    this.write = ((...args: Parameters<Writable["write"]>) => {
      this.writes++;
      return write.apply(this, args);
    }) as Writable["write"];
  }

  get bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

interface Written {
  bytes: Buffer;
  returned: boolean;
  writes: number;
  error: string | undefined;
}

/** What `writeToStream` writes for a packet, through the encoder or through mqtt-packet's own. */
async function written(
  packet: object,
  protocolVersion: number,
  encoded: boolean,
): Promise<Written> {
  const stream = new Collector();
  stream.on("error", () => {});
  if (encoded) encodePublishesFor(stream);
  let returned: boolean;
  try {
    returned = mqttPacket.writeToStream(packet as mqttPacket.Packet, stream, { protocolVersion });
  } catch (error) {
    return { bytes: Buffer.alloc(0), returned: false, writes: 0, error: `thrown ${error}` };
  }
  // mqtt-packet uncorks on the next tick
  await new Promise((resolve) => setImmediate(resolve));
  const error = stream.errored?.message;
  return { bytes: stream.bytes, returned, writes: stream.writes, error };
}

const ALL_PROPERTIES = {
  payloadFormatIndicator: true,
  messageExpiryInterval: 300,
  topicAlias: 3,
  responseTopic: "reply/1",
  correlationData: Buffer.from([1, 2, 3]),
  userProperties: { site: "plant-7", tags: ["a", "bb", "ccc"], ü: "日本" },
  subscriptionIdentifier: [2, 300, 70_000, 3_000_000],
  contentType: "application/json",
};

function nullPrototype(entries: Record<string, string | string[]>): Record<string, unknown> {
  return Object.assign(Object.create(null) as Record<string, unknown>, entries);
}

const PUBLISHES = [
  { topic: "t", qos: 0, payload: Buffer.alloc(0) },
  { topic: "plant/7/pump", qos: 1, messageId: 1, payload: Buffer.alloc(64, 7), properties: {} },
  { topic: "plant/7/pump", qos: 0, payload: Buffer.alloc(64, 7), retain: true, dup: true },
  { topic: "a/b", qos: 2, messageId: 65_535, payload: "text ü", properties: ALL_PROPERTIES },
  {
    topic: "x".repeat(300),
    qos: 0,
    payload: Buffer.alloc(64),
    properties: { userProperties: nullPrototype({ site: "plant-7/line-3" }) },
  },
  { topic: "é/ü/日本", qos: 1, messageId: 9, payload: Buffer.alloc(20_000, 1) },
  { topic: "", qos: 0, payload: Buffer.alloc(3_000, 2), properties: { topicAlias: 9 } },
  { topic: "u", qos: 0, payload: undefined, properties: { subscriptionIdentifier: 5 } },
  { topic: "u", qos: 0, payload: Buffer.alloc(1), properties: { contentType: undefined } },
];

/** Refused or left to mqtt-packet: the same outcome either way (a write, an error, nothing). */
const REFUSED = [
  { topic: "t", qos: 1, payload: Buffer.alloc(1) },
  { topic: "t", qos: 1, messageId: 70_000, payload: Buffer.alloc(1) },
  { topic: "t", qos: 3, payload: Buffer.alloc(1) },
  { topic: Buffer.from("t"), qos: 0, payload: Buffer.alloc(1) },
  { topic: 7, qos: 0, payload: Buffer.alloc(1) },
  { topic: "t", qos: 0, payload: Buffer.alloc(1), properties: { userProperties: {} } },
  { topic: "t", qos: 0, payload: Buffer.alloc(1), properties: { topicAlias: 70_000 } },
  { topic: "t", qos: 0, payload: Buffer.alloc(1), properties: { contentType: 7 } },
  { topic: "t", qos: 0, payload: Buffer.alloc(1), properties: { contentType: null } },
  { topic: "t", qos: 0, payload: Buffer.alloc(1), properties: { unknownProperty: 1 } },
  { topic: "t", qos: 0, payload: Buffer.alloc(1), properties: { subscriptionIdentifier: [] } },
  { topic: "t", qos: 0, payload: Buffer.alloc(1), properties: { userProperties: { a: 1 } } },
];

describe("publish encoder", () => {
  it("writes the bytes mqtt-packet writes, at every protocol level", async () => {
    for (const packet of PUBLISHES) {
      for (const version of [3, 4, 5]) {
        const publish = { cmd: "publish", ...packet };
        const expected = await written(publish, version, false);
        const actual = await written(publish, version, true);
        assert.equal(expected.error, undefined);
        assert.deepEqual(actual, { ...expected, writes: actual.writes });
        // one buffer, and the payload after it when too large to copy
        assert.ok(actual.writes <= 2 && actual.writes < expected.writes, `${actual.writes} writes`);
      }
    }
  });

  it("writes a frozen property list the same each time, and a list changed since as it is now", async () => {
    const publish = (properties: object) => ({
      cmd: "publish",
      topic: "plant/7",
      qos: 0,
      payload: Buffer.from("x"),
      properties,
    });
    const pairs = Object.freeze(Object.assign(Object.create(null), { site: "plant-7" }));
    const frozen = Object.freeze({ contentType: "text/plain", userProperties: pairs });
    for (let i = 0; i < 2; i++) {
      assert.deepEqual(
        (await written(publish(frozen), 5, true)).bytes,
        (await written(publish(frozen), 5, false)).bytes,
      );
    }
    // frozen on top only: its user properties may change, so its bytes are not kept
    const shallow = { site: "plant-7" };
    const top = Object.freeze({ userProperties: shallow });
    await written(publish(top), 5, true);
    shallow.site = "plant-8";
    assert.deepEqual(
      (await written(publish(top), 5, true)).bytes,
      (await written(publish(top), 5, false)).bytes,
    );
    const open = { contentType: "text/plain" };
    await written(publish(open), 5, true);
    open.contentType = "application/json";
    assert.deepEqual(
      (await written(publish(open), 5, true)).bytes,
      (await written(publish(open), 5, false)).bytes,
    );
  });

  it("leaves what it cannot encode to mqtt-packet, with the same outcome", async () => {
    for (const packet of REFUSED) {
      const publish = { cmd: "publish", ...packet };
      const expected = await written(publish, 5, false);
      const actual = await written(publish, 5, true);
      assert.deepEqual(actual, expected, JSON.stringify(packet));
    }
  });

  it("writes a null property list (a stored packet's undefined one) as an empty list", async () => {
    for (const qos of [0, 1]) {
      const base = { cmd: "publish", topic: "t", qos, messageId: 7, payload: Buffer.alloc(1) };
      const actual = await written({ ...base, properties: null }, 5, true);
      assert.equal(actual.error, undefined);
      assert.deepEqual(actual.bytes, (await written(base, 5, false)).bytes);
      // mqtt-packet's own writer throws on it
      assert.match((await written({ ...base, properties: null }, 5, false)).error ?? "", /thrown/);
    }
  });

  it("writes acknowledgements without properties as mqtt-packet does, in one write", async () => {
    for (const cmd of ["puback", "pubrec", "pubrel", "pubcomp"]) {
      for (const messageId of [0, 1, 255, 256, 65_535]) {
        for (const reasonCode of [undefined, 0, 0x10, 0x87, 0x97]) {
          for (const version of [3, 4, 5]) {
            const ack = { cmd, messageId, ...(reasonCode === undefined ? {} : { reasonCode }) };
            const expected = await written(ack, version, false);
            const actual = await written(ack, version, true);
            assert.equal(expected.error, undefined);
            assert.deepEqual(actual, { ...expected, writes: 1 }, JSON.stringify({ ack, version }));
            assert.ok(expected.writes >= 3, `mqtt-packet: ${expected.writes} writes`);
          }
        }
      }
    }
  });

  it("writes acknowledgements with properties or odd fields with mqtt-packet's outcome", async () => {
    const others = [
      { cmd: "puback", messageId: 1, properties: { reasonString: "quota" }, reasonCode: 0x97 },
      { cmd: "puback", messageId: 1, properties: {} },
      { cmd: "pubrel", messageId: 1, dup: true },
      { cmd: "puback" },
      { cmd: "puback", messageId: 70_000 },
      { cmd: "pubrec", messageId: 1, reasonCode: 300 },
      { cmd: "pubcomp", messageId: 1, reasonCode: null },
    ];
    for (const ack of others) {
      for (const version of [4, 5]) {
        const expected = await written(ack, version, false);
        const actual = await written(ack, version, true);
        // the same bytes, error and return value (a reason code ignored below MQTT 5 aside, all
        // go to mqtt-packet)
        assert.deepEqual(
          { ...actual, writes: 0 },
          { ...expected, writes: 0 },
          JSON.stringify({ ack, version }),
        );
      }
    }
  });

  it("leaves other packets and streams not registered to mqtt-packet", async () => {
    const connack = { cmd: "connack", returnCode: 0, sessionPresent: false };
    assert.deepEqual(await written(connack, 4, true), await written(connack, 4, false));
    const stream = new Collector();
    mqttPacket.writeToStream(
      { cmd: "publish", topic: "t", qos: 0, payload: Buffer.alloc(1) } as mqttPacket.Packet,
      stream,
      { protocolVersion: 4 },
    );
    assert.equal(stream.writes, 5);
    stream.end();
    await once(stream, "finish");
  });

  it("keeps mqtt-packet's cacheNumbers switch (MQTT.js sets it)", () => {
    encodePublishesFor(new Collector());
    const writer = mqttPacket.writeToStream as unknown as { cacheNumbers: boolean };
    assert.equal(writer.cacheNumbers, true);
    writer.cacheNumbers = false;
    assert.equal(writer.cacheNumbers, false);
    writer.cacheNumbers = true;
    assert.equal(writer.cacheNumbers, true);
  });
});
