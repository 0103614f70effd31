import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { Redis } from "ioredis";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { LogCapture } from "../../harness/log-capture.js";
import { RedisCluster } from "../../harness/redis-cluster.js";
import { RedisSentinels } from "../../harness/redis-sentinel.js";
import { RedisServer } from "../../harness/redis-server.js";
import type { LogLine } from "../../harness/sluice-process.js";

/**
 * At start a node reads Redis' `client-output-buffer-limit` and warns when the pubsub hard
 * limit would let Redis cut its subscription before its own bounds act (below 64 MiB).
 */
const DEADLINE_MS = 20_000;
const LOW = "redis.output_buffer_limit_low";
const OK = "redis.output_buffer_limit_ok";
const UNCHECKED = "redis.output_buffer_limit_unchecked";

/** Starts a node over `redis` (a config block), runs `check` on its log, and stops it. */
async function withNode(
  redis: Record<string, unknown>,
  check: (log: LogCapture) => Promise<void>,
): Promise<void> {
  const log = new LogCapture();
  let node: RunningNode | undefined;
  try {
    node = await startNode(
      { redis: { keyPrefix: `obl${randomBytes(4).toString("hex")}:`, ...redis } },
      process.cwd(),
      { logger: log.logger },
    );
    await check(log);
  } finally {
    await node?.stop();
  }
}

function waitForEvent(log: LogCapture, event: string): Promise<LogLine> {
  return withDeadline(
    log.waitFor((line) => line.event === event),
    DEADLINE_MS,
    `log line ${event}`,
  );
}

async function configSet(port: number, limit: string): Promise<void> {
  const admin = new Redis({ host: "127.0.0.1", port, lazyConnect: true });
  try {
    await admin.config("SET", "client-output-buffer-limit", limit);
  } finally {
    admin.disconnect();
  }
}

const linesOf = (log: LogCapture, event: string) => log.lines.filter((l) => l.event === event);

describe("the pubsub output buffer limit, checked at start", () => {
  it("warns once, naming the limit found and the one wanted, at Redis' default (32mb)", async () => {
    const redis = await RedisServer.start();
    try {
      await withNode({ url: redis.url }, async (log) => {
        const line = await waitForEvent(log, LOW);
        assert.equal(line.level, 40, "warn");
        assert.equal(line.found, "pubsub 32mb 8mb 60");
        assert.match(String(line.wanted), /at least 64mb, or 0/);
        assert.equal(line.redis, `127.0.0.1:${redis.port}`);
        assert.equal(linesOf(log, LOW).length, 1);
      });
    } finally {
      await redis.stop();
    }
  });

  it("says nothing at warn when the limit is high enough", async () => {
    const redis = await RedisServer.start();
    try {
      assert.equal(
        await redis.command("CONFIG", "SET", "client-output-buffer-limit", "pubsub 256mb 64mb 60"),
        "+OK",
      );
      await withNode({ url: redis.url }, async (log) => {
        const line = await waitForEvent(log, OK);
        assert.equal(line.found, "pubsub 256mb 64mb 60");
        assert.deepEqual(linesOf(log, LOW), []);
        assert.deepEqual(linesOf(log, UNCHECKED), []);
      });
    } finally {
      await redis.stop();
    }
  });

  it("takes a hard limit of 0 (none) as enough", async () => {
    const redis = await RedisServer.start({
      args: ["--client-output-buffer-limit", "pubsub 0 8mb 60"],
    });
    try {
      await withNode({ url: redis.url }, async (log) => {
        assert.equal((await waitForEvent(log, OK)).found, "pubsub 0 8mb 60");
        assert.deepEqual(linesOf(log, LOW), []);
      });
    } finally {
      await redis.stop();
    }
  });

  it("logs once, at info, that it could not check when Redis refuses CONFIG (as managed Redis does)", async () => {
    const redis = await RedisServer.start();
    try {
      const password = randomBytes(12).toString("hex");
      assert.equal(
        await redis.command(
          "ACL",
          "SETUSER",
          "sluice",
          "on",
          `>${password}`,
          "~*",
          "&*",
          "+@all",
          "-config",
        ),
        "+OK",
      );
      await withNode({ url: redis.url, username: "sluice", password }, async (log) => {
        const line = await waitForEvent(log, UNCHECKED);
        assert.equal(line.level, 30, "info");
        assert.match(JSON.stringify(line.servers), /NOPERM/);
        assert.equal(linesOf(log, UNCHECKED).length, 1);
        assert.deepEqual(linesOf(log, LOW), []);
        assert.equal(JSON.stringify(log.lines).includes(password), false, "no password logged");
      });
    } finally {
      await redis.stop();
    }
  });

  it("under Sentinel, checks the primary the Sentinels name", async () => {
    const sentinels = await RedisSentinels.start("sluice-obl");
    try {
      // Only the replica has a high limit: a check of the replica would find nothing to say.
      await configSet(sentinels.replicaPort, "pubsub 256mb 64mb 60");
      await withNode({ sentinels: sentinels.endpoints, name: sentinels.name }, async (log) => {
        const line = await waitForEvent(log, LOW);
        assert.equal(line.redis, `127.0.0.1:${sentinels.primaryPort}`);
        assert.equal(linesOf(log, LOW).length, 1);
        assert.deepEqual(linesOf(log, OK), []);
      });
    } finally {
      await sentinels.stop();
    }
  });

  it("on a Redis Cluster, checks every node and names the one whose limit is low", async () => {
    const cluster = await RedisCluster.start();
    try {
      const [low, ...high] = cluster.ports;
      for (const port of high) await configSet(port, "pubsub 256mb 64mb 60");
      await withNode({ cluster: cluster.nodes }, async (log) => {
        const line = await waitForEvent(log, LOW);
        assert.equal(line.redis, `127.0.0.1:${low}`);
        await withDeadline(
          log.waitFor(() => linesOf(log, OK).length === high.length),
          DEADLINE_MS,
          "the other nodes checked",
        );
        assert.deepEqual(
          linesOf(log, OK)
            .map((l) => l.redis)
            .sort(),
          high.map((p) => `127.0.0.1:${p}`).sort(),
        );
        assert.equal(linesOf(log, LOW).length, 1);
      });
    } finally {
      await cluster.stop();
    }
  });
});
