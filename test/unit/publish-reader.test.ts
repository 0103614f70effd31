import assert from "node:assert/strict";
import { describe, it } from "node:test";
import mqttPacket from "mqtt-packet";
import { PacketGuard } from "../../src/engine/packet-guard.js";

const LIMITS = { maxPacketBytes: 4_096, maxTopicBytes: 64 };

interface Parsed {
  /** Each packet with its fields in the order they were set (its shape). */
  packets: Array<{ keys: string[]; packet: mqttPacket.Packet }>;
  errors: string[];
  /** PUBLISHes mqtt-packet's own `_parsePublish` read. */
  slowPublishes: number;
  /** Acknowledgements mqtt-packet's own `_parseConfirmation` read. */
  slowAcknowledgements: number;
}

interface ParserInternals {
  parse(buffer: Buffer): number;
  _parsePublish(): void;
  _parseConfirmation(): unknown;
  _newPacket(): boolean;
  packet: { cmd: string | null };
}

/**
 * What a guarded parser emits for the chunks: with the publish reader (the guard's `parse`), or
 * with mqtt-packet's own `parse` under the same guard (the reference). `hold` makes a read gate
 * of the test's: the PUBLISHes it names (by their order) are held once and the parser resumed
 * with an empty chunk, as ReadGate.resume() does.
 */
function parse(
  chunks: Buffer[],
  options: { version: 4 | 5; reader: boolean; hold?: ReadonlySet<number> },
): Parsed {
  const parser = mqttPacket.parser({ protocolVersion: options.version });
  new PacketGuard(LIMITS).install({ _parser: parser });
  const internals = parser as unknown as ParserInternals;
  if (!options.reader) delete (internals as Partial<ParserInternals>).parse;
  const parsed: Parsed = { packets: [], errors: [], slowPublishes: 0, slowAcknowledgements: 0 };
  const parseConfirmation = internals._parseConfirmation;
  internals._parseConfirmation = function (this: ParserInternals) {
    parsed.slowAcknowledgements++;
    return parseConfirmation.call(this);
  };
  const parsePublish = internals._parsePublish;
  internals._parsePublish = function (this: ParserInternals) {
    parsed.slowPublishes++;
    parsePublish.call(this);
  };
  let publishes = 0;
  let held = false;
  let resume = false;
  const newPacket = internals._newPacket;
  internals._newPacket = function (this: ParserInternals) {
    if (this.packet.cmd === "publish" && !held && options.hold?.has(publishes)) {
      held = true;
      resume = true;
      return false;
    }
    if (this.packet.cmd === "publish") {
      publishes++;
      held = false;
    }
    return newPacket.call(this);
  };
  parser.on("packet", (packet: mqttPacket.Packet) =>
    parsed.packets.push({ keys: Object.keys(packet), packet }),
  );
  parser.on("error", (error: Error) => parsed.errors.push(error.message));
  for (const chunk of chunks) {
    internals.parse(chunk);
    while (resume) {
      resume = false;
      internals.parse(Buffer.alloc(0));
    }
  }
  return parsed;
}

function publish(
  fields: Partial<mqttPacket.IPublishPacket> & { topic: string },
  version: 4 | 5,
): Buffer {
  return mqttPacket.generate(
    { cmd: "publish", qos: 0, dup: false, retain: false, payload: Buffer.alloc(0), ...fields },
    { protocolVersion: version },
  );
}

/** A stream of PUBLISHes of every kind the reader takes or leaves, among other packets. */
function stream(version: 4 | 5): Buffer {
  const v5 = version === 5;
  return Buffer.concat([
    publish({ topic: "plant/a/temp", payload: Buffer.from("21.5") }, version),
    publish({ topic: "plant/a/x", qos: 1, messageId: 7, payload: Buffer.alloc(200, 1) }, version),
    publish({ topic: "p/q", qos: 2, messageId: 65_535, retain: true, dup: true }, version),
    publish({ topic: "empty/payload" }, version),
    mqttPacket.generate({ cmd: "pingreq" }),
    publish({ topic: "température/é", payload: Buffer.from("utf8") }, version),
    publish({ topic: "t", payload: Buffer.alloc(300, 2) }, version),
    mqttPacket.generate(
      { cmd: "subscribe", messageId: 3, subscriptions: [{ topic: "a/#", qos: 1 }] },
      { protocolVersion: version },
    ),
    ...(v5
      ? [
          publish(
            {
              topic: "v5/props",
              qos: 1,
              messageId: 9,
              payload: Buffer.from("p"),
              properties: { contentType: "text/plain", userProperties: { site: "s1" } },
            },
            version,
          ),
          publish({ topic: "", qos: 0, properties: { topicAlias: 3 } }, version),
        ]
      : []),
    mqttPacket.generate({ cmd: "puback", messageId: 5 }, { protocolVersion: version }),
    mqttPacket.generate({ cmd: "pubrec", messageId: 6 }, { protocolVersion: version }),
    mqttPacket.generate({ cmd: "pubrel", messageId: 6 }, { protocolVersion: version }),
    mqttPacket.generate({ cmd: "pubcomp", messageId: 65_535 }, { protocolVersion: version }),
    ...(v5
      ? [
          mqttPacket.generate(
            { cmd: "puback", messageId: 8, reasonCode: 0x10 },
            { protocolVersion: version },
          ),
        ]
      : []),
    publish({ topic: "last/one", qos: 1, messageId: 1, payload: Buffer.from("end") }, version),
  ]);
}

