import assert from "node:assert/strict";
import { test } from "node:test";
import { pino } from "pino";
import { type Delivery, memberToken } from "../../src/shared-subscriptions/group-store.js";
import { MemoryGroupStore } from "../../src/shared-subscriptions/memory-group-store.js";
import {
  type MemberLinks,
  SharedDispatcher,
  type SharedMetrics,
} from "../../src/shared-subscriptions/shared-dispatcher.js";

/**
 * Two nodes' dispatchers over one store (the in-memory one: every node alive). Node A publishes,
 * the member is on node B: A assigns each message to the member's queue and forwards it to B.
 * B also reads the queue on every refresh (resend). Forwards and queue reads do not share an
 * order in a cluster (pub/sub against the state connection), so a forward can reach B after
 * B's resend sent the entry and the member acknowledged it: B must not send it again.
 */
const GROUP_TOPIC = "$share/g/plant/+";
const GROUP = "g/plant/+";
const silent = pino({ level: "silent" });
const metrics: SharedMetrics = { delivered() {}, redelivered() {}, dropped() {}, ended() {} };

async function until(condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = performance.now() + 5_000;
  while (!(await condition())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

test("a forwarded delivery arriving after a resend sent it (and it was acknowledged) is not sent again", async () => {
  const store = new MemoryGroupStore({ maxQueued: 100, maxGroups: 10 });
  const dispatcher = (nodeId: string) =>
    new SharedDispatcher({
      nodeId,
      store,
      strategyOf: () => "round_robin",
      maxGroups: 10,
      metrics,
      log: silent,
    });
  const a = dispatcher("a");
  const b = dispatcher("b");
  const token = memberToken("b", "c1", false);
  const forwarded: Delivery[] = [];
  const written: string[] = [];
  const linksA: MemberLinks = {
    deliver: () => false,
    isLive: () => false,
    released: async () => new Set(),
    forward: (_node, _group, delivery) => forwarded.push(delivery),
    announce() {},
  };
  const linksB: MemberLinks = {
    deliver(delivery, _topic, _origin, acknowledged) {
      written.push(delivery.entryId);
      acknowledged();
      return true;
    },
    isLive: (t) => t === token,
    released: async () => new Set(),
    forward() {},
    announce() {},
  };
  b.start(linksB);
  await b.stop();
  await b.join("member-1", token, [GROUP_TOPIC]);
  a.start(linksA);
  await until(() => a.view().some((g) => g.name === GROUP && g.members === 1), "A's view");
  await a.stop();

  await a.publish({ topic: "plant/1", qos: 1, publisherId: undefined }, () => Buffer.from("m"));
  assert.equal(forwarded.length, 1, "A forwarded the delivery to B");
  const delivery = forwarded[0] as Delivery;

  // B reads the member's queue before the forward arrives, sends it, the member acknowledges
  await b.resend();
  assert.deepEqual(written, [delivery.entryId]);
  await until(
    async () => (await store.pending(GROUP, "member-1", token)).length === 0,
    "the acknowledgement to reach the store",
  );
  await new Promise((resolve) => setImmediate(resolve));

  // ... and then the forward arrives
  b.receive(GROUP, delivery);
  assert.deepEqual(written, [delivery.entryId], "sent to the member once");
});

test("a forwarded delivery still goes to its member when no resend sent it", async () => {
  const store = new MemoryGroupStore({ maxQueued: 100, maxGroups: 10 });
  const b = new SharedDispatcher({
    nodeId: "b",
    store,
    strategyOf: () => "round_robin",
    maxGroups: 10,
    metrics,
    log: silent,
  });
  const token = memberToken("b", "c1", false);
  const written: string[] = [];
  b.start({
    deliver(delivery, _topic, _origin, acknowledged) {
      written.push(delivery.entryId);
      acknowledged();
      return true;
    },
    isLive: (t) => t === token,
    released: async () => new Set(),
    forward() {},
    announce() {},
  });
  await b.stop();
  await b.join("member-1", token, [GROUP_TOPIC]);
  const assigned = await store.assign(GROUP, "member-1", Buffer.from("m"), true);
  assert.equal(assigned.to, "member");
  if (assigned.to !== "member") return;
  b.receive(GROUP, { ...assigned, message: Buffer.from("m") });
  b.receive(GROUP, { ...assigned, message: Buffer.from("m") });
  assert.deepEqual(written, [assigned.entryId], "once, however often it is forwarded meanwhile");
});
