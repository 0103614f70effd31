import assert from "node:assert/strict";
import { describe, it } from "node:test";
import msgpack from "msgpack-lite";
import { Packr, Unpackr } from "msgpackr";
import {
  COMPACT_HEAD,
  decodeEnvelope,
  decodeMessage,
  decodeMessageAt,
  ENVELOPE_HEAD,
  echoCheck,
  encodeEnvelope,
  encodeNumberedEnvelope,
  envelopeIdOf,
  MalformedEnvelopeError,
} from "../../src/engine/envelope.js";

/**
 * The envelope is mqemitter-redis' own: what this node writes (msgpackr), a node without
 * local-first reads (msgpack-lite), and the other way round, during a rolling upgrade; and it
 * starts as the echo check expects.
 */
const message = {
  cmd: "publish",
  brokerId: "3f2a9c1d-5b6e-4f70-8a91-abcdef012345",
  brokerCounter: 123_456,
  topic: "plant/pump/7/telemetry",
  payload: Buffer.from("21.5 C"),
  qos: 1,
  retain: false,
  dup: false,
  messageId: undefined,
};

const V5_PROPERTIES = {
  payloadFormatIndicator: true,
  messageExpiryInterval: 300,
  contentType: "application/json",
  responseTopic: "reply/1",
  correlationData: Buffer.from([0xff, 0, 1]),
  userProperties: { site: "plant-7/line-3", tags: ["a", "bb"] },
  subscriptionIdentifier: [2, 70_000],
};
const INHERITS_NOTHING: object = Object.freeze(Object.create(null));

function pairs(prototype: object | null): Record<string, string | string[]> {
  return Object.assign(Object.create(prototype), { site: "plant-7", ü: ["x", "y"] });
}

/** The message above with some fields changed or added. */
function variant(fields: object): typeof message {
  return { ...message, ...fields };
}