/** `bytes` cut at each of `cuts`. */
function cut(bytes: Buffer, cuts: number[]): Buffer[] {
  const chunks: Buffer[] = [];
  let start = 0;
  for (const at of [...cuts, bytes.length]) {
    chunks.push(bytes.subarray(start, at));
    start = at;
  }
  return chunks;
}

/** The packets as plain data: payloads as arrays of bytes, properties copied. */
function comparable(parsed: Parsed): unknown {
  return parsed.packets.map(({ keys, packet }) => ({
    keys,
    packet: JSON.parse(JSON.stringify(packet)),
  }));
}

describe("publish reader: PUBLISHes read straight from the socket's chunk", () => {
  for (const version of [4, 5] as const) {
    it(`emits what mqtt-packet emits, fields in the same order, wherever the chunks are cut (MQTT ${version === 5 ? "5" : "3.1.1"})`, () => {
      const bytes = stream(version);
      const whole = parse([bytes], { version, reader: false });
      assert.equal(whole.errors.length, 0);
      assert.ok(whole.packets.length >= 10);
      const splits: number[][] = [];
      for (let at = 1; at < bytes.length; at++) splits.push([at]);
      for (let step = 2; step < 40; step += 3) {
        const cuts: number[] = [];
        for (let at = step; at < bytes.length; at += step) cuts.push(at);
        splits.push(cuts);
      }
      // The same cuts for both: mqtt-packet's own reading differs with them (an MQTT 5 list
      // split over two chunks is read without the guard's reader, leaving `properties` unset).
      for (const cuts of [[], ...splits]) {
        const chunks = cut(bytes, cuts);
        const reference = parse(chunks, { version, reader: false });
        assert.equal(reference.packets.length, whole.packets.length);
        assert.deepEqual(
          comparable(parse(chunks, { version, reader: true })),
          comparable(reference),
          `cuts ${cuts.slice(0, 3).join(",")}`,
        );
      }
    });

    it(`keeps the order when a read gate holds PUBLISHes and resumes (MQTT ${version === 5 ? "5" : "3.1.1"})`, () => {
      const bytes = stream(version);
      const hold = new Set([0, 1, 3, 5, 6]);
      for (const cuts of [[], [5], [40, 250], [100, 300, 500]]) {
        const chunks = cut(bytes, cuts);
        const expected = comparable(parse(chunks, { version, reader: false }));
        const reference = parse(chunks, { version, reader: false, hold });
        const read = parse(chunks, { version, reader: true, hold });
        assert.deepEqual(comparable(reference), expected);
        assert.deepEqual(comparable(read), expected, `cuts ${cuts.join(",")}`);
        // A held PUBLISH is emitted as read, not read again by mqtt-packet.
        if (version === 4 && cuts.length === 0) assert.equal(read.slowPublishes, 1);
      }
    });
  }

  it("reads plain PUBLISHes and acknowledgements itself and leaves the others to mqtt-packet", () => {
    const bytes = stream(4);
    const reference = parse([bytes], { version: 4, reader: false });
    const read = parse([bytes], { version: 4, reader: true });
    // Seven PUBLISHes: the one with a non-ASCII topic alone goes to mqtt-packet.
    assert.equal(reference.slowPublishes, 7);
    assert.equal(read.slowPublishes, 1);
    assert.equal(reference.slowAcknowledgements, 4);
    assert.equal(read.slowAcknowledgements, 0);
  });

  it("leaves every violation to the packet guard, which reports it as before", () => {
    const id0 = Buffer.from([0x32, 0x06, 0x00, 0x01, 0x74, 0x00, 0x00, 0x78]);
    const nul = Buffer.from([0x30, 0x05, 0x00, 0x02, 0x74, 0x00, 0x78]);
    const longTopic = publish({ topic: "t".repeat(LIMITS.maxTopicBytes + 1) }, 4);
    const large = publish({ topic: "t", payload: Buffer.alloc(LIMITS.maxPacketBytes) }, 4);
    const qos3 = Buffer.from([0x36, 0x03, 0x00, 0x01, 0x74]);
    const pubackId0 = Buffer.from([0x40, 0x02, 0x00, 0x00]);
    for (const bad of [id0, nul, longTopic, large, qos3, pubackId0]) {
      const bytes = Buffer.concat([publish({ topic: "ok" }, 4), bad, publish({ topic: "x" }, 4)]);
      const reference = parse([bytes], { version: 4, reader: false });
      const read = parse([bytes], { version: 4, reader: true });
      assert.equal(reference.errors.length, 1, `the reference reports ${bad.toString("hex")}`);
      assert.deepEqual(read.errors, reference.errors);
      assert.deepEqual(comparable(read), comparable(reference));
    }
  });
});

