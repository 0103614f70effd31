import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { Redis } from "ioredis";
import { pino } from "pino";
import { withDeadline } from "../../harness/deadline.js";
import { RedisServer } from "../../harness/redis-server.js";
import { NODE_LEASE_KEY_PREFIX } from "../../src/cluster/node-registry.js";
import { SessionTimers } from "../../src/cluster/session-timers.js";

/**
 * SessionTimers' guards against a real Redis, with the registry's keys written as its scripts
 * write them: a timer never ends a session whose client a live node holds, and a connection
 * taken over by a newer one sets no timer.
 */
const silent = pino({ level: "silent" });

describe("session timers' guards", () => {
  let server: RedisServer;
  let redis: Redis;
  let timers: SessionTimers;
  let keyPrefix: string;
  let expiredCount = 0;
  before(async () => {
    server = await RedisServer.start();
    keyPrefix = `sg${randomBytes(4).toString("hex")}:`;
    redis = new Redis(server.url, { keyPrefix });
    timers = new SessionTimers(
      {
        redis,
        nodeId: "node-a",
        pollMs: 25,
        log: silent,
        onSessionExpired: () => {
          expiredCount += 1;
        },
      },
      NODE_LEASE_KEY_PREFIX,
    );
  });
  after(async () => {
    await timers?.stop();
    redis?.disconnect();
    await server?.stop();
  });

  it("a due expiry leaves a session whose client a live node owns, and expires the other", async () => {
    // "held" is connected to node-b, alive; "left" has no connection.
    await redis.set(`${NODE_LEASE_KEY_PREFIX}node-b`, "token", "PX", 60_000);
    await redis.hset("sessions", "held", "u:a", "left", "u:a");
    await redis.hset("owners", "held", "1|node-b|u:a");
    // Both fall due now, "held" first: its script runs before "left"'s wipe is reached.
    await timers.depart({
      clientId: "held",
      epoch: 2,
      sessionSeconds: 0.001,
      willDelaySeconds: 0.001,
    });
    await timers.depart({
      clientId: "left",
      epoch: 2,
      sessionSeconds: 0.01,
      willDelaySeconds: undefined,
    });
    const wiped: string[] = [];
    const willsOut: string[] = [];
    let leftWiped = () => {};
    const done = new Promise<void>((resolve) => {
      leftWiped = resolve;
    });
    await timers.start({
      publishWills: async (clientId) => {
        willsOut.push(clientId);
        return true;
      },
      wipe: async (clientId) => {
        wiped.push(clientId);
        if (clientId === "left") leftWiped();
      },
    });
    await withDeadline(done, 5_000, "left's expiry");
    assert.deepEqual(wiped, ["left"]);
    assert.equal(expiredCount, 1, "the one expiry counted");
    assert.deepEqual(willsOut, ["left"], "held's delayed will stays unpublished");
    assert.equal(await redis.hget("sessions", "held"), "u:a");
    assert.equal(await redis.hget("sessions", "left"), null);
    // Still scheduled, pushed back by the lease: tried again once the owner entry is settled.
    assert.notEqual(await redis.zscore("session-timers", "s|held"), null);
    assert.notEqual(await redis.zscore("session-timers", "w|held"), null);
  });

  it("a connection a newer one took over sets no timer and does not end the session", async () => {
    await redis.hset("sessions", "moved", "u:a");
    await redis.hset("owners", "moved", "20|node-b|u:a");
    const outcome = await timers.depart({
      clientId: "moved",
      epoch: 10,
      sessionSeconds: 0,
      willDelaySeconds: 5,
    });
    assert.equal(outcome, "superseded");
    assert.equal(await redis.zscore("session-timers", "s|moved"), null);
    assert.equal(await redis.zscore("session-timers", "w|moved"), null);
    assert.equal(await redis.hget("sessions", "moved"), "u:a");
  });
});
