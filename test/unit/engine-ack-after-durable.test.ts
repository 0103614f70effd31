import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { settleTurns } from "../../harness/deadline.js";
import { Engine } from "../../harness/engine-harness.js";
import { Holdback, holdEmits, holdPersistence } from "../../harness/holdback.js";
import { publish } from "../../harness/wire-client.js";

/**
 * A QoS 1 PUBLISH is acknowledged (PUBACK) and a QoS 2 one received (PUBREC) only once the
 * message has been handed on: emitted to subscribers (the emitter), and for QoS 2 its packet
 * id stored against duplicates (Sluice's aedes patch, lib/handlers/publish.js). An
 * acknowledgement before that loses the message if the node fails in between.
 */
describe("engine: acknowledgement after hand-over", () => {
  let engine: Engine | undefined;
  afterEach(async () => {
    await engine?.close();
    engine = undefined;
  });

  it("PUBACK only once the emitter has taken the QoS 1 message", async () => {
    const emits = new Holdback();
    engine = await Engine.start({ store: (store) => holdEmits(store, "durable/", emits) });
    const { wire } = await engine.connect("durable-qos1");
    wire.send(publish("durable/t", "m", 1, 1));
    await emits.waitForHeld(1);
    await settleTurns();
    assert.equal(wire.received("puback").length, 0, "no PUBACK while the emit is held");
    emits.release();
    await wire.waitFor("PUBACK", (p) => p.cmd === "puback" && p.messageId === 1);
  });

  it("PUBREC only once the emitter has taken the QoS 2 message", async () => {
    const emits = new Holdback();
    engine = await Engine.start({ store: (store) => holdEmits(store, "durable/", emits) });
    const { wire } = await engine.connect("durable-qos2-emit");
    wire.send(publish("durable/t", "m", 2, 1));
    await emits.waitForHeld(1);
    await settleTurns();
    assert.equal(wire.received("pubrec").length, 0, "no PUBREC while the emit is held");
    emits.release();
    await wire.waitFor("PUBREC", (p) => p.cmd === "pubrec" && p.messageId === 1);
  });

  it("PUBREC only once the QoS 2 packet id is stored", async () => {
    const stores = new Holdback();
    engine = await Engine.start({
      store: (store) => holdPersistence(store, "incomingStorePacket", stores),
    });
    const { wire } = await engine.connect("durable-qos2-store");
    wire.send(publish("durable/t", "m", 2, 1));
    await stores.waitForHeld(1);
    await settleTurns();
    assert.equal(wire.received("pubrec").length, 0, "no PUBREC while the store is held");
    stores.release();
    await wire.waitFor("PUBREC", (p) => p.cmd === "pubrec" && p.messageId === 1);
  });
});
