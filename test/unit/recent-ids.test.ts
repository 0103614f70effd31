import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RecentIds } from "../../src/engine/recent-ids.js";

/** An id as the receive path records it: by its bytes among others, or else as a string. */
function addId(recent: RecentIds, id: string): boolean {
  const bytes = Buffer.concat([Buffer.from([0x82, 0xa2]), Buffer.from(id), Buffer.from([0xc0])]);
  return recent.addNumbered(bytes, 2, 2 + Buffer.byteLength(id)) ?? recent.add(id);
}

describe("recent envelope ids", () => {
  it("knows an id again until 2 x size newer ones were added, and at least size of them", () => {
    const recent = new RecentIds(3);
    assert.equal(recent.add("a"), true);
    assert.equal(recent.add("a"), false, "seen");
    for (const id of ["b", "c", "d", "e"]) assert.equal(recent.add(id), true);
    // a, b, c are the older generation now; d, e the newer
    assert.equal(recent.add("a"), false, "still within the window");
    for (const id of ["f", "g"]) recent.add(id);
    // the generation holding a was dropped when d, e, f filled the newer one and g began another
    assert.equal(recent.add("a"), true, "forgotten past the window");
    assert.equal(recent.add("f"), false);
  });

  it("numbered ids: each known again, per origin, however many other ids came since within 65,536 of its origin", () => {
    const recent = new RecentIds(3);
    assert.equal(addId(recent, "AbCd-_x:1"), true);
    assert.equal(addId(recent, "Other12:1"), true, "another origin, the same number");
    for (let n = 2; n < 60_000; n++) assert.equal(addId(recent, `AbCd-_x:${n.toString(36)}`), true);
    assert.equal(addId(recent, "AbCd-_x:1"), false, "59,999 later, the Set's 3 long past");
    assert.equal(addId(recent, "Other12:1"), false);
    assert.equal(addId(recent, `AbCd-_x:${(30_000).toString(36)}`), false, "one in the middle");
  });

  it("an id numbered past the window goes by the Set; spellings that are not one number's go by the Set", () => {
    const recent = new RecentIds(3);
    assert.equal(addId(recent, "node:5"), true);
    assert.equal(addId(recent, `node:${(5 + 65_536).toString(36)}`), true);
    assert.equal(addId(recent, "node:5"), true, "out of the window, not in the Set yet");
    assert.equal(addId(recent, "node:5"), false, "in the Set now");
    assert.equal(addId(recent, "node:05"), true, "a leading zero: another id");
    assert.equal(addId(recent, "node:05"), false);
    for (const id of ["plain", ":7", "x:", "x:A1", "!reserved", "x:12345678901"]) {
      assert.equal(addId(recent, id), true, id);
      assert.equal(addId(recent, id), false, id);
    }
  });

  it("answers as a set of every id would for copies within the window, numbers skipped and repeated at random", () => {
    const recent = new RecentIds(100);
    const everSeen = new Set<string>();
    let seed = 5;
    const random = (): number => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const highest = new Map<string, number>();
    for (let i = 0; i < 200_000; i++) {
      const origin = random() < 0.7 ? "nodeA12:" : random() < 0.5 ? "nodeB34:" : "nodeC56:";
      const top = highest.get(origin) ?? 0;
      let sequence: number;
      const roll = random();
      if (roll < 0.2 && top > 0) sequence = Math.max(1, top - Math.floor(random() * 60_000));
      else if (roll < 0.21) sequence = top + 1 + Math.floor(random() * 70_000);
      else sequence = top + 1 + Math.floor(random() * (roll < 0.5 ? 3 : 300));
      highest.set(origin, Math.max(top, sequence));
      const id = origin + sequence.toString(36);
      const expected = !everSeen.has(id);
      everSeen.add(id);
      assert.equal(addId(recent, id), expected, `${i}: ${id}`);
    }
  });
});
