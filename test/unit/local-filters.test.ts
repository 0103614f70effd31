import assert from "node:assert/strict";
import { describe, it } from "node:test";
import mqemitter from "mqemitter";
import { LocalFilters } from "../../src/engine/local-filters.js";

type Emitter = mqemitter.MQEmitter;
const noop = (_message: unknown, done: () => void): void => done();

/** Adds or removes a listener and waits for mqemitter to have done it (removals are deferred). */
function on(emitter: Emitter, filter: string, listener = noop): Promise<void> {
  return new Promise((resolve) => emitter.on(filter, listener, resolve));
}
function off(emitter: Emitter, filter: string, listener = noop): Promise<void> {
  return new Promise((resolve) => emitter.removeListener(filter, listener, resolve));
}

/** How many of the emitter's listeners a message on `topic` reaches. */
function matches(emitter: Emitter, topic: string): number {
  return (emitter as unknown as { _matcher: { match(t: string): unknown[] } })._matcher.match(topic)
    .length;
}

const TOPICS = ["a", "a/b", "a/b/c", "b/x", "", "/a", "x/", "$SYS/n/new/clients", "$share/g/a"];

describe("local filters: whether a message can match a subscription of the node", () => {
  it("follows adds and removes: no filter but $-ones, a filter's first level, wildcards", async () => {
    const emitter = mqemitter({ matchEmptyLevels: true });
    const local = new LocalFilters(emitter);
    assert.equal(local.mayMatch("a/b"), false);
    assert.equal(local.mayMatch("$SYS/x"), true);
    await on(emitter, "$SYS/+/new/clients");
    assert.equal(local.mayMatch("a/b"), false);
    await on(emitter, "a/#");
    await on(emitter, "a/b");
    assert.equal(local.mayMatch("a/b"), true);
    await off(emitter, "a/#");
    assert.equal(local.mayMatch("a/b"), true);
    await off(emitter, "a/b");
    assert.equal(local.mayMatch("a/b"), false);
    await on(emitter, "+/x");
    assert.equal(local.mayMatch("b/x"), true);
    const all = emitter as unknown as { removeAllListeners(f: string, done: () => void): void };
    await new Promise<void>((resolve) => all.removeAllListeners("+/x", resolve));
    assert.equal(local.mayMatch("b/x"), false);
    await on(emitter, "#");
    assert.equal(local.mayMatch("anything"), true);
  });

  it("never says no where mqemitter would deliver (every filter set here, every topic)", async () => {
    const filters = ["a", "a/b", "a/+", "+/x", "#", "a/#", "/a", "+", "$SYS/#", "x/", "/"];
    // Every subset of the filters, added then removed in turn.
    for (let set = 0; set < 1 << filters.length; set += 5) {
      const emitter = mqemitter({ matchEmptyLevels: true });
      const local = new LocalFilters(emitter);
      const chosen = filters.filter((_, i) => (set >> i) & 1);
      for (const filter of chosen) await on(emitter, filter);
      for (const topic of TOPICS) {
        if (matches(emitter, topic) > 0) assert.ok(local.mayMatch(topic), `${chosen} ${topic}`);
      }
      for (const filter of chosen) await off(emitter, filter);
      for (const topic of TOPICS) assert.equal(local.mayMatch(topic), topic.startsWith("$"));
    }
  });

  it("answers each topic as the matcher itself does, across adds and removes", async () => {
    const emitter = mqemitter({ matchEmptyLevels: true });
    new LocalFilters(emitter);
    const matcher = (emitter as unknown as { _matcher: { match(t: string): unknown[] } })._matcher;
    const uncached = Object.getPrototypeOf(matcher).match as (t: string) => unknown[];
    const filters = ["a", "a/b", "a/+", "+/x", "#", "a/#", "/a", "+", "$SYS/#", "x/"];
    const listeners = [0, 1, 2].map(() => (_message: unknown, done: () => void) => done());
    const added = new Set<string>();
    // A fixed walk over adds and removes (a linear congruential sequence, no randomness).
    let state = 7;
    for (let step = 0; step < 300; step++) {
      state = (state * 1_103_515_245 + 12_345) % 2 ** 31;
      const filter = filters[state % filters.length] as string;
      const listener = listeners[(state >> 8) % listeners.length] as typeof noop;
      const key = `${filter} ${listeners.indexOf(listener)}`;
      if (added.has(key)) {
        added.delete(key);
        await off(emitter, filter, listener);
      } else {
        added.add(key);
        await on(emitter, filter, listener);
      }
      for (const topic of TOPICS) {
        const kept = matcher.match(topic);
        assert.deepEqual(kept, uncached.call(matcher, topic), `step ${step}, ${topic}`);
        assert.equal(matcher.match(topic), kept, "the same answer while the filters stay");
      }
    }
  });
});
