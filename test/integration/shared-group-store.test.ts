import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { Cluster, Redis } from "ioredis";
import { RedisCluster } from "../../harness/redis-cluster.js";
import { RedisServer } from "../../harness/redis-server.js";
import { NODE_LEASE_KEY_PREFIX } from "../../src/cluster/node-registry.js";
import { RedisGroupStore } from "../../src/cluster/redis-group-store.js";
import type { RedisClient } from "../../src/redis/redis-client.js";
import {
  type Assignment,
  type Delivery,
  memberToken,
  type SharedGroupStore,
} from "../../src/shared-subscriptions/group-store.js";
import {
  type GroupLimits,
  MemoryGroupStore,
} from "../../src/shared-subscriptions/memory-group-store.js";

/**
 * The shared group store's contract (src/shared-subscriptions/group-store.ts), one set of cases
 * run against the node-alone store and the Redis one (a single redis-server, and a Redis
 * Cluster with the state connection's `{state}` prefix), so that the two cannot drift.
 */
const LIMITS: GroupLimits = { maxQueued: 3, maxGroups: 2 };
const G = "work/jobs/#";
const H = "other/jobs/#";
const ALIVE = "node-a";
const ALSO_ALIVE = "node-b";

const tokenA = (connection: string, persistent = false) =>
  memberToken(ALIVE, connection, persistent);
const tokenB = (connection: string, persistent = false) =>
  memberToken(ALSO_ALIVE, connection, persistent);

interface Fixture {
  store: SharedGroupStore;
  close(): Promise<void>;
}

type MakeStore = () => Promise<Fixture>;

const msg = (text: string) => Buffer.from(text);
const texts = (deliveries: readonly Delivery[]) => deliveries.map((d) => d.message.toString());

function member(assignment: Assignment): { member: string; token: string; entryId: string } {
  assert.equal(assignment.to, "member", `assigned to a member: ${JSON.stringify(assignment)}`);
  return assignment as { member: string; token: string; entryId: string };
}

async function membersOf(store: SharedGroupStore, name: string): Promise<string[] | undefined> {
  const state = (await store.snapshot()).find((s) => s.name === name);
  return state?.members.map((m) => `${m.clientId}=${m.token}`);
}

