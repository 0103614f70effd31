import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import type { IPublishPacket, Packet } from "mqtt-packet";
import { settleTurns, withDeadline } from "../../harness/deadline.js";
import { Engine } from "../../harness/engine-harness.js";
import { publish, subscribe } from "../../harness/wire-client.js";
import { type GatedCommand, installReadGate, type ReadGate } from "../../src/engine/read-gate.js";

/** What a connection got back, in order: acknowledgements by kind and packet id. */
function acks(packets: readonly Packet[]): string[] {
  return packets
    .filter((p) => p.cmd === "puback" || p.cmd === "suback")
    .map((p) => `${p.cmd} ${p.messageId}`);
}

/**
 * The read gate (engine/read-gate.ts, the publish limits' and subscribe pacer's throttle): a
 * gated client's PUBLISH (or SUBSCRIBE) waits until admitted, and everything after it waits
 * behind it, so the connection's order is kept.
 */
describe("engine: read gate", () => {
  let engine: Engine | undefined;
  afterEach(async () => {
    await engine?.close();
    engine = undefined;
  });

  /** A connected client behind a gate that refuses while `closed` is set. */
  async function gated(clientId: string, command: GatedCommand) {
    engine = await Engine.start();
    const connection = await engine.connect(clientId);
    const state = { closed: false, refusals: 0 };
    let refused: () => void = () => {};
    const firstRefusal = new Promise<void>((resolve) => {
      refused = resolve;
    });
    const gate: ReadGate = installReadGate(
      connection.client,
      {
        admit: () => {
          if (!state.closed) return true;
          state.refusals++;
          refused();
          return false;
        },
      },
      command,
    );
    const heldBack = () => withDeadline(firstRefusal, 5_000, "a refusal");
    return { ...connection, gate, state, heldBack };
  }

  it("holds a refused PUBLISH and every packet after it until admitted, in order", async () => {
    const { wire, gate, state, heldBack } = await gated("gate-publish", "publish");
    const published: string[] = [];
    engine?.broker.on("publish", (packet: IPublishPacket, client: unknown) => {
      if (client) published.push(packet.payload.toString());
    });
    wire.send(publish("gate/t", "1", 1, 1));
    await wire.waitFor("PUBACK 1", (p) => p.cmd === "puback");
    state.closed = true;
    wire.send(
      publish("gate/t", "2", 1, 2),
      subscribe("gate/t", 1, 3),
      publish("gate/t", "3", 1, 4),
    );
    await heldBack();
    await settleTurns();
    assert.deepEqual(published, ["1"]);
    assert.deepEqual(acks(wire.packets), ["puback 1"], "nothing after the held PUBLISH is handled");
    assert.equal(gate.holding, true);
    state.closed = false;
    gate.resume();
    await wire.waitForCount("puback", 3);
    assert.deepEqual(acks(wire.packets), ["puback 1", "puback 2", "suback 3", "puback 4"]);
    assert.deepEqual(published, ["1", "2", "3"]);
    // The SUBSCRIBE came between 2 and 3: only 3 is delivered back to it.
    await wire.waitFor("the PUBLISH after the SUBSCRIBE", (p) => p.cmd === "publish");
    await wire.roundTrip();
    assert.deepEqual(wire.publishedPayloads(), ["3"]);
    assert.equal(gate.holding, false);
  });

  it("holds a refused SUBSCRIBE and the PUBLISH after it until admitted, in order", async () => {
    const { wire, gate, state, heldBack } = await gated("gate-subscribe", "subscribe");
    state.closed = true;
    wire.send(subscribe("gate/s", 1, 1), publish("gate/s", "after", 1, 2));
    await heldBack();
    await settleTurns();
    assert.deepEqual(acks(wire.packets), [], "the PUBLISH waits behind the held SUBSCRIBE");
    assert.equal(gate.holding, true);
    state.closed = false;
    gate.resume();
    await wire.waitFor(
      "the PUBLISH delivered to the SUBSCRIBE before it",
      (p) => p.cmd === "publish",
    );
    await wire.waitFor("PUBACK 2", (p) => p.cmd === "puback");
    assert.deepEqual(acks(wire.packets), ["suback 1", "puback 2"]);
    assert.deepEqual(wire.publishedPayloads(), ["after"]);
  });
});
