import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import type { IPublishPacket } from "mqtt-packet";
import { Engine, type EngineConnection } from "../../harness/engine-harness.js";
import { puback, publish, subscribe } from "../../harness/wire-client.js";

/**
 * The in-flight window (engine/inflight-window.ts, wired by build-broker.ts): at most
 * `limits.queue.maxInflight` QoS 1/2 deliveries to a client unacknowledged; the rest wait in
 * order, at most `maxQueuedPerClient` of them, the oldest dropped and reported.
 */
describe("engine: in-flight window", () => {
  let engine: Engine | undefined;
  afterEach(async () => {
    await engine?.close();
    engine = undefined;
  });

  /** A subscriber to win/t at QoS 1, and a publisher that has sent `count` QoS 1 messages to it. */
  async function deliver(count: number): Promise<EngineConnection> {
    if (engine === undefined) throw new Error("no engine");
    const subscriber = await engine.connect("win-sub");
    subscriber.wire.send(subscribe("win/t", 1, 1));
    await subscriber.wire.waitFor("SUBACK", (p) => p.cmd === "suback");
    const publisher = await engine.connect("win-pub");
    const messages = Array.from({ length: count }, (_, i) =>
      publish("win/t", `${i + 1}`, 1, i + 1),
    );
    publisher.wire.send(...messages);
    // Every delivery is written or waiting once its publisher has its PUBACK.
    await publisher.wire.waitForCount("puback", count);
    await subscriber.wire.roundTrip();
    return subscriber;
  }

  /** Acknowledges the n-th delivery the subscriber got. */
  function ack({ wire }: EngineConnection, nth: number): void {
    const delivery = wire.received("publish")[nth] as IPublishPacket | undefined;
    assert.ok(delivery?.messageId !== undefined, `delivery ${nth} to acknowledge`);
    wire.send(puback(delivery.messageId));
  }

  it("writes at most maxInflight unacknowledged; the rest follow in order as PUBACKs come", async () => {
    engine = await Engine.start({ limits: { queue: { maxInflight: 2, maxQueuedPerClient: 3 } } });
    const subscriber = await deliver(5);
    const { wire } = subscriber;
    assert.deepEqual(wire.publishedPayloads(), ["1", "2"]);
    ack(subscriber, 0);
    await wire.waitForCount("publish", 3);
    await wire.roundTrip();
    assert.deepEqual(wire.publishedPayloads(), ["1", "2", "3"], "one acknowledgement, one more");
    ack(subscriber, 1);
    ack(subscriber, 2);
    await wire.waitForCount("publish", 5);
    await wire.roundTrip();
    assert.deepEqual(wire.publishedPayloads(), ["1", "2", "3", "4", "5"]);
    assert.deepEqual(engine.queueDrops, []);
  });

  it("writes waiting deliveries of a window of 64 or more together, once a quarter of it is free", async () => {
    engine = await Engine.start({
      limits: { queue: { maxInflight: 64, maxQueuedPerClient: 200 } },
    });
    const subscriber = await deliver(100);
    const { wire } = subscriber;
    assert.equal(wire.received("publish").length, 64);
    for (let nth = 0; nth < 15; nth++) ack(subscriber, nth);
    // a SUBSCRIBE is handled after the packets before it [MQTT-4.6.0-6]: by its SUBACK, and a
    // round trip more, a delivery those acknowledgements let go would be here
    wire.send(subscribe("win/other", 1, 2));
    await wire.waitFor("SUBACK", (p) => p.cmd === "suback" && p.messageId === 2);
    await wire.roundTrip();
    assert.equal(wire.received("publish").length, 64, "15 of 64 acknowledged: none more yet");
    ack(subscriber, 15);
    await wire.waitForCount("publish", 80);
    await wire.roundTrip();
    assert.deepEqual(
      wire.publishedPayloads(),
      Array.from({ length: 80 }, (_, i) => `${i + 1}`),
      "16 free: 16 more, in order",
    );
    for (let nth = 16; nth < 48; nth++) ack(subscriber, nth);
    await wire.waitForCount("publish", 100);
    assert.deepEqual(engine.queueDrops, []);
  });

  it("drops the oldest waiting deliveries past maxQueuedPerClient, and reports each drop", async () => {
    engine = await Engine.start({ limits: { queue: { maxInflight: 2, maxQueuedPerClient: 3 } } });
    const subscriber = await deliver(7);
    const { wire } = subscriber;
    assert.deepEqual(wire.publishedPayloads(), ["1", "2"]);
    assert.deepEqual(engine.queueDrops, [
      { clientId: "win-sub", count: 1 },
      { clientId: "win-sub", count: 1 },
    ]);
    ack(subscriber, 0);
    ack(subscriber, 1);
    await wire.waitForCount("publish", 4);
    ack(subscriber, 2);
    await wire.waitForCount("publish", 5);
    await wire.roundTrip();
    assert.deepEqual(wire.publishedPayloads(), ["1", "2", "5", "6", "7"], "3 and 4 were dropped");
  });
});
