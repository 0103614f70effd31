import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  formatLimit,
  isEnough,
  parseMemory,
  pubsubLimit,
  RECOMMENDED_PUBSUB_LIMIT,
  REQUIRED_PUBSUB_HARD_LIMIT_BYTES,
} from "../../src/redis/output-buffer-limit.js";

const MIB = 1024 * 1024;

describe("client-output-buffer-limit", () => {
  it("reads the pubsub class of CONFIG GET's reply (bytes)", () => {
    assert.deepEqual(
      pubsubLimit("normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60"),
      { hardBytes: 32 * MIB, softBytes: 8 * MIB, softSeconds: 60 },
    );
  });

  it("reads redis.conf's units: k/m/g in powers of 1000, kb/mb/gb of 1024, any case", () => {
    assert.deepEqual(pubsubLimit("pubsub 256mb 64MB 60"), {
      hardBytes: 256 * MIB,
      softBytes: 64 * MIB,
      softSeconds: 60,
    });
    assert.equal(parseMemory("1k"), 1_000);
    assert.equal(parseMemory("1kb"), 1024);
    assert.equal(parseMemory("2m"), 2_000_000);
    assert.equal(parseMemory("1Gb"), 1024 * MIB);
    assert.equal(parseMemory("12"), 12);
    assert.equal(parseMemory("12xb"), undefined);
    assert.equal(parseMemory("-1"), undefined);
  });

  it("has no limit without a well-formed pubsub class", () => {
    assert.equal(pubsubLimit("normal 0 0 0 slave 268435456 67108864 60"), undefined);
    assert.equal(pubsubLimit("pubsub 32mb 8mb"), undefined);
    assert.equal(pubsubLimit("pubsub lots 8mb 60"), undefined);
    assert.equal(pubsubLimit(""), undefined);
  });

  it("is enough from the required hard limit up, or with no hard limit (0)", () => {
    const limit = (hardBytes: number) => ({ hardBytes, softBytes: 8 * MIB, softSeconds: 60 });
    assert.equal(isEnough(limit(32 * MIB)), false, "Redis' default");
    assert.equal(isEnough(limit(REQUIRED_PUBSUB_HARD_LIMIT_BYTES - 1)), false);
    assert.equal(isEnough(limit(REQUIRED_PUBSUB_HARD_LIMIT_BYTES)), true);
    assert.equal(isEnough(limit(0)), true);
    const recommended = pubsubLimit(RECOMMENDED_PUBSUB_LIMIT);
    assert.ok(recommended && isEnough(recommended));
  });

  it("names a limit as redis.conf writes it", () => {
    assert.equal(
      formatLimit({ hardBytes: 32 * MIB, softBytes: 8 * MIB, softSeconds: 60 }),
      "pubsub 32mb 8mb 60",
    );
    assert.equal(formatLimit({ hardBytes: 0, softBytes: 1536, softSeconds: 0 }), "pubsub 0 1536 0");
    assert.equal(
      formatLimit({ hardBytes: 1000, softBytes: 2048, softSeconds: 5 }),
      "pubsub 1000 2kb 5",
    );
  });
});
