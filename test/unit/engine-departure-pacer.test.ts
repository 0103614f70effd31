import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import type { Client } from "aedes";
import { withDeadline } from "../../harness/deadline.js";
import { Engine, type EngineConnection } from "../../harness/engine-harness.js";
import { subscribe } from "../../harness/wire-client.js";

/** Departing clients, and the filters each holds (the shared one last). */
const DEPARTING = 50;
const OWN_FILTERS = 100;
const SHARED = "departure/shared";
/** At most this many removals are under way at once (engine/departure-pacer.ts). */
const REMOVALS_AT_ONCE = 1_000;

async function messagesSent(engine: Engine): Promise<number> {
  const metric = engine.metrics.registry.getSingleMetric("sluice_messages_sent_total");
  return ((await metric?.get())?.values ?? []).reduce((sum, v) => sum + v.value, 0);
}

/** Subscribes a connection to its own filters and then SHARED (QoS 0 or 1), in one write. */
async function subscribeMany(connection: EngineConnection, index: number): Promise<void> {
  const packets = Array.from({ length: OWN_FILTERS }, (_, i) =>
    subscribe(`departure/${index}/${i}`, 1, i + 1),
  );
  packets.push(subscribe(SHARED, index % 2 === 0 ? 0 : 1, OWN_FILTERS + 1));
  connection.wire.send(...packets);
  await connection.wire.waitForCount("suback", OWN_FILTERS + 1);
}

/** Resolves once the broker has unregistered `count` clients. */
function disconnected(engine: Engine, count: number): Promise<void> {
  return new Promise((resolve) => {
    let seen = 0;
    const onDisconnect = (): void => {
      if (++seen < count) return;
      engine.broker.off("clientDisconnect", onDisconnect);
      resolve();
    };
    engine.broker.on("clientDisconnect", onDisconnect);
  });
}

/** Waits, a turn at a time, until every departed client's listener is removed. */
async function removalsDone(engine: Engine, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (engine.departures.pending > 0) {
    assert.ok(Date.now() < deadline, `${engine.departures.pending} listeners left after ${ms} ms`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** `departures.pending` at every turn of the event loop until it is 0 (at most `turns`). */
async function pendingPerTurn(engine: Engine, turns: number): Promise<number[]> {
  const seen = [engine.departures.pending];
  while ((seen[seen.length - 1] ?? 0) > 0 && seen.length <= turns) {
    await new Promise((resolve) => setImmediate(resolve));
    seen.push(engine.departures.pending);
  }
  return seen;
}

describe("engine: departed clients' subscriptions", () => {
  let engine: Engine | undefined;
  afterEach(async () => {
    await engine?.close();
    engine = undefined;
  });

  it("deliver nothing while they wait for removal: no write, no message counted, no client error", async () => {
    const started = await Engine.start();
    engine = started;
    const live = await started.connect("departure-live");
    live.wire.send(subscribe(SHARED, 0, 1));
    await live.wire.waitFor("SUBACK", (p) => p.cmd === "suback");
    const departing: EngineConnection[] = [];
    for (let i = 0; i < DEPARTING; i++) {
      const connection = await started.connect(`departure-${i}`);
      await subscribeMany(connection, i);
      departing.push(connection);
    }
    const sentBefore = await messagesSent(started);
    const errors: Error[] = [];
    started.broker.on("clientError", (_client: Client, error: Error) => errors.push(error));
    // Published as the last of them is unregistered, before any turn of removals: every
    // departed client's listener for SHARED is still on the emitter.
    let pendingAtPublish = 0;
    const published = disconnected(started, DEPARTING).then(() => {
      pendingAtPublish = started.departures.pending;
      for (const qos of [0, 1] as const)
        started.broker.publish(
          {
            cmd: "publish",
            topic: SHARED,
            payload: Buffer.from(`qos${qos}`),
            qos,
            retain: false,
            dup: false,
          },
          () => {},
        );
    });
    for (const { wire } of departing) wire.send({ cmd: "disconnect" });
    await withDeadline(published, 5_000, "the departing clients unregistered");
    assert.equal(pendingAtPublish, DEPARTING * (OWN_FILTERS + 1), "every listener still waits");
    await live.wire.waitForCount("publish", 2);
    await removalsDone(started);
    assert.equal((await messagesSent(started)) - sentBefore, 2, "the live subscriber's two only");
    assert.deepEqual(errors, []);
    for (const { wire } of departing) assert.equal(wire.received("publish").length, 0);
  });

  it("of a clean session are announced as aedes announces them (its 'unsubscribe' event); a persistent session's are not", async () => {
    const started = await Engine.start();
    engine = started;
    const announced: Array<{ clientId: string; filters: string[] }> = [];
    started.broker.on("unsubscribe", (filters: string[], client: Client) =>
      announced.push({ clientId: client.id, filters }),
    );
    const clean = await started.connect("announced-clean");
    const persistent = await started.connect("announced-persistent", { clean: false });
    for (const { wire } of [clean, persistent]) {
      wire.send(subscribe("announced/a", 1, 1), subscribe("announced/b", 0, 2));
      await wire.waitForCount("suback", 2);
    }
    const left = disconnected(started, 2);
    for (const { wire } of [clean, persistent]) wire.send({ cmd: "disconnect" });
    await withDeadline(left, 5_000, "both clients unregistered");
    await removalsDone(started);
    assert.deepEqual(announced, [
      { clientId: "announced-clean", filters: ["announced/a", "announced/b"] },
    ]);
  });

  it("are removed at most 1,000 a turn, all of them", async () => {
    const started = await Engine.start();
    engine = started;
    const departing: EngineConnection[] = [];
    for (let i = 0; i < DEPARTING; i++) {
      const connection = await started.connect(`paced-${i}`);
      await subscribeMany(connection, i);
      departing.push(connection);
    }
    const total = DEPARTING * (OWN_FILTERS + 1);
    const left = disconnected(started, DEPARTING);
    for (const { wire } of departing) wire.send({ cmd: "disconnect" });
    await withDeadline(left, 5_000, "the departing clients unregistered");
    const seen = await pendingPerTurn(started, 10 * Math.ceil(total / REMOVALS_AT_ONCE));
    assert.equal(seen[0], total, "nothing removed in the turn the clients left");
    assert.equal(seen[seen.length - 1], 0, "every listener removed");
    for (let turn = 1; turn < seen.length; turn++) {
      const removed = (seen[turn - 1] ?? 0) - (seen[turn] ?? 0);
      assert.ok(removed <= REMOVALS_AT_ONCE, `${removed} removals in one turn`);
    }
  });
});