describe("local-first envelope", () => {
  it("msgpack-lite reads what this node writes, undefined as null as it writes it", () => {
    const read = msgpack.decode(encodeEnvelope("AbCdEfGh:1", message)) as {
      msg: { payload: unknown; messageId: unknown };
    };
    assert.deepEqual(read, msgpack.decode(msgpack.encode({ id: "AbCdEfGh:1", msg: message })));
    assert.ok(Buffer.isBuffer(read.msg.payload));
    assert.equal(read.msg.messageId, null);
  });

  it("reads what mqemitter-redis writes", () => {
    const read = decodeEnvelope(msgpack.encode({ id: "other:7", msg: message })) as unknown as {
      id: string;
      msg: { payload: Uint8Array };
    };
    assert.equal(read.id, "other:7");
    assert.deepEqual(
      { ...read.msg, payload: Buffer.from(read.msg.payload) },
      {
        ...message,
        messageId: null,
      },
    );
  });

  it("starts with the head the echo check compares", () => {
    assert.deepEqual(encodeEnvelope("AbCdEfGh:1", message).subarray(0, 4), ENVELOPE_HEAD);
  });

  it("writes msgpackr's bytes for every field an aedes packet may carry", () => {
    const packr = new Packr({
      useRecords: false,
      encodeUndefinedAsNil: true,
      moreTypes: false,
      variableMapSize: true,
    });
    const strings = ["", "a", "x".repeat(31), "x".repeat(32), "y".repeat(255), "z".repeat(256)];
    const wide = ["Grüße", "温度/".repeat(20), "🌡".repeat(40), "\ud800 lone", "é".repeat(16)];
    const numbers = [0, 1, 127, 128, 255, 256, 65_535, 65_536, 2 ** 32 - 1];
    const payloads = [0, 1, 64, 255, 256, 65_535, 65_536].map((n) => Buffer.alloc(n, n % 251));
    const variants: Array<Record<string, unknown>> = [
      ...[...strings, ...wide].map((topic) => ({ ...message, topic })),
      ...numbers.map((brokerCounter) => ({ ...message, brokerCounter })),
      ...payloads.map((payload) => ({ ...message, payload })),
      { ...message, retain: true, dup: true, messageId: 7, clientId: "c-1", nl: false },
      Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, i])),
      // MQTT 5 properties, user properties as mqtt-packet and as the packet guard make them
      { ...message, properties: { userProperties: { a: ["1", "2"] }, contentType: "text" } },
      { ...message, properties: V5_PROPERTIES },
      { ...message, properties: { ...V5_PROPERTIES, userProperties: pairs(null) } },
      { ...message, properties: { ...V5_PROPERTIES, userProperties: pairs(INHERITS_NOTHING) } },
      {
        ...message,
        properties: { subscriptionIdentifier: Array.from({ length: 17 }, (_, i) => i) },
      },
      // msgpackr's own path: a negative or a fractional number, a class, deeper nesting
      { ...message, properties: { messageExpiryInterval: -1 } },
      { ...message, properties: { when: new Date(0) } },
      { ...message, properties: { a: { b: { c: { d: 1 } } } } },
      { ...message, brokerCounter: -1 },
      { ...message, brokerCounter: 1.5 },
      { ...message, brokerCounter: 2 ** 32 },
    ];
    for (const msg of variants) {
      const written = encodeEnvelope("AbCdEfGh:1z", msg as unknown as typeof message);
      assert.deepEqual(written, packr.pack({ id: "AbCdEfGh:1z", msg }), JSON.stringify(msg));
    }
    // a property list's undefined member is left out (msgpackr would write nil)
    const aliased = { ...message, properties: { topicAlias: undefined, responseTopic: "é/日本" } };
    assert.deepEqual(
      encodeEnvelope("AbCdEfGh:1z", aliased as unknown as typeof message),
      packr.pack({
        id: "AbCdEfGh:1z",
        msg: { ...message, properties: { responseTopic: "é/日本" } },
      }),
    );
  });

  it("writes a numbered id as the id string it stands for, at every digit count", () => {
    const sequences = [0, 1, 35, 36, 1_295, 1_296, 2 ** 31, 36 ** 6, 2 ** 53 - 1];
    const prefixes = ["AbCdEfGh:", "", "é:", "p".repeat(25), "q".repeat(31)];
    for (const prefix of prefixes) {
      for (const sequence of sequences) {
        const id = prefix + sequence.toString(36);
        assert.deepEqual(
          encodeNumberedEnvelope(prefix, sequence, message),
          encodeEnvelope(id, message),
          id,
        );
        assert.equal(decodeEnvelope(encodeNumberedEnvelope(prefix, sequence, message)).id, id);
      }
    }
  });

  it("writes a frozen property list the same each time, and a list changed since as it is now", () => {
    const packr = new Packr({
      useRecords: false,
      encodeUndefinedAsNil: true,
      moreTypes: false,
      variableMapSize: true,
    });
    const check = (properties: object): void => {
      const msg = { ...message, properties } as typeof message;
      assert.deepEqual(encodeEnvelope("AbCdEfGh:2", msg), packr.pack({ id: "AbCdEfGh:2", msg }));
    };
    const frozen = Object.freeze({
      contentType: "text/plain",
      userProperties: Object.freeze(
        Object.assign(Object.create(INHERITS_NOTHING), {
          site: "plant-7",
          tags: Object.freeze(["a", "b"]),
        }),
      ),
    });
    check(frozen);
    check(frozen);
    // frozen on top only: its user properties may change, so its bytes are not kept
    const shallow: Record<string, string> = { site: "plant-7" };
    const top = Object.freeze({ userProperties: shallow });
    check(top);
    shallow.site = "plant-8";
    check(top);
    check(frozen);
  });

  it("leaves out undefined properties, as if absent (an MQTT 5 PUBLISH with an empty list)", () => {
    // first, as aedes' Packet copies it, and last
    const first = { properties: undefined, ...message } as typeof message;
    const last = { ...message, properties: undefined } as typeof message;
    // also when msgpackr writes the message (a counter past 32 bits)
    const big = { ...last, brokerCounter: 2 ** 40 } as typeof message;
    assert.equal(
      Object.hasOwn(decodeEnvelope(encodeEnvelope("a:1", big)).msg, "properties"),
      false,
    );
    for (const empty of [first, last]) {
      const written = encodeEnvelope("AbCdEfGh:1z", empty);
      assert.deepEqual(written, encodeEnvelope("AbCdEfGh:1z", message));
      assert.equal(Object.hasOwn(decodeEnvelope(written).msg, "properties"), false);
    }
    // other undefined fields stay nil, as msgpack-lite writes them
    const withId = { ...message, messageId: undefined };
    assert.equal(Object.hasOwn(decodeEnvelope(encodeEnvelope("a", withId)).msg, "messageId"), true);
  });

  it("leaves out a property list's undefined member (a resolved Topic Alias), in every format", () => {
    // aedes sets a resolved Topic Alias to undefined: read back as null, a shared subscription's
    // member was sent it as an alias, and got neither that message nor any after it
    const aliased = {
      ...message,
      properties: { topicAlias: undefined, contentType: "text/plain" },
    };
    const written = [
      encodeEnvelope("n:1", aliased as typeof message, "compact"),
      encodeEnvelope("n:1", aliased as typeof message, "msgpack"),
      // msgpackr's writing (a counter past 32 bits in the msgpack format)
      encodeEnvelope("n:1", { ...aliased, brokerCounter: 2 ** 40 } as typeof message, "msgpack"),
    ];
    assert.deepEqual(
      written.map((bytes) => bytes[0]),
      [COMPACT_HEAD[0], ENVELOPE_HEAD[0], ENVELOPE_HEAD[0]],
      "one of each writer",
    );
    for (const bytes of written) {
      const { properties } = decodeEnvelope(bytes).msg as unknown as { properties: object };
      assert.deepEqual({ ...properties }, { contentType: "text/plain" });
      assert.equal(Object.hasOwn(properties, "topicAlias"), false);
    }
  });

  it("writes a user property named toJSON or constructor as any other", () => {
    const userProperties = Object.assign(pairs(null), { toJSON: "x", constructor: "y" });
    const msg = { ...message, properties: { userProperties } };
    const read = decodeEnvelope(encodeEnvelope("AbCdEfGh:1", msg)) as unknown as {
      msg: { properties: { userProperties: object } };
    };
    assert.deepEqual(
      { ...read.msg.properties.userProperties },
      { site: "plant-7", ü: ["x", "y"], toJSON: "x", constructor: "y" },
    );
  });

  it("reads every envelope as msgpackr does, its own reader or msgpackr's", () => {
    const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });
    const packr = new Packr({ useRecords: false, encodeUndefinedAsNil: true });
    const long = "t/".repeat(200);
    const cases: Array<[string, Buffer]> = [
      ["3.1.1", encodeEnvelope("AbCdEfGh:1", message)],
      ["MQTT 5", encodeEnvelope("AbCdEfGh:2", variant({ properties: V5_PROPERTIES }))],
      ["empty payload", encodeEnvelope("a:1", variant({ payload: Buffer.alloc(0) }))],
      ["bin16", encodeEnvelope("a:1", variant({ payload: Buffer.alloc(300, 1) }))],
      ["bin32", encodeEnvelope("a:1", variant({ payload: Buffer.alloc(70_000, 2) }))],
      ["str8 topic", encodeEnvelope("a:1", variant({ topic: "x".repeat(40) }))],
      ["str16 topic", encodeEnvelope("a:1", variant({ topic: long }))],
      ["non-ASCII", encodeEnvelope("a:1", variant({ topic: "Pumpe/Zulauf/Ü/☃" }))],
      ...[0, 127, 128, 255, 256, 65_535, 65_536, 2 ** 32 - 1].map((n): [string, Buffer] => [
        `counter ${n}`,
        encodeEnvelope("a:1", variant({ brokerCounter: n })),
      ]),
      ["negative (msgpackr's)", packr.pack({ id: "a:1", msg: variant({ brokerCounter: -5 }) })],
      ["float (msgpackr's)", packr.pack({ id: "a:1", msg: variant({ brokerCounter: 1.5 }) })],
      [
        "nested deeper than properties",
        packr.pack({ id: "a:1", msg: { topic: "t", a: { b: { c: { d: {} } } } } }),
      ],
      ["msgpack-lite", msgpack.encode({ id: "other:7", msg: message })],
    ];
    cases.push(["str8 id", encodeEnvelope(`node-${"x".repeat(40)}:1`, message)]);
    for (const [name, bytes] of cases) {
      const expected = unpackr.unpack(bytes) as { id: string; msg: object };
      assert.deepEqual(decodeEnvelope(bytes), expected, name);
      assert.deepEqual(decodeMessage(bytes), expected.msg, `${name}: the message alone`);
      assert.equal(envelopeIdOf(bytes), expected.id, `${name}: the id alone`);
      // within a socket read: other bytes before it, and after it more msgpack of a map
      const before = Buffer.from("*3\r\n$7\r\nmessage\r\n");
      const read = Buffer.concat([before, bytes, Buffer.from([0xa1, 0x78, 0x01]), bytes]);
      const start = before.length;
      assert.deepEqual(
        decodeMessageAt(read, start, start + bytes.length),
        expected.msg,
        `${name}: read in place`,
      );
    }
    // the same short strings twice, and others in between (the reader's cache of them)
    for (const topic of ["a/b", "b/a", "a/b", "c/d", "a/b"]) {
      const read = decodeEnvelope(encodeEnvelope("a:1", variant({ topic }))).msg;
      assert.equal(read.topic, topic);
    }
  });

  it("reads string values it read before as the same strings, and others as themselves", () => {
    // alike in length and last bytes (where the reader looks first), different before them
    const topics = [
      "plant/a/1234",
      "plant/b/1234",
      "plant/a/1234",
      "Pflanz/ü/1234",
      "x".repeat(64),
    ];
    const first = new Map<string, string>();
    for (let round = 0; round < 3; round++) {
      for (const topic of topics) {
        const read = decodeEnvelope(encodeEnvelope("a:1", variant({ topic, clientId: topic }))).msg;
        assert.equal(read.topic, topic);
        assert.equal((read as unknown as { clientId: string }).clientId, topic);
        first.set(topic, first.get(topic) ?? read.topic);
      }
    }
    assert.deepEqual([...first.keys()], [...new Set(topics)]);
    // more values than the reader keeps, alike but for one level, twice over
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 3_000; i += 7) {
        const topic = `site/pump/${i}/temp`;
        const read = decodeEnvelope(
          encodeEnvelope("a:1", variant({ topic, clientId: `plc-${i}` })),
        );
        assert.equal(read.msg.topic, topic);
        assert.equal((read.msg as unknown as { clientId: string }).clientId, `plc-${i}`);
      }
    }
    const bytes = Buffer.from(encodeEnvelope("a:1", variant({ brokerId: "b".repeat(36) })));
    const one = decodeEnvelope(bytes).msg as unknown as { brokerId: string; topic: string };
    bytes[bytes.indexOf("b".repeat(36)) + 3] = 0x63;
    const two = decodeEnvelope(bytes).msg as unknown as { brokerId: string; topic: string };
    assert.equal(one.brokerId, "b".repeat(36));
    assert.equal(two.brokerId, `bbbc${"b".repeat(32)}`, "one byte changed, not the kept string");
    // any byte of a kept value and of a field name, each read once more after it changed
    const base = Buffer.from(encodeEnvelope("a:1", variant({ brokerId: "b".repeat(35) })));
    const at = base.indexOf("b".repeat(35));
    const name = base.indexOf("brokerCounter");
    for (const [index, label] of [
      ...Array.from({ length: 35 }, (_, i): [number, string] => [at + i, `brokerId byte ${i}`]),
      ...Array.from({ length: 13 }, (_, i): [number, string] => [name + i, `name byte ${i}`]),
    ]) {
      decodeEnvelope(base);
      const changed = Buffer.from(base);
      changed[index] = 0x63;
      assert.deepEqual(
        decodeEnvelope(changed),
        new Unpackr({ useRecords: false, mapsAsObjects: true }).unpack(changed),
        label,
      );
    }
  });

  it("reads each field of a message in its order, whichever shape comes after which", () => {
    const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });
    const { messageId: _, ...qos0 } = message;
    const shapes: object[] = [
      message,
      qos0,
      { clientId: "pub-1", ...message },
      { clientId: "pub-1", ...qos0 },
      { ...message, clientId: "pub-1" },
      { ...qos0, clientId: "pub-1" },
      { ...message, clientId: "pub-1", extra: 1 },
      { clientId: "pub-1", properties: V5_PROPERTIES, ...message },
      { ...message, cmd: undefined },
      { topic: "t", cmd: "publish" },
      { clientId: "pub-1", cmd: "publish", brokerId: "b", brokerCounter: 1, topic: "t", qos: 1 },
    ];
    for (let round = 0; round < 3; round++) {
      for (const [index, shape] of shapes.entries()) {
        const bytes = encodeEnvelope("a:1", shape as typeof message);
        const read = decodeEnvelope(bytes).msg;
        const expected = (unpackr.unpack(bytes) as { msg: object }).msg;
        assert.deepEqual(read, expected, `shape ${index}`);
        assert.deepEqual(Object.keys(read), Object.keys(expected), `shape ${index}: key order`);
      }
    }
  });

  it("reads a __proto__ field as data, never as the object's prototype", () => {
    const bytes = Buffer.from(
      new Packr({ useRecords: false }).pack({
        id: "a:1",
        msg: JSON.parse('{"topic":"t","__proto__":{"polluted":1}}'),
      }),
    );
    const read = decodeEnvelope(bytes).msg as unknown as Record<string, unknown>;
    assert.equal(Object.getPrototypeOf(read), Object.prototype);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });

  it("refuses a cut envelope or one with bytes after it, as msgpackr does, also in place", () => {
    const whole = Buffer.from(encodeEnvelope("AbCdEfGh:1", message));
    const twice = Buffer.concat([whole, whole]);
    for (const cut of [whole.length - 1, whole.length - 10, 12]) {
      assert.throws(() => decodeEnvelope(Buffer.from(whole.subarray(0, cut))), `cut at ${cut}`);
      // the bytes after the cut are the rest of a valid envelope: none of them may be read
      const read = Buffer.concat([whole.subarray(0, cut), whole.subarray(cut), whole]);
      assert.throws(() => decodeMessageAt(read, 0, cut), `cut at ${cut}, in place`);
      assert.deepEqual(decodeMessageAt(twice, whole.length, twice.length), decodeMessage(whole));
    }
    // and one with a byte too many
    const longer = Buffer.concat([whole, Buffer.from([0x01])]);
    assert.throws(() => decodeEnvelope(longer), /end of buffer not reached/);
    assert.throws(
      () => decodeMessageAt(Buffer.concat([longer, whole]), 0, longer.length),
      /end of buffer not reached/,
    );
  });

  it("keeps each envelope's bytes while later ones are written (slabs are never reused)", () => {
    const first = encodeEnvelope("AbCdEfGh:1", message);
    const copy = Buffer.from(first);
    for (let i = 0; i < 2_000; i++) encodeEnvelope(`AbCdEfGh:${i}`, message);
    assert.deepEqual(first, copy);
  });
});

