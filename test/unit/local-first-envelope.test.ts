import assert from "node:assert/strict";
import { describe, it } from "node:test";
import msgpack from "msgpack-lite";
import { decodeEnvelope, ENVELOPE_HEAD, encodeEnvelope } from "../../src/engine/local-first.js";

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
});
