import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Redis } from "ioredis";
import { pino } from "pino";
import { withDeadline } from "../../harness/deadline.js";
import { RedisServer } from "../../harness/redis-server.js";
import { SubscriptionLag } from "../../src/cluster/subscription-lag.js";

/**
 * Another node's "not reading" key, as the publishers' node watches it (SubscriptionLag) on a
 * real Redis: once seen, the key is looked at again within milliseconds until it is gone, so
 * that publishers held for that node go on as soon as it reads again, not at the next full
 * look (CLIENT LIST and the keys, here an hour apart).
 */
const NAME_A = "sluice/node-a/aaaa/subscriber";
const NAME_B = "sluice/node-b/bbbb/subscriber";
const pausedKey = (nodeId: string) => `rp:${nodeId}`;

let redis: RedisServer;
const connections: Redis[] = [];

before(async () => {
  redis = await RedisServer.start();
});
after(async () => {
  for (const connection of connections) connection.disconnect();
  await redis?.stop();
});

function open(name?: string): Redis {
  const connection = new Redis(redis.url, name === undefined ? {} : { connectionName: name });
  connections.push(connection);
  return connection;
}

/** Resolves once `holds()` is true after one of the lag's changes. */
function changed(lag: SubscriptionLag, holds: () => boolean, what: string): Promise<void> {
  return withDeadline(
    new Promise<void>((resolve) => {
      if (holds()) resolve();
      lag.onChange(() => {
        if (holds()) resolve();
      });
    }),
    5_000,
    what,
  );
}

describe("another node's pause, as the publishers' node sees it", () => {
  it("a paused node's key is looked at again until it is gone: its release is seen within milliseconds", async () => {
    // node-b's subscriber connection, as CLIENT LIST lists it
    const subscriberB = open(NAME_B);
    await subscriberB.subscribe("rp-channel");
    const query = open();
    await query.set(pausedKey("node-b"), "1", "PX", 60_000);
    const lag = new SubscriptionLag(
      query,
      NAME_A,
      { boundBytes: 1_000_000, stallMs: 600_000, readingPausedKey: pausedKey, pollMs: 3_600_000 },
      pino({ level: "silent" }),
    );
    after(() => lag.stop());
    lag.start();
    await changed(lag, () => lag.pausedNode === "node-b", "node-b seen paused at the first look");
    const released = changed(lag, () => lag.pausedNode === undefined, "node-b's release seen");
    // Looked at again while paused: still paused after a few of those looks.
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(lag.pausedNode, "node-b");
    await query.del(pausedKey("node-b"));
    await released;
  });
});