function contract(label: string, make: () => MakeStore): void {
  describe(`shared group store contract: ${label}`, () => {
    let fresh: MakeStore;
    const open: Fixture[] = [];
    before(() => {
      fresh = make();
    });
    after(async () => {
      for (const fixture of open) await fixture.close();
    });
    const store = async (): Promise<SharedGroupStore> => {
      const fixture = await fresh();
      open.push(fixture);
      return fixture.store;
    };

    it("a join makes the group; members come sorted, with their tokens; an unknown group takes nothing", async () => {
      const s = await store();
      assert.deepEqual(await s.assign(G, undefined, msg("x"), true), { to: "none" });
      assert.deepEqual(await s.join(G, "m2", tokenB("c2")), { refused: false, pending: [] });
      assert.deepEqual(await s.join(G, "m1", tokenA("c1")), { refused: false, pending: [] });
      assert.deepEqual(await s.snapshot(), [
        {
          name: G,
          members: [
            { clientId: "m1", token: tokenA("c1") },
            { clientId: "m2", token: tokenB("c2") },
          ],
          backlog: 0,
        },
      ]);
    });

    it("assigns to the proposed member and keeps QoS 1/2 until acknowledged; QoS 0 is not kept", async () => {
      const s = await store();
      await s.join(G, "m1", tokenA("c1"));
      await s.join(G, "m2", tokenB("c2"));
      const first = member(await s.assign(G, "m2", msg("one"), true));
      assert.equal(first.member, "m2");
      assert.equal(first.token, tokenB("c2"));
      assert.notEqual(first.entryId, "");
      const second = member(await s.assign(G, "m2", msg("two"), true));
      assert.notEqual(second.entryId, first.entryId);
      assert.deepEqual(texts(await s.pending(G, "m2", tokenB("c2"))), ["one", "two"], "in order");
      await s.acknowledge(G, "m2", [first.entryId]);
      const left = await s.pending(G, "m2", tokenB("c2"));
      assert.deepEqual(
        left.map((d) => [d.member, d.token, d.entryId, d.message.toString()]),
        [["m2", tokenB("c2"), second.entryId, "two"]],
      );
      const zero = member(await s.assign(G, "m1", msg("zero"), false));
      assert.deepEqual(zero, {
        to: "member",
        member: "m1",
        token: tokenA("c1"),
        entryId: "",
        origin: "",
      });
      assert.deepEqual(await s.pending(G, "m1", tokenA("c1")), [], "QoS 0 is not kept");
      await s.acknowledge(G, "m2", []);
    });

    it("a proposal that is no member, or whose queue is full, goes to the least loaded member; all full drops", async () => {
      const s = await store();
      await s.join(G, "m1", tokenA("c1"));
      await s.join(G, "m2", tokenB("c2"));
      assert.equal(member(await s.assign(G, "m1", msg("a"), true)).member, "m1");
      assert.equal(member(await s.assign(G, "nobody", msg("b"), true)).member, "m2");
      assert.equal(member(await s.assign(G, "m1", msg("c"), true)).member, "m1");
      assert.equal(member(await s.assign(G, "m1", msg("d"), true)).member, "m1");
      // m1 holds 3 (the cap), m2 1: no proposal, or m1's, goes to m2 until m2 is full too.
      assert.equal(member(await s.assign(G, undefined, msg("e"), true)).member, "m2");
      assert.equal(member(await s.assign(G, "m1", msg("f"), true)).member, "m2");
      assert.deepEqual(await s.assign(G, "m1", msg("g"), true), {
        to: "dropped",
        reason: "queue_full",
      });
      // QoS 0 is not kept, so a full queue does not refuse it.
      assert.equal(member(await s.assign(G, "m1", msg("h"), false)).member, "m1");
    });

    it("no member online: a backlog up to the cap, then dropped; the next member takes it, in order", async () => {
      const s = await store();
      await s.join(G, "p", tokenA("c1", true));
      // A persistent session's connection is gone: registered, not online.
      assert.deepEqual(await s.leave(G, "p", tokenA("c1", true), false), {
        moved: [],
        dropped: 0,
        ended: false,
      });
      assert.deepEqual(await membersOf(s, G), [], "the group stays, with no member online");
      for (const text of ["b1", "b2", "b3"]) {
        assert.deepEqual(await s.assign(G, "p", msg(text), true), { to: "backlog" });
      }
      assert.deepEqual(await s.assign(G, "p", msg("b4"), true), {
        to: "dropped",
        reason: "backlog_full",
      });
      assert.equal((await s.snapshot())[0]?.backlog, 3);
      const joined = await s.join(G, "p", tokenB("c2", true));
      assert.equal(joined.refused, false);
      assert.deepEqual(texts(joined.pending), ["b1", "b2", "b3"]);
      assert.ok(joined.pending.every((d) => d.member === "p" && d.token === tokenB("c2", true)));
      assert.equal((await s.snapshot())[0]?.backlog, 0);
    });

    it("a leaving member's queue goes back to the backlog (no other member online), in order", async () => {
      const s = await store();
      await s.join(G, "p", tokenA("c1", true));
      await s.leave(G, "p", tokenA("c1", true), false);
      for (const text of ["b1", "b2"]) await s.assign(G, undefined, msg(text), true);
      assert.deepEqual(texts((await s.join(G, "q", tokenA("c2"))).pending), ["b1", "b2"]);
      assert.equal(member(await s.assign(G, "q", msg("q1"), true)).member, "q");
      assert.deepEqual(await s.leave(G, "q", tokenA("c2"), true), {
        moved: [],
        dropped: 0,
        ended: false,
      });
      assert.equal((await s.snapshot())[0]?.backlog, 3);
      assert.deepEqual(texts((await s.join(G, "r", tokenB("c3"))).pending), ["b1", "b2", "q1"]);
    });

    it("a leaving member's queue moves to the other online members with room, in turn; the rest is dropped", async () => {
      const s = await store();
      await s.join(G, "m1", tokenA("c1"));
      await s.join(G, "m2", tokenA("c2"));
      await s.join(G, "m3", tokenB("c3"));
      const held = [];
      for (const text of ["x1", "x2", "x3"])
        held.push(member(await s.assign(G, "m1", msg(text), true)));
      assert.ok(held.every((a) => a.member === "m1"));
      await s.assign(G, "m3", msg("m3-own"), true);
      await s.assign(G, "m3", msg("m3-own2"), true);
      await s.acknowledge(G, "m1", [held[0]?.entryId as string]);
      const left = await s.leave(G, "m1", tokenA("c1"), true);
      assert.equal(left.dropped, 0);
      assert.deepEqual(texts(left.moved).sort(), ["x2", "x3"], "only what was not acknowledged");
      assert.deepEqual(left.moved.map((d) => d.member).sort(), ["m2", "m3"], "spread in turn");
      for (const d of left.moved) {
        assert.equal(d.token, d.member === "m2" ? tokenA("c2") : tokenB("c3"));
        const pending = await s.pending(G, d.member, d.token);
        assert.ok(
          pending.some((p) => p.entryId === d.entryId && p.message.equals(d.message)),
          "kept in the new member's queue under the entry id given",
        );
      }
      assert.deepEqual(await s.pending(G, "m1", tokenA("c1")), [], "the leaver's queue is gone");
      assert.deepEqual(await membersOf(s, G), [`m2=${tokenA("c2")}`, `m3=${tokenB("c3")}`]);
      // m2 and m3 now hold 1 and 3: m2 takes two more, and the third finds no room.
      for (const text of ["y1", "y2", "y3"]) await s.assign(G, "m2", msg(text), true);
      const again = await s.leave(G, "m2", tokenA("c2"), true);
      assert.equal(again.moved.length + again.dropped, 3, "each message moved or dropped");
      assert.equal(again.dropped, 3, "m3 is full: nothing fits");
    });

    it("the last session to leave ends the group: what it held is dropped, and the group's room is free", async () => {
      const s = await store();
      await s.join(G, "m1", tokenA("c1"));
      await s.join(H, "n1", tokenA("c2"));
      assert.deepEqual(await s.join("third/#", "o1", tokenA("c3")), { refused: true, pending: [] });
      // An existing group still takes members at the quota.
      assert.equal((await s.join(G, "m2", tokenB("c4"))).refused, false);
      await s.assign(G, "m1", msg("a"), true);
      assert.deepEqual(await s.leave(G, "m2", tokenB("c4"), true), {
        moved: [],
        dropped: 0,
        ended: false,
      });
      assert.deepEqual(await s.leave(G, "m1", tokenA("c1"), true), {
        moved: [],
        dropped: 1,
        ended: true,
      });
      assert.deepEqual(
        (await s.snapshot()).map((state) => state.name),
        [H],
        "the group is gone",
      );
      assert.deepEqual(await s.assign(G, undefined, msg("b"), true), { to: "none" });
      assert.equal((await s.join("third/#", "o1", tokenA("c3"))).refused, false, "room again");
    });

    it("takeover: a newer connection keeps membership and queue; the older one's leave does nothing", async () => {
      const s = await store();
      await s.join(G, "m1", tokenA("c1", true));
      await s.join(G, "m2", tokenB("c2"));
      const kept = member(await s.assign(G, "m1", msg("in-flight"), true));
      const joined = await s.join(G, "m1", tokenB("c3", true));
      assert.deepEqual(
        joined.pending.map((d) => [d.entryId, d.message.toString(), d.token]),
        [[kept.entryId, "in-flight", tokenB("c3", true)]],
        "the newer connection gets what the older one had not acknowledged",
      );
      assert.deepEqual(await s.leave(G, "m1", tokenA("c1", true), false), {
        moved: [],
        dropped: 0,
        ended: false,
      });
      assert.deepEqual(await s.leave(G, "m1", tokenA("c1", true), true), {
        moved: [],
        dropped: 0,
        ended: false,
      });
      assert.deepEqual(await membersOf(s, G), [`m1=${tokenB("c3", true)}`, `m2=${tokenB("c2")}`]);
      assert.deepEqual(texts(await s.pending(G, "m1", tokenB("c3", true))), ["in-flight"]);
      const next = member(await s.assign(G, "m1", msg("next"), true));
      assert.equal(next.token, tokenB("c3", true), "new messages go to the newer connection");
    });

    it("liveNodes answers for the nodes whose lease is held", async () => {
      const s = await store();
      assert.deepEqual(await s.liveNodes([]), new Set());
      assert.deepEqual(await s.liveNodes([ALIVE, ALSO_ALIVE]), new Set([ALIVE, ALSO_ALIVE]));
    });
  });
}

