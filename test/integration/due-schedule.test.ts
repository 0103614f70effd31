import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { Cluster, Redis } from "ioredis";
import { pino } from "pino";
import { withDeadline } from "../../harness/deadline.js";
import { RedisCluster } from "../../harness/redis-cluster.js";
import { RedisServer } from "../../harness/redis-server.js";
import { DueSchedule, type DueScheduleOptions } from "../../src/cluster/due-schedule.js";
import type { RedisClient } from "../../src/redis/redis-client.js";

/**
 * The cluster-wide timers against a real Redis and a real Redis Cluster: several nodes' schedules
 * poll one sorted set, and every member is handled once, after it fell due, by one of them.
 */
const silent = pino({ level: "silent" });

interface Target {
  name: string;
  start(): Promise<{ connect(): RedisClient; stop(): Promise<void> }>;
}

const targets: Target[] = [
  {
    name: "Redis",
    async start() {
      const server = await RedisServer.start();
      return { connect: () => new Redis(server.url), stop: () => server.stop() };
    },
  },
  {
    name: "Redis Cluster",
    async start() {
      const cluster = await RedisCluster.start();
      return { connect: () => new Cluster(cluster.nodes), stop: () => cluster.stop() };
    },
  },
];

/** Resolves when `count` calls were recorded. */
function counter(count: number): {
  record(member: string): void;
  reached: Promise<void>;
  seen: string[];
} {
  const seen: string[] = [];
  let resolve = () => {};
  const reached = new Promise<void>((r) => {
    resolve = r;
  });
  return {
    seen,
    reached,
    record(member) {
      seen.push(member);
      if (seen.length >= count) resolve();
    },
  };
}

for (const target of targets) {
  describe(`due schedule (${target.name})`, () => {
    let connect: () => RedisClient;
    let stop: () => Promise<void>;
    const connections: RedisClient[] = [];
    const schedules: DueSchedule[] = [];

    const schedule = (
      key: string,
      onDue: DueScheduleOptions["onDue"],
      options: Partial<DueScheduleOptions> = {},
    ): DueSchedule => {
      const redis = connect();
      connections.push(redis);
      const made = new DueSchedule({
        redis,
        key,
        leaseMs: 2_000,
        pollMs: 25,
        batch: 8,
        log: silent,
        onDue,
        ...options,
      });
      schedules.push(made);
      return made;
    };
    const newKey = () => `due-test:{${randomBytes(4).toString("hex")}}`;

    before(async () => {
      ({ connect, stop } = await target.start());
    });
    after(async () => {
      await Promise.allSettled(schedules.map((s) => s.stop()));
      for (const redis of connections) redis.disconnect();
      await stop?.();
    });

    it("three nodes polling: each of 60 members is handled once, not before it fell due", async () => {
      const key = newKey();
      const handled = counter(60);
      const early: string[] = [];
      const dueAt = new Map<string, number>();
      const nodes = [0, 1, 2].map(() =>
        schedule(key, async (member) => {
          const now = await probe.time();
          if (now < (dueAt.get(member) ?? Number.POSITIVE_INFINITY)) early.push(member);
          handled.record(member);
          return true;
        }),
      );
      const probe = redisClock(connect());
      connections.push(probe.redis);
      const members = Array.from({ length: 60 }, (_, i) => `client-${i}`);
      await nodes[0]?.schedule(members.map((m, i) => [m, 100 + (i % 6) * 50] as const));
      for (const member of members) dueAt.set(member, (await nodes[0]?.dueAt(member)) ?? 0);
      for (const node of nodes) node.start();
      await withDeadline(handled.reached, 10_000, "60 members handled");
      await Promise.all(nodes.map((n) => n.stop()));
      assert.deepEqual(early, [], "no member handled before it fell due");
      assert.equal(handled.seen.length, 60, "each member handled once");
      assert.equal(new Set(handled.seen).size, 60);
      assert.equal(await probe.redis.zcard(key), 0, "handled members are removed");
    });

    it("a member its claimer never completes falls due again, after the lease, for another node", async () => {
      const key = newKey();
      let claimedAt = 0;
      const dying = schedule(
        key,
        async () => {
          claimedAt = await probe.time();
          return false;
        },
        { leaseMs: 400 },
      );
      const probe = redisClock(connect());
      connections.push(probe.redis);
      await dying.schedule([["pump-7", 0]]);
      assert.equal(await dying.pollOnce(), 0, "the dying node claimed it and did not complete it");
      const survivorHandled = counter(1);
      let handledAt = 0;
      const survivor = schedule(key, async (member) => {
        handledAt = await probe.time();
        survivorHandled.record(member);
        return true;
      });
      survivor.start();
      await withDeadline(survivorHandled.reached, 5_000, "the survivor handles the member");
      assert.deepEqual(survivorHandled.seen, ["pump-7"]);
      // claimedAt is read after the claim, a round trip later: the lease ran from the claim
      assert.ok(
        handledAt - claimedAt >= 390,
        `handled ${handledAt - claimedAt} ms after the claim`,
      );
    });

    it("a cancelled member is never handled; one scheduled again while handled stays scheduled", async () => {
      const key = newKey();
      const handled = counter(3);
      let node: DueSchedule | undefined;
      node = schedule(key, async (member) => {
        handled.record(member);
        // The client disconnected again while its first timer was being handled.
        if (member === "moved" && handled.seen.filter((m) => m === "moved").length === 1) {
          await node?.schedule([["moved", 150]]);
        }
        return true;
      });
      await node.schedule([
        ["cancelled", 100],
        ["moved", 100],
        ["control", 300],
      ]);
      assert.equal(await node.cancel(["cancelled"]), 1);
      node.start();
      await withDeadline(handled.reached, 5_000, "control and moved (twice) handled");
      await node.stop();
      assert.deepEqual(
        [...handled.seen].sort(),
        ["control", "moved", "moved"],
        "the cancelled member never ran; the moved one ran again at its new time",
      );
    });

    it("a handler that throws leaves its member to fall due again", async () => {
      const key = newKey();
      let calls = 0;
      const handled = counter(1);
      const node = schedule(
        key,
        async (member) => {
          calls += 1;
          if (calls === 1) throw new Error("Redis went away mid-handler");
          handled.record(member);
          return true;
        },
        { leaseMs: 200 },
      );
      await node.schedule([["flaky", 0]]);
      node.start();
      await withDeadline(handled.reached, 5_000, "handled on the second try");
      assert.equal(calls, 2);
    });
  });
}

/** Redis' clock in ms, which the schedule uses. */
function redisClock(redis: RedisClient): { redis: RedisClient; time(): Promise<number> } {
  return {
    redis,
    async time() {
      const node = redis instanceof Cluster ? (redis.nodes("master")[0] ?? redis) : redis;
      const [seconds, micros] = (await (node as Redis).time()) as [
        string | number,
        string | number,
      ];
      return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    },
  };
}
