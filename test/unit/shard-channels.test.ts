import assert from "node:assert/strict";
import { describe, it } from "node:test";
import calculateSlot from "cluster-key-slot";
import { SHARD_CHANNEL_COUNT, ShardChannels, shardOf } from "../../src/cluster/shard-channels.js";

describe("shard channels (Redis Cluster pub/sub)", () => {
  it("names one channel per number, each with its own hash tag and so its own slot", () => {
    const channels = new ShardChannels("sluice:");
    assert.equal(channels.all.length, SHARD_CHANNEL_COUNT);
    assert.equal(channels.all[7], "sluice:pubsub:{7}");
    assert.deepEqual(
      channels.slots,
      channels.all.map((channel) => calculateSlot(channel)),
    );
    assert.equal(new Set(channels.slots).size, SHARD_CHANNEL_COUNT);
  });

  it("maps a topic always to the same channel: its messages from one node take one route", () => {
    assert.equal(shardOf("plant/line-1/temp"), 10);
    assert.equal(shardOf("a"), 44);
    assert.equal(shardOf(""), 5);
    assert.equal(shardOf("$SYS/x/heartbeat"), 24);
    const channels = new ShardChannels("p:");
    assert.equal(channels.of("plant/line-1/temp"), "p:pubsub:{10}");
  });

  it("spreads many topics over every channel", () => {
    const counts = new Array<number>(SHARD_CHANNEL_COUNT).fill(0);
    for (let i = 0; i < 6_400; i++) {
      const shard = shardOf(`site-${i % 7}/line-${i}/value`);
      counts[shard] = (counts[shard] ?? 0) + 1;
    }
    assert.ok(Math.min(...counts) > 50 && Math.max(...counts) < 150, counts.join(","));
  });
});