contract("memory", () => async () => ({
  store: new MemoryGroupStore(LIMITS),
  close: async () => {},
}));

/** A Redis store under a fresh key prefix, with leases held for the two nodes of the cases. */
async function redisFixture(client: RedisClient): Promise<Fixture> {
  await client.set(`${NODE_LEASE_KEY_PREFIX}${ALIVE}`, "lease");
  await client.set(`${NODE_LEASE_KEY_PREFIX}${ALSO_ALIVE}`, "lease");
  return {
    store: new RedisGroupStore(client, LIMITS, NODE_LEASE_KEY_PREFIX),
    close: async () => {
      client.disconnect();
    },
  };
}

let server: RedisServer | undefined;
contract("Redis", () => async () => {
  server ??= await RedisServer.start();
  const url = server.url;
  return redisFixture(new Redis(url, { keyPrefix: `gs${randomBytes(4).toString("hex")}:` }));
});

let cluster: RedisCluster | undefined;
contract("Redis Cluster", () => async () => {
  cluster ??= await RedisCluster.start();
  const client = new Cluster(cluster.nodes, {
    keyPrefix: `gs${randomBytes(4).toString("hex")}{state}:`,
  });
  return redisFixture(client);
});

describe("Redis store: a member of a dead node", () => {
  it("gets no assignment once its node's lease is gone, and its queue moves on its leave", async () => {
    server ??= await RedisServer.start();
    const client = new Redis(server.url, { keyPrefix: `gs${randomBytes(4).toString("hex")}:` });
    try {
      const { store } = await redisFixture(client);
      await store.join(G, "m1", tokenA("c1"));
      await store.join(G, "m2", tokenB("c2"));
      await store.assign(G, "m1", msg("held"), true);
      await client.del(`${NODE_LEASE_KEY_PREFIX}${ALIVE}`);
      assert.deepEqual(await store.liveNodes([ALIVE, ALSO_ALIVE]), new Set([ALSO_ALIVE]));
      assert.equal(member(await store.assign(G, "m1", msg("next"), true)).member, "m2");
      const left = await store.leave(G, "m1", tokenA("c1"), true);
      assert.deepEqual(
        left.moved.map((d) => [d.member, d.message.toString()]),
        [["m2", "held"]],
      );
      // With every member's node dead, messages wait in the backlog.
      await client.del(`${NODE_LEASE_KEY_PREFIX}${ALSO_ALIVE}`);
      assert.deepEqual(await store.assign(G, "m2", msg("later"), true), { to: "backlog" });
    } finally {
      client.disconnect();
    }
  });
});

after(async () => {
  await server?.stop();
  await cluster?.stop();
});
