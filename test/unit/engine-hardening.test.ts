import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import type { IConnackPacket, IPublishPacket, ISubackPacket } from "mqtt-packet";
import { settleTurns } from "../../harness/deadline.js";
import { Engine } from "../../harness/engine-harness.js";
import { publish, subscribe, unsubscribe, type WireClient } from "../../harness/wire-client.js";

/**
 * What aedes 1.2.0 fixed and the 2.0.0 beta (branched before) lacks, kept by Sluice
 * (src/engine/engine-hardening.ts and patches/): each case fails on the beta as published.
 */
describe("engine: 1.2.0's security fixes on the 2.0.0 beta", () => {
  let engine: Engine | undefined;
  afterEach(async () => {
    await engine?.close();
    engine = undefined;
  });

  // GHSA-52qw-whmv-87c5: names inherited from Object.prototype, from the wire.
  const PROTOTYPE_NAMES = ["__proto__", "constructor", "toString", "hasOwnProperty"];

  for (const clientId of PROTOTYPE_NAMES) {
    it(`client id "${clientId}" connects, and a second connection of it takes over`, async () => {
      engine = await Engine.start();
      const first = await engine.connect(clientId);
      assert.equal((first.wire.received("connack")[0] as IConnackPacket).returnCode, 0);
      const second = await engine.connect(clientId);
      assert.equal((second.wire.received("connack")[0] as IConnackPacket).returnCode, 0);
      await first.wire.closedWithin();
      await second.wire.roundTrip();
      const clients = (engine.broker as unknown as { clients: object }).clients;
      assert.equal(Object.getPrototypeOf(clients), null, "broker.clients");
      assert.equal(Object.getPrototypeOf(engine.broker.brokers), null, "broker.brokers");
    });
  }

  for (const filter of PROTOTYPE_NAMES) {
    it(`filter "${filter}" is subscribed, delivers once, and is unsubscribed`, async () => {
      engine = await Engine.start();
      const { wire, client } = await engine.connect(`sub-${filter}`);
      wire.send({ cmd: "unsubscribe", messageId: 1, unsubscriptions: [filter] });
      await wire.waitFor("UNSUBACK of a filter never subscribed", (p) => p.cmd === "unsuback");
      wire.send(subscribe(filter, 1, 2), publish(filter, "one"));
      await wire.waitFor("the PUBLISH", (p) => p.cmd === "publish");
      await wire.roundTrip();
      assert.deepEqual(wire.publishedPayloads(), ["one"]);
      const held = (client as unknown as { subscriptions: object }).subscriptions;
      assert.equal(Object.getPrototypeOf(held), null, "client.subscriptions");
      wire.send(unsubscribe(filter, 3), publish(filter, "two"));
      await wire.waitFor("UNSUBACK", (p) => p.cmd === "unsuback" && p.messageId === 3);
      await wire.roundTrip();
      assert.deepEqual(wire.publishedPayloads(), ["one"]);
    });
  }

  it("a SUBSCRIBE of several filters, one of them __proto__, grants each", async () => {
    engine = await Engine.start();
    const { wire } = await engine.connect("dedupe");
    wire.send({
      cmd: "subscribe",
      messageId: 1,
      subscriptions: [
        { topic: "__proto__", qos: 0 },
        { topic: "plain", qos: 1 },
        { topic: "plain", qos: 0 },
      ],
    });
    const suback = (await wire.waitFor("SUBACK", (p) => p.cmd === "suback")) as ISubackPacket;
    assert.deepEqual(suback.granted, [0, 0], "one code per distinct filter, the last one's QoS");
    wire.send(publish("__proto__", "proto"));
    await wire.waitFor("the PUBLISH", (p) => p.cmd === "publish");
    assert.deepEqual(wire.publishedPayloads(), ["proto"]);
  });

  const qos2 = (id: number) => publish("bound/t", `m${id}`, 2, id) as IPublishPacket;

  it("a client with 1,000 inbound QoS 2 messages awaiting PUBREL is closed at the next one", async () => {
    engine = await Engine.start();
    const { wire } = await engine.connect("bound");
    wire.send(...Array.from({ length: 1_000 }, (_, i) => qos2(i + 1)));
    await wire.waitForCount("pubrec", 1_000, 20_000);
    // A duplicate of one awaiting PUBREL takes no second slot.
    wire.send({ ...qos2(1), dup: true });
    await wire.waitForCount("pubrec", 1_001);
    await wire.roundTrip();
    wire.send(qos2(1_001));
    await wire.closedWithin();
    assert.equal(wire.received("pubrec").length, 1_001);
  });

  it("a PUBREL frees its slot", async () => {
    engine = await Engine.start();
    const { wire } = await engine.connect("bound-release");
    wire.send(...Array.from({ length: 1_000 }, (_, i) => qos2(i + 1)));
    await wire.waitForCount("pubrec", 1_000, 20_000);
    wire.send({ cmd: "pubrel", messageId: 1 });
    await wire.waitForCount("pubcomp", 1);
    wire.send(qos2(1_001));
    await wire.waitForCount("pubrec", 1_001);
    await wire.roundTrip();
  });

  /** Publishes QoS 2 with this id and payload and waits for its PUBREC (no PUBREL follows). */
  async function publishQos2(wire: WireClient, id: number, payload: string): Promise<void> {
    const before = wire.received("pubrec").length;
    wire.send(publish("ghsa/t", payload, 2, id));
    await wire.waitForCount("pubrec", before + 1);
  }

  // GHSA-p8r9-qf8w-p73r [MQTT-3.1.2-6]: a reused id must not be taken for the old message.
  const sessions: Array<[string, boolean, boolean]> = [
    ["a persistent session, then a Clean Start", false, true],
    ["a clean session, then a persistent one", true, false],
  ];
  for (const [what, firstClean, secondClean] of sessions) {
    it(`${what}: a QoS 2 id left without PUBREL is published again when reused`, async () => {
      engine = await Engine.start();
      const subscriber = await engine.connect("ghsa-sub");
      subscriber.wire.send(subscribe("ghsa/#", 0, 1));
      await subscriber.wire.waitFor("SUBACK", (p) => p.cmd === "suback");
      const first = await engine.connect("ghsa-pub", { clean: firstClean });
      await publishQos2(first.wire, 7, "first");
      first.wire.stream.destroy();
      await first.wire.closed;
      const second = await engine.connect("ghsa-pub", { clean: secondClean });
      await publishQos2(second.wire, 7, "second");
      await subscriber.wire.waitFor(
        "the second message",
        (p) => p.cmd === "publish" && p.payload.toString() === "second",
      );
      assert.deepEqual(subscriber.wire.publishedPayloads(), ["first", "second"]);
    });
  }

  it("two PUBRELs of one id in one read get their PUBCOMPs, and reject nothing unhandled", async () => {
    const rejections: unknown[] = [];
    const onRejection = (reason: unknown): void => {
      rejections.push(reason);
    };
    process.on("unhandledRejection", onRejection);
    try {
      engine = await Engine.start();
      const { wire } = await engine.connect("pubrel-twice");
      wire.send(publish("pubrel/t", "x", 2, 9));
      await wire.waitForCount("pubrec", 1);
      wire.send({ cmd: "pubrel", messageId: 9 }, { cmd: "pubrel", messageId: 9 });
      await wire.waitForCount("pubcomp", 2);
      await wire.roundTrip();
      await settleTurns();
      assert.deepEqual(rejections, []);
    } finally {
      process.off("unhandledRejection", onRejection);
    }
  });
});
