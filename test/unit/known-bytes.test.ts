import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BufferReader, KnownBytes } from "../../src/engine/known-bytes.js";

/** `bytes` at `offset` of a larger Buffer, between other bytes. */
function placed(bytes: Buffer, offset: number): Buffer {
  const data = Buffer.alloc(offset + bytes.length + 7, 0x5a);
  bytes.copy(data, offset);
  return data;
}

describe("KnownBytes", () => {
  it("matches its bytes wherever they lie, and nothing that differs in any one byte", () => {
    const reader = new BufferReader();
    for (let length = 0; length <= 13; length++) {
      const bytes = Buffer.from("brokerCounter/x".slice(0, length));
      const known = new KnownBytes(bytes);
      for (const offset of [0, 1, 2, 3, 5]) {
        const data = placed(bytes, offset);
        reader.use(data);
        assert.ok(known.matches(reader, offset, length), `length ${length} at ${offset}`);
        assert.equal(known.matches(reader, offset, length + 1), false, "another length");
        for (let i = 0; i < length; i++) {
          const changed = Buffer.from(data);
          changed[offset + i] = (changed[offset + i] as number) ^ 0x01;
          reader.use(changed);
          assert.equal(known.matches(reader, offset, length), false, `byte ${i} of ${length}`);
        }
      }
    }
  });

  it("is not changed by changes to the bytes it was made from", () => {
    const bytes = Buffer.from("plant/pump/7");
    const known = new KnownBytes(bytes);
    const copy = Buffer.from(bytes);
    bytes.fill(0);
    const reader = new BufferReader();
    reader.use(copy);
    assert.ok(known.matches(reader, 0, copy.length));
  });
});

describe("BufferReader", () => {
  it("reads each Buffer at its own place, several Buffers of one memory among them", () => {
    // small Buffers share Node's pool: one ArrayBuffer, different offsets
    const pooled = ["topic/a", "topic/b", "other/c"].map((text) => Buffer.from(text));
    const own = Buffer.from(new Uint8Array(Buffer.from("topic/a")));
    const known = new KnownBytes(Buffer.from("topic/a"));
    const reader = new BufferReader();
    const seen = [...pooled, own, pooled[0] as Buffer].map((buffer) => {
      reader.use(buffer);
      return known.matches(reader, 0, buffer.length);
    });
    assert.deepEqual(seen, [true, false, false, true, true]);
  });
});