describe("publish reader against mqtt-packet on random streams", () => {
  /** A small seeded generator (mulberry32): the same streams on every run. */
  function random(seed: number): () => number {
    let state = seed >>> 0;
    return () => {
      state = (state + 0x6d2b79f5) >>> 0;
      let t = state;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
    };
  }
  const TOPICS = ["a", "plant/1/t", "x/y/z", "é/t", "t".repeat(LIMITS.maxTopicBytes + 1), "$SYS/x"];

  function packetOf(next: () => number, version: 4 | 5): Buffer {
    const kind = Math.floor(next() * 6);
    if (kind === 0) {
      const cmd = (["puback", "pubrec", "pubrel", "pubcomp"] as const)[Math.floor(next() * 4)];
      return mqttPacket.generate(
        { cmd: cmd ?? "puback", messageId: Math.floor(next() * 3) + 1 },
        { protocolVersion: version },
      );
    }
    if (kind === 1) return mqttPacket.generate({ cmd: "pingreq" });
    const qos = Math.floor(next() * 3) as 0 | 1 | 2;
    return publish(
      {
        topic: TOPICS[Math.floor(next() * TOPICS.length)] ?? "a",
        qos,
        ...(qos > 0 ? { messageId: Math.floor(next() * 65_535) + 1 } : {}),
        retain: next() < 0.2,
        dup: qos > 0 && next() < 0.2,
        payload: Buffer.alloc(Math.floor(next() * 600), 7),
        ...(version === 5 && next() < 0.3
          ? { properties: { contentType: "text/plain", messageExpiryInterval: 60 } }
          : {}),
      },
      version,
    );
  }

  /**
   * Up to the first error: what a client's connection sees before it is closed. Whether, not
   * which: a packet the reader leaves to mqtt-packet is parsed alone, so a property list longer
   * than its packet fails there as cut, where mqtt-packet's own loop reads on into the next
   * packet and fails on what it finds there.
   */
  function untilError(parsed: Parsed): unknown {
    return { packets: comparable(parsed), refused: parsed.errors.length > 0 };
  }

  for (const version of [4, 5] as const) {
    it(`emits the same packets and refuses the same streams, packets valid or with a byte changed (MQTT ${version === 5 ? "5" : "3.1.1"})`, () => {
      const next = random(version * 7_919);
      let errors = 0;
      for (let round = 0; round < 400; round++) {
        const packets = Array.from({ length: 1 + Math.floor(next() * 6) }, () =>
          packetOf(next, version),
        );
        const bytes = Buffer.concat(packets);
        // Half the rounds change one byte: a flag, a length, a topic's byte, a property.
        if (round % 2 === 1) bytes[Math.floor(next() * bytes.length)] = Math.floor(next() * 256);
        const cuts = [
          ...new Set(
            Array.from(
              { length: Math.floor(next() * 4) },
              () => 1 + Math.floor(next() * (bytes.length - 1)),
            ),
          ),
        ].sort((x, y) => x - y);
        const chunks = cut(bytes, cuts);
        const reference = parse(chunks, { version, reader: false });
        const read = parse(chunks, { version, reader: true });
        if (reference.errors.length > 0) errors++;
        assert.deepEqual(
          untilError(read),
          untilError(reference),
          `round ${round}: ${bytes.toString("hex").slice(0, 120)} cut at ${cuts.join(",")}`,
        );
      }
      // The changed bytes made the parser refuse some streams: errors were compared too.
      assert.ok(errors > 20, `${errors} streams with an error`);
    });
  }
});
