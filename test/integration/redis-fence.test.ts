import assert from "node:assert/strict";
import { once } from "node:events";
import { after, before, describe, it } from "node:test";
import { Redis } from "ioredis";
import { withDeadline } from "../../harness/deadline.js";
import { LogCapture } from "../../harness/log-capture.js";
import { RedisServer } from "../../harness/redis-server.js";
import { RedisFence } from "../../src/cluster/redis-fence.js";

/**
 * The fence against a real Redis that stops answering (CLIENT PAUSE: the connection stays open
 * and silent, as in a partition); the chaos tests cut real links (chaos-redis-cut).
 */
describe("Redis fence", () => {
  let redis: RedisServer;
  let connection: Redis;
  before(async () => {
    redis = await RedisServer.start();
    connection = new Redis(redis.url, { maxRetriesPerRequest: 3 });
  });
  after(async () => {
    connection?.disconnect();
    await redis?.kill();
  });

  it("fences after afterMs without an answer, and lifts at the first answer after", async () => {
    const capture = new LogCapture();
    const seen: { roundTrips: number[]; fenced: boolean[] } = { roundTrips: [], fenced: [] };
    let threeRoundTrips: () => void = () => {};
    const timed = new Promise<void>((resolve) => {
      threeRoundTrips = resolve;
    });
    const fence = new RedisFence(
      connection,
      { probeMs: 100, afterMs: 1_000 },
      {
        observeRedisRoundTrip: (seconds) => {
          seen.roundTrips.push(seconds);
          if (seen.roundTrips.length === 3) threeRoundTrips();
        },
        setFenced: (fenced) => seen.fenced.push(fenced),
      },
      capture.logger,
    );
    fence.start();
    try {
      await withDeadline(timed, 5_000, "three round trips");
      assert.ok(
        seen.roundTrips.every((s) => s >= 0 && s < 1),
        "round trips in seconds",
      );
      assert.equal(fence.fenced, false);
      const pausedAt = performance.now();
      assert.equal(await redis.command("CLIENT", "PAUSE", "2500", "ALL"), "+OK");
      await withDeadline(once(fence, "fenced"), 5_000, "fenced");
      const fencedAfter = performance.now() - pausedAt;
      assert.ok(fencedAfter >= 1_000 && fencedAfter < 1_800, `fenced after ${fencedAfter} ms`);
      assert.equal(fence.fenced, true);
      await withDeadline(once(fence, "unfenced"), 5_000, "unfenced");
      assert.ok(performance.now() - pausedAt >= 2_400, "not before Redis answers");
      assert.equal(fence.fenced, false);
      assert.deepEqual(seen.fenced, [false, true, false]);
      const events = capture.lines.map((l) => l.event).filter((e) => e?.startsWith("redis."));
      assert.deepEqual(events, ["redis.fenced", "redis.unfenced"]);
    } finally {
      fence.stop();
    }
  });
});
