import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Aedes, type AedesPublishPacket, type Client, type Subscription } from "aedes";
import type { IPublishPacket } from "mqtt-packet";
import { pino } from "pino";
import { withDeadline } from "../../harness/deadline.js";
import { duplexPair } from "../../harness/duplex-pair.js";
import { connectPacket } from "../../harness/raw-socket.js";
import { puback, publish, subscribe, WireClient } from "../../harness/wire-client.js";
import { InflightWindows } from "../../src/engine/inflight-window.js";
import { ReadBatching } from "../../src/limits/read-batching.js";
import { SubscriptionThrottle } from "../../src/limits/subscription-throttle.js";

/**
 * The subscribers' node's throttle (limits/subscription-throttle.ts) on a real aedes broker
 * and real in-flight windows: it stops reading the node's Redis subscription once a burst of
 * deliveries waits for the windows, and reads again as soon as acknowledgements bring the
 * backlog down to half its bound, not at its next look (here never: a look an hour away).
 */
/**
 * For the enclosing suite: a real aedes broker whose QoS 1/2 deliveries pass in-flight windows
 * of 2, and `connect` for its clients.
 */
function brokerWithWindows() {
  let broker: Aedes | undefined;
  const windows = new InflightWindows(
    { maxInflight: 2, maxQueued: 1_000 },
    { onDropped: () => assert.fail("nothing is dropped") },
  );
  const observe = windows.observeSubscribe((_client: Client, sub: Subscription) => sub);
  before(async () => {
    broker = await Aedes.createBroker({
      authorizeSubscribe: (client, sub, done) => done(null, observe(client, sub)),
      authorizeForward: windows.observeForward(
        (_client: Client, packet: AedesPublishPacket) => packet,
      ),
    });
  });
  after(() => new Promise<void>((resolve) => (broker ? broker.close(() => resolve()) : resolve())));

  async function connect(clientId: string): Promise<WireClient> {
    const { server, client } = duplexPair();
    (broker as Aedes).handle(server);
    const wire = new WireClient(client);
    wire.send(connectPacket(clientId));
    await wire.waitFor("CONNACK", (p) => p.cmd === "connack");
    return wire;
  }
  return { windows, connect };
}

describe("the subscription throttle", () => {
  const { windows, connect } = brokerWithWindows();

  /** What the throttle asked of the node's subscription, in order (true: stop reading). */
  const asked: boolean[] = [];
  const batching = new ReadBatching(1);
  const throttle = new SubscriptionThrottle(
    { waitingDeliveries: 10, tickMs: 3_600_000 },
    windows,
    {
      pauseReading(paused) {
        asked.push(paused);
        return true;
      },
    },
    { subscriptionPaused: () => {}, subscriptionResumed: () => {}, pausedSleep: () => {} },
    pino({ level: "silent" }),
    batching,
  );
  after(() => throttle.stop());

  it("stops reading at a burst past waitingDeliveries, reads again once acknowledgements halve it", async () => {
    const subscriber = await connect("throttle-sub");
    subscriber.send(subscribe("throttle/t", 1, 1));
    await subscriber.waitFor("SUBACK", (p) => p.cmd === "suback");
    const publisher = await connect("throttle-pub");
    publisher.send(
      ...Array.from({ length: 20 }, (_, i) => publish("throttle/t", `${i}`, 1, i + 1)),
    );
    await publisher.waitForCount("puback", 20);
    await subscriber.roundTrip();
    // 2 written (the window), 18 waiting: paused at the 10th to wait
    assert.equal(subscriber.received("publish").length, 2);
    assert.deepEqual(asked, [true]);
    assert.equal(throttle.active, true);
    assert.equal(batching.started, true, "reads in batches while paused");

    /** Acknowledges the n-th delivery, and waits for the waiting one it lets go (if any). */
    const ack = async (nth: number) => {
      const delivery = subscriber.received("publish")[nth] as IPublishPacket;
      subscriber.send(puback(delivery.messageId as number));
      await subscriber.waitForCount("publish", Math.min(nth + 3, 20));
      await subscriber.roundTrip();
    };
    // Each acknowledgement lets one waiting delivery go: 18 waiting, 12 acknowledgements, 6.
    for (let nth = 0; nth < 12; nth++) await ack(nth);
    assert.deepEqual(asked, [true], "6 waiting: more than half the bound, still paused");
    await ack(12);
    assert.deepEqual(asked, [true, false], "5 waiting: reads again at once");
    assert.equal(throttle.active, false);
    assert.equal(batching.started, false, "reads as input comes once resumed");
    for (let nth = 13; nth < 20; nth++) await ack(nth);
    assert.deepEqual(
      subscriber.publishedPayloads(),
      Array.from({ length: 20 }, (_, i) => `${i}`),
      "every delivery, in order",
    );
    assert.deepEqual(asked, [true, false], "no pause without a backlog");
  });
});

