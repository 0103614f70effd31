import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RedisServer } from "../helpers/redis-server.js";

/** The test harness's own real parts, checked before cluster tests build on them. */
describe("test harness: redis-server", () => {
  it("starts on a random non-standard loopback port, answers, stops, and comes back empty", async () => {
    const redis = await RedisServer.start();
    try {
      assert.notEqual(redis.port, 6379);
      assert.equal(await redis.command("PING"), "+PONG");
      assert.equal(await redis.command("SET", "k", "v"), "+OK");
      await redis.kill();
      await assert.rejects(redis.command("PING"), /ECONNREFUSED/);
      await redis.start();
      assert.equal(
        await redis.command("GET", "k"),
        "$-1",
        "a restart loses the data (no persistence)",
      );
    } finally {
      await redis.stop();
    }
  });
});
