import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RecentIds } from "../../src/engine/recent-ids.js";

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
});
