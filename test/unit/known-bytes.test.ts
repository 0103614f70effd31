import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BufferReader, KnownBytesTable } from "../../src/engine/known-bytes.js";

/** `bytes` at `offset` of a larger Buffer, between other bytes. */
function placed(bytes: Buffer, offset: number): Buffer {
  const data = Buffer.alloc(offset + bytes.length + 7, 0x5a);
  bytes.copy(data, offset);
  return data;
}

describe("KnownBytesTable", () => {
  it("finds what a slot keeps by its bytes wherever they lie, and nothing for bytes that differ in any one", () => {
    const reader = new BufferReader();
    const table = new KnownBytesTable<string>(4, 16);
    for (let length = 0; length <= 16; length++) {
      const bytes = Buffer.from("brokerCounter/xyz".slice(0, length));
      table.keep(2, placed(bytes, 3), 3, length, `value ${length}`);
      for (const offset of [0, 1, 2, 3, 5]) {
        const data = placed(bytes, offset);
        reader.use(data);
        assert.equal(
          table.find(2, reader, offset, length),
          `value ${length}`,
          `${length} at ${offset}`,
        );
        assert.equal(table.find(1, reader, offset, length), undefined, "another slot");
        if (length < 16) {
          assert.equal(table.find(2, reader, offset, length + 1), undefined, "another length");
        }
        for (let i = 0; i < length; i++) {
          const changed = Buffer.from(data);
          changed[offset + i] = (changed[offset + i] as number) ^ 0x01;
          reader.use(changed);
          assert.equal(table.find(2, reader, offset, length), undefined, `byte ${i} of ${length}`);
        }
      }
    }
  });

  it("keeps a copy: later changes to the bytes it was given change nothing; a slot kept again holds the new bytes", () => {
    const table = new KnownBytesTable<number>(2, 64);
    const bytes = Buffer.from("plant/pump/7/temperature");
    const copy = Buffer.from(bytes);
    table.keep(0, bytes, 0, bytes.length, 7);
    bytes.fill(0);
    const reader = new BufferReader();
    reader.use(copy);
    assert.equal(table.find(0, reader, 0, copy.length), 7);
    assert.equal(table.holds(0), true);
    assert.equal(table.holds(1), false);
    const other = Buffer.from("plant/pump/8/temperature");
    table.keep(0, other, 0, other.length, 8);
    assert.equal(table.find(0, reader, 0, copy.length), undefined, "the old bytes are gone");
    reader.use(other);
    assert.equal(table.find(0, reader, 0, other.length), 8);
  });

  it("keeps two values that share their first slot, each found in one of its two", () => {
    const table = new KnownBytesTable<string>(8, 16);
    const reader = new BufferReader();
    const a = Buffer.from("broker-id-0");
    const b = Buffer.from("plant/p/0");
    // both name slot 1 first; their second slots differ
    table.keepEither(1, 5, a, 0, a.length, "a");
    table.keepEither(1, 6, b, 0, b.length, "b");
    reader.use(a);
    assert.equal(table.findEither(1, 5, reader, 0, a.length), "a");
    reader.use(b);
    assert.equal(table.findEither(1, 6, reader, 0, b.length), "b");
    // both slots taken: the first is given up
    const c = Buffer.from("plant/p/1");
    table.keepEither(1, 6, c, 0, c.length, "c");
    reader.use(c);
    assert.equal(table.findEither(1, 6, reader, 0, c.length), "c");
    reader.use(a);
    assert.equal(table.findEither(1, 5, reader, 0, a.length), undefined);
  });

  it("refuses bytes longer than its slots", () => {
    const table = new KnownBytesTable<number>(1, 16);
    assert.throws(() => table.keep(0, Buffer.alloc(17), 0, 17, 1), RangeError);
  });
});

describe("BufferReader", () => {
  it("reads each Buffer at its own place, several Buffers of one memory among them", () => {
    // small Buffers share Node's pool: one ArrayBuffer, different offsets
    const pooled = ["topic/a", "topic/b", "other/c"].map((text) => Buffer.from(text));
    const own = Buffer.from(new Uint8Array(Buffer.from("topic/a")));
    const table = new KnownBytesTable<boolean>(1, 16);
    table.keep(0, Buffer.from("topic/a"), 0, 7, true);
    const reader = new BufferReader();
    const first = pooled[0] as Buffer;
    // the same Buffer twice in a row (the messages of one read), then one of other memory
    const order = [...pooled, own, first, first, pooled[1] as Buffer, first];
    const seen = order.map((buffer) => {
      reader.use(buffer);
      return table.find(0, reader, 0, buffer.length) === true;
    });
    assert.deepEqual(seen, [true, false, false, true, true, true, false, true]);
  });
});