describe("compact envelope", () => {
  const compact = (id: string, msg: object): Buffer =>
    encodeEnvelope(id, msg as typeof message, "compact");
  const { messageId: _, ...qos0 } = message;
  const wide = ["Grüße", "温度/".repeat(20), "🌡".repeat(40), "\ud800 lone", "é".repeat(16)];
  /** Messages of the shapes aedes emits, each as the compact envelope carries it. */
  const carried: object[] = [
    message,
    qos0,
    { clientId: "pub-1", ...message },
    { ...message, clientId: "pub-1" },
    { ...qos0, clientId: "pub-1" },
    { ...message, messageId: 7, qos: 2, retain: true, dup: true },
    { ...message, messageId: 65_535 },
    { ...message, messageId: null },
    { ...message, clientId: "" },
    { ...message, clientId: "ü-ü" },
    { ...message, clientId: "c".repeat(300) },
    { properties: undefined, ...message },
    { properties: V5_PROPERTIES, ...message, clientId: "pub-1" },
    { ...message, properties: { ...V5_PROPERTIES, userProperties: pairs(null) } },
    { ...message, properties: { ...V5_PROPERTIES, userProperties: pairs(INHERITS_NOTHING) } },
    { ...message, properties: { topicAlias: undefined, responseTopic: "é/日本" } },
    // aedes' absolute expiry of an MQTT 5 message with a Message Expiry Interval
    {
      properties: { messageExpiryInterval: 60 },
      ...message,
      clientId: "pub-1",
      messageExpiry: 1_765_000_000_000,
    },
    { ...message, messageExpiry: 0 },
    ...["", "a", "x".repeat(64), "x".repeat(65), "y".repeat(300), ...wide].map((topic) => ({
      ...message,
      topic,
    })),
    ...[0, 127, 2 ** 32, 2 ** 48 - 1].map((brokerCounter) => ({ ...message, brokerCounter })),
    ...[0, 1, 64, 65_536, 70_000].map((n) => ({ ...message, payload: Buffer.alloc(n, n % 251) })),
    { ...message, brokerId: "" },
    { ...message, brokerId: "b".repeat(255) },
  ];

  it("reads each message as the same message sent as msgpack, in place too, and is smaller", () => {
    for (const [index, msg] of carried.entries()) {
      const bytes = compact("AbCdEfGh:1z", msg);
      assert.deepEqual(bytes.subarray(0, 4), COMPACT_HEAD, `message ${index} is compact`);
      const expected = decodeEnvelope(encodeEnvelope("AbCdEfGh:1z", msg as typeof message));
      assert.deepEqual(decodeEnvelope(bytes), expected, `message ${index}`);
      assert.deepEqual(decodeMessage(bytes), expected.msg, `message ${index}: the message alone`);
      assert.equal(envelopeIdOf(bytes), "AbCdEfGh:1z", `message ${index}: the id alone`);
      const before = Buffer.from("*3\r\n$7\r\nmessage\r\n");
      const read = Buffer.concat([before, bytes, Buffer.from("\r\n"), bytes]);
      assert.deepEqual(
        decodeMessageAt(read, before.length, before.length + bytes.length),
        expected.msg,
        `message ${index}: read in place`,
      );
    }
    const small = compact("AbCdEfGh:1z", message).length;
    const large = encodeEnvelope("AbCdEfGh:1z", message).length;
    assert.ok(small < large * 0.7, `${small} vs ${large} bytes`);
  });

  it("writes a numbered id as the id string it stands for, as msgpack past 31 bytes", () => {
    for (const prefix of ["AbCdEfGh:", "é:", "q".repeat(25)]) {
      for (const sequence of [0, 35, 36, 2 ** 31, 2 ** 53 - 1]) {
        const bytes = encodeNumberedEnvelope(prefix, sequence, message, "compact");
        const id = prefix + sequence.toString(36);
        const head = Buffer.byteLength(id) < 32 ? COMPACT_HEAD : ENVELOPE_HEAD;
        assert.deepEqual(bytes.subarray(0, 4), head, id);
        assert.deepEqual(bytes, compact(prefix + sequence.toString(36), message));
        assert.equal(decodeEnvelope(bytes).id, prefix + sequence.toString(36));
      }
    }
  });

  it("sends any other message, or one under a long id, as msgpack", () => {
    const others: object[] = [
      { ...message, nl: false },
      { ...message, messageExpiry: Date.now() + 0.5 },
      { ...message, messageExpiry: undefined },
      { ...message, payload: "text" },
      { ...message, cmd: "pubrel" },
      { ...message, qos: 3 },
      { ...message, retain: 1 },
      { ...message, brokerCounter: -1 },
      { ...message, brokerCounter: 1.5 },
      { ...message, brokerCounter: 2 ** 48 },
      { ...message, messageId: 70_000 },
      { ...message, messageId: "7" },
      { ...message, clientId: 7 },
      { ...message, brokerId: "b".repeat(256) },
      { ...message, topic: "t".repeat(65_536) },
      { ...message, properties: { when: new Date(0) } },
      // a user property named __proto__ (an own key there: publish-properties.ts)
      { ...message, properties: { userProperties: JSON.parse('{"__proto__":"x","a":"b"}') } },
      { ...message, extra: 1 },
      Object.assign(Object.create({ clientId: "inherited" }), message),
      { topic: "t" },
    ];
    for (const [index, msg] of others.entries()) {
      const bytes = compact("AbCdEfGh:1", msg);
      assert.deepEqual(bytes, encodeEnvelope("AbCdEfGh:1", msg as typeof message), `${index}`);
    }
    const longId = `node-${"x".repeat(40)}:1`;
    assert.deepEqual(compact(longId, message), encodeEnvelope(longId, message));
    assert.deepEqual(
      encodeNumberedEnvelope("p".repeat(30), 36, message, "compact"),
      encodeEnvelope(`${"p".repeat(30)}10`, message),
    );
  });

  it("refuses a cut envelope, bytes after it, bad flags or another version, also in place", () => {
    const whole = compact("AbCdEfGh:1", {
      properties: V5_PROPERTIES,
      ...message,
      clientId: "c",
      messageExpiry: 1_765_000_000_000,
    });
    for (let cut = 0; cut < whole.length; cut++) {
      const read = Buffer.concat([whole.subarray(0, cut), whole.subarray(cut), whole]);
      const cutShort = `cut at ${cut}`;
      assert.throws(() => decodeMessageAt(read, 0, cut), MalformedEnvelopeError, cutShort);
      if (cut > 0) {
        const alone = Buffer.from(whole.subarray(0, cut));
        assert.throws(() => decodeEnvelope(alone), MalformedEnvelopeError, cutShort);
      }
    }
    // a length field itself cut short, other bytes after it within the envelope's end: the
    // fields after it are never read from the wrong place
    const short = compact("AbCdEfGh:1", { ...message, messageId: 7, properties: { a: 1 } });
    const payloadLengthAt = short.indexOf(message.topic) + message.topic.length;
    for (let kept = 0; kept < 4; kept++) {
      const bytes = Buffer.concat([short.subarray(0, payloadLengthAt + kept), Buffer.from([5, 7])]);
      assert.throws(() => decodeMessage(bytes), MalformedEnvelopeError, `${kept} length bytes`);
    }
    const malformed = (change: (bytes: Buffer) => Buffer): void =>
      assert.throws(() => decodeMessage(change(Buffer.from(whole))), MalformedEnvelopeError);
    malformed((bytes) => Buffer.concat([bytes, Buffer.from([0x01])]));
    malformed((bytes) => {
      bytes[3] = 0x02;
      return bytes;
    });
    const flagsAt = 4 + 1 + "AbCdEfGh:1".length;
    malformed((bytes) => {
      bytes[flagsAt] = (bytes[flagsAt] as number) | 0x03;
      return bytes;
    });
    malformed((bytes) => {
      bytes[flagsAt] = (bytes[flagsAt] as number) | 0x30;
      return bytes;
    });
    // the second flags byte: a bit this version does not use
    malformed((bytes) => {
      bytes[flagsAt + 1] = 0x02;
      return bytes;
    });
    assert.deepEqual(decodeMessage(whole), decodeMessage(Buffer.from(whole)), "the original reads");
  });

  it("is recognized as this node's echo by its id, and another node's is not", () => {
    const echoes = echoCheck(Buffer.from("AbCdEfGh:"));
    const own = encodeNumberedEnvelope("AbCdEfGh:", 12, message, "compact");
    const other = encodeNumberedEnvelope("ZyXwVuTs:", 12, message, "compact");
    assert.equal(echoes.isEcho(own, 0, own.length), true);
    assert.equal(echoes.isEcho(other, 0, other.length), false);
    const asMsgpack = encodeNumberedEnvelope("AbCdEfGh:", 12, message);
    assert.equal(echoes.isEcho(asMsgpack, 0, asMsgpack.length), true);
  });
});