/**
 * A paused node that sleeps between its passes (ReadBatching) while acknowledgements come is
 * busy, not idle: it stays paused until they have halved the backlog. Taken for idle, a node
 * under a CPU quota read again too soon, a burst from Redis into full queues.
 */
describe("the subscription throttle's sleep between passes", () => {
  const { windows, connect } = brokerWithWindows();

  const asked: boolean[] = [];
  let resumed: () => void = () => {};
  let sleptSeconds = 0;
  const batching = new ReadBatching(10);
  const throttle = new SubscriptionThrottle(
    { waitingDeliveries: 10, tickMs: 100 },
    windows,
    {
      pauseReading(paused) {
        asked.push(paused);
        if (!paused) resumed();
        return true;
      },
    },
    {
      subscriptionPaused: () => {},
      subscriptionResumed: () => {},
      pausedSleep: (seconds) => {
        sleptSeconds += seconds;
      },
    },
    pino({ level: "silent" }),
    batching,
  );
  after(() => throttle.stop());

  it("stays paused at its looks while it sleeps between passes, reads again once the backlog halves", async () => {
    // The loop keeps passing throughout (as with clients' traffic): paused, it sleeps the rest
    // of each 10 ms, which its looks count as busy.
    let spinning = true;
    const spin = (): void => {
      if (spinning) setImmediate(spin);
    };
    setImmediate(spin);
    const resumedNow = new Promise<void>((resolve) => {
      resumed = resolve;
    });
    try {
      const subscriber = await connect("sleeping-sub");
      subscriber.send(subscribe("sleeping/t", 1, 1));
      await subscriber.waitFor("SUBACK", (p) => p.cmd === "suback");
      const publisher = await connect("sleeping-pub");
      publisher.send(
        ...Array.from({ length: 20 }, (_, i) => publish("sleeping/t", `${i}`, 1, i + 1)),
      );
      await publisher.waitForCount("puback", 20);
      await subscriber.roundTrip();
      assert.deepEqual(asked, [true], "paused at the burst");
      assert.equal(batching.started, true);

      /** Acknowledges the n-th delivery and waits for the one it lets go. */
      const ack = async (nth: number) => {
        const delivery = subscriber.received("publish")[nth] as IPublishPacket;
        subscriber.send(puback(delivery.messageId as number));
        await subscriber.waitForCount("publish", Math.min(nth + 3, 20));
      };
      // Five looks (100 ms apart) with 17, then 16 waiting, over half the bound; the
      // acknowledgements keep the subscriber active (its waiting deliveries count for a second).
      await ack(0);
      await new Promise((resolve) => setTimeout(resolve, 250));
      await ack(1);
      await new Promise((resolve) => setTimeout(resolve, 250));
      // (each look asks again: a subscriber connection made anew meanwhile would read)
      assert.equal(asked.includes(false), false, "paused through its looks while it sleeps");
      for (let nth = 2; nth < 13; nth++) await ack(nth);
      await withDeadline(resumedNow, 2_000, "reading again once the backlog halved");
    } finally {
      spinning = false;
    }
    assert.equal(asked.filter((paused) => !paused).length, 1, "read again once");
    assert.equal(asked.at(-1), false);
    assert.equal(batching.started, false);
    assert.ok(sleptSeconds > 0.01, `slept ${sleptSeconds} s, counted`);
  });
});
