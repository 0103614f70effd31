import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { settleTurns } from "../../harness/deadline.js";
import { Engine } from "../../harness/engine-harness.js";
import { Holdback, holdEmits, holdPersistence } from "../../harness/holdback.js";
import { publish, subscribe, unsubscribe } from "../../harness/wire-client.js";

/**
 * [MQTT-4.6.0-6] SUBSCRIBE and UNSUBSCRIBE are ordered against the PUBLISHes around them on one
 * connection (the barrier in Sluice's aedes patch, lib/client.js `dispatch`), even when all of
 * them arrive in one read; consecutive SUBSCRIBEs are handled together.
 */
describe("engine: ordering barrier", () => {
  let engine: Engine | undefined;
  afterEach(async () => {
    await engine?.close();
    engine = undefined;
  });

  it("a PUBLISH after a SUBSCRIBE in the same read reaches that subscription, even if slow to store", async () => {
    // A persistent session's SUBSCRIBE stores its filter first: the store is what is held.
    const stores = new Holdback();
    engine = await Engine.start({
      store: (store) => holdPersistence(store, "addSubscriptions", stores),
    });
    const { wire } = await engine.connect("order-after", { clean: false });
    wire.send(subscribe("order/t", 0, 1), publish("order/t", "after"));
    await stores.waitForHeld(1);
    await settleTurns();
    stores.release();
    await wire.waitFor("SUBACK", (p) => p.cmd === "suback");
    await wire.waitFor("the PUBLISH after the SUBSCRIBE", (p) => p.cmd === "publish");
    assert.deepEqual(wire.publishedPayloads(), ["after"]);
  });

  it("a PUBLISH before a SUBSCRIBE in the same read does not reach it, even if slow to hand on", async () => {
    const emits = new Holdback();
    engine = await Engine.start({ store: (store) => holdEmits(store, "order/", emits) });
    const { wire } = await engine.connect("order-before");
    wire.send(
      publish("order/t", "before"),
      subscribe("order/t", 0, 1),
      publish("order/t", "after"),
    );
    await emits.waitForHeld(1);
    await settleTurns();
    assert.equal(
      wire.received("suback").length,
      0,
      "the SUBSCRIBE waits for the PUBLISH before it",
    );
    emits.release();
    await wire.waitFor("the PUBLISH after the SUBSCRIBE", (p) => p.cmd === "publish");
    await wire.roundTrip();
    assert.equal(wire.received("suback").length, 1);
    assert.deepEqual(wire.publishedPayloads(), ["after"]);
  });

  it("a PUBLISH after an UNSUBSCRIBE in the same read does not reach it; one before it does", async () => {
    engine = await Engine.start();
    const { wire } = await engine.connect("order-unsubscribe");
    wire.send(subscribe("order/t", 0, 1));
    await wire.waitFor("SUBACK", (p) => p.cmd === "suback");
    wire.send(publish("order/t", "before"), unsubscribe("order/t", 2), publish("order/t", "after"));
    await wire.waitFor("UNSUBACK", (p) => p.cmd === "unsuback");
    await wire.roundTrip();
    assert.deepEqual(wire.publishedPayloads(), ["before"]);
  });

  it("consecutive SUBSCRIBEs are handled together; a PUBLISH between two separates them", async () => {
    // A persistent session's SUBSCRIBE stores its filters: the store is what is held.
    const stores = new Holdback();
    engine = await Engine.start({
      store: (store) => holdPersistence(store, "addSubscriptions", stores),
    });
    const { wire } = await engine.connect("order-together", { clean: false });
    wire.send(subscribe("order/a", 0, 1), subscribe("order/b", 0, 2));
    // Both stores are under way while the first is held.
    await stores.waitForHeld(2);
    stores.release();
    await wire.waitForCount("suback", 2);

    const separated = new Holdback();
    const other = await Engine.start({
      store: (store) => holdPersistence(store, "addSubscriptions", separated),
    });
    try {
      const { wire: second } = await other.connect("order-separated", { clean: false });
      second.send(
        subscribe("order/a", 0, 1),
        publish("order/a", "between"),
        subscribe("order/b", 0, 2),
      );
      await separated.waitForHeld(1);
      await settleTurns();
      assert.equal(separated.heldCount, 1, "the SUBSCRIBE after the PUBLISH waits");
      separated.release();
      await second.waitForCount("suback", 2);
      await second.roundTrip();
      assert.deepEqual(second.publishedPayloads(), ["between"]);
    } finally {
      await other.close();
    }
  });
});
