import assert from "node:assert/strict";
import { once } from "node:events";
import { Duplex, PassThrough } from "node:stream";
import { describe, it } from "node:test";
import { Aedes, type AedesPublishPacket } from "aedes";
import { Redis } from "ioredis";
import {
  type RateLimiterAbstract,
  RateLimiterMemory,
  RateLimiterRedis,
  type RateLimiterRes,
} from "rate-limiter-flexible";
import { connectPacket, mqttString, packet } from "../../harness/raw-socket.js";
import { resolveConfig } from "../../src/config/load-config.js";
import type { PublishLimitsConfig } from "../../src/config/publish-limits-schema.js";
import { installReadGate } from "../../src/engine/read-gate.js";
import { ConfigError } from "../../src/errors.js";
import { ClusterShare, PENDING } from "../../src/limits/cluster-share.js";
import { PublishBudget } from "../../src/limits/publish-budget.js";
import { budgetKey, PublishProfiles } from "../../src/limits/publish-profiles.js";
import { TokenBucket } from "../../src/limits/token-bucket.js";

describe("token bucket", () => {
  it("starts full, then refills at its rate", () => {
    const bucket = new TokenBucket(10, 5, 0);
    for (let i = 0; i < 5; i++) {
      assert.equal(bucket.waitFor(1, 0), 0);
      bucket.take(1);
    }
    assert.equal(bucket.waitFor(1, 0), 100); // one token at 10/s
    assert.equal(bucket.waitFor(1, 50), 50);
    assert.equal(bucket.waitFor(1, 100), 0);
    assert.equal(bucket.level(300), 3);
    assert.equal(bucket.level(10_000), 5, "never above its capacity");
  });

  it("a refusal takes nothing", () => {
    const bucket = new TokenBucket(10, 2, 0);
    bucket.take(2);
    assert.ok(bucket.waitFor(1, 0) > 0);
    assert.ok(bucket.waitFor(1, 0) > 0);
    assert.equal(bucket.level(100), 1);
  });

  it("a cost above the capacity passes once the bucket is full, and leaves a debt", () => {
    const bucket = new TokenBucket(1000, 100, 0);
    bucket.take(50);
    assert.equal(bucket.waitFor(300, 0), 50, "waits for a full bucket, not for 300 tokens");
    assert.equal(bucket.waitFor(300, 50), 0);
    bucket.take(300);
    assert.equal(bucket.level(50), -200);
    assert.equal(bucket.waitFor(1, 50), 201, "the debt is paid before anything else passes");
  });

  it("a suspension banks nothing and counts in the wait", () => {
    const bucket = new TokenBucket(10, 10, 0);
    bucket.take(3);
    bucket.suspendUntil(1000);
    assert.equal(bucket.level(500), 0);
    assert.equal(bucket.waitFor(1, 500), 600, "500 ms of suspension, then one token");
    assert.equal(bucket.level(1500), 5);
    assert.equal(bucket.msUntilFull(1500), 500);
    assert.equal(bucket.msUntilFull(2000), 0);
  });

  it("refuses nonsense settings", () => {
    assert.throws(() => new TokenBucket(0, 1, 0), RangeError);
    assert.throws(() => new TokenBucket(1, 0, 0), RangeError);
  });
});

/** A limiter whose calls are counted. */
function counted(limiter: RateLimiterAbstract): RateLimiterAbstract & { calls: number[] } {
  const wrapped = Object.create(limiter) as RateLimiterAbstract & { calls: number[] };
  wrapped.calls = [];
  wrapped.consume = (key: string | number, points?: number) => {
    wrapped.calls.push(points ?? 1);
    return limiter.consume(key, points);
  };
  return wrapped;
}

const quiet = { onError: (error: unknown) => assert.fail(String(error)) };

describe("cluster share", () => {
  it("reserves in chunks, ahead of need: one call per chunk, not per message", async () => {
    const limiter = counted(new RateLimiterMemory({ points: 1000, duration: 60 }));
    let now = 0;
    const share = new ClusterShare(limiter, "k", 100, () => now, quiet);
    assert.equal(share.check(1, now), PENDING, "nothing reserved yet");
    await share.ready();
    let waited = 0;
    for (let i = 0; i < 500; i++) {
      if (share.check(1, now) === PENDING) {
        waited++;
        await share.ready();
        i--;
        continue;
      }
      share.spend(1, now);
      // Let background reservations land, as they do between messages.
      if (i % 10 === 9) await share.ready();
      now++;
    }
    assert.equal(waited, 0, "a steady publisher never waits for the store");
    assert.ok(limiter.calls.length <= 6, `${limiter.calls.length} calls for 500 messages`);
    assert.ok(limiter.calls.every((points) => points === 100));
  });

  it("gets what is left of a window, then waits for the window to reset", async () => {
    const limiter = new RateLimiterMemory({ points: 25, duration: 1 });
    const now = 0;
    const share = new ClusterShare(limiter, "k", 10, () => now, quiet);
    let granted = 0;
    for (;;) {
      const verdict = share.check(1, now);
      if (verdict === PENDING) {
        await share.ready();
        continue;
      }
      if (verdict > 0) {
        assert.ok(verdict <= 1000, `waits ${verdict} ms for the reset`);
        break;
      }
      share.spend(1, now);
      granted++;
    }
    assert.equal(granted, 25, "exactly the window's points");
  });

  it("two nodes' shares of one key split one window between them", async () => {
    const limiter = new RateLimiterMemory({ points: 100, duration: 60 });
    const nodes = [0, 1].map(() => new ClusterShare(limiter, "same", 10, () => 0, quiet));
    const granted = [0, 0];
    let open = 2;
    while (open > 0) {
      open = 0;
      for (const [i, share] of nodes.entries()) {
        const verdict = share.check(1, 0);
        if (verdict === PENDING) await share.ready();
        if (verdict === 0) {
          share.spend(1, 0);
          granted[i] = (granted[i] ?? 0) + 1;
        }
        if (verdict <= 0) open++;
      }
    }
    assert.equal((granted[0] ?? 0) + (granted[1] ?? 0), 100);
    assert.ok((granted[0] ?? 0) > 0 && (granted[1] ?? 0) > 0);
  });

  it("a store that does not answer is replaced by the fallback limiter", async () => {
    const hung = Object.create(
      new RateLimiterMemory({ points: 50, duration: 1 }),
    ) as RateLimiterAbstract;
    hung.consume = () => new Promise<RateLimiterRes>(() => {});
    const fallback = new RateLimiterMemory({ points: 50, duration: 1 });
    const share = new ClusterShare(hung, "k", 10, () => 0, { ...quiet, fallback, timeoutMs: 20 });
    assert.equal(share.check(1, 0), PENDING);
    await share.ready();
    assert.equal(share.check(1, 0), 0);
    assert.equal((await fallback.get("k"))?.consumedPoints, 10);
  });

  it("with Redis down, the insurance limiter keeps the limit (per node)", async () => {
    // Never connected: the client is not ready, so every call goes to the insurance limiter.
    const redis = new Redis({ lazyConnect: true, enableOfflineQueue: false });
    const insurance = new RateLimiterMemory({ points: 30, duration: 1, keyPrefix: "p" });
    const limiter = new RateLimiterRedis({
      storeClient: redis,
      points: 30,
      duration: 1,
      keyPrefix: "p",
      insuranceLimiter: insurance,
      rejectIfRedisNotReady: true,
    });
    const share = new ClusterShare(limiter, "k", 10, () => 0, quiet);
    let granted = 0;
    for (;;) {
      const verdict = share.check(1, 0);
      if (verdict === PENDING) {
        await share.ready();
        continue;
      }
      if (verdict > 0) break;
      share.spend(1, 0);
      granted++;
    }
    assert.equal(granted, 30);
    redis.disconnect();
  });

  it("fails open for one chunk when the store and its insurance both fail", async () => {
    const broken = Object.create(
      new RateLimiterMemory({ points: 50, duration: 1 }),
    ) as RateLimiterAbstract;
    broken.consume = () => Promise.reject(new Error("boom"));
    const errors: unknown[] = [];
    const share = new ClusterShare(broken, "k", 10, () => 0, {
      onError: (error) => errors.push(error),
    });
    share.check(1, 0);
    await share.ready();
    assert.equal(share.check(1, 0), 0);
    assert.equal(errors.length, 1);
  });
});

describe("publish budget", () => {
  it("passes a message only when messages and bytes both allow it, and names the limit", () => {
    const budget = new PublishBudget(
      { messages: { ratePerSecond: 10, burst: 3 }, bytes: { ratePerSecond: 1000, burst: 1000 } },
      0,
    );
    assert.equal(budget.take(400, 0), 0);
    assert.equal(budget.take(400, 0), 0);
    const wait = budget.take(400, 0);
    assert.equal(wait, 200, "bytes: 200 more needed at 1000/s");
    assert.equal(budget.refusedBy, "bytesPerSecond");
    assert.equal(budget.take(10, 0), 0, "a refusal took nothing: small messages still pass");
    assert.equal(budget.take(10, 0), 100);
    assert.equal(budget.refusedBy, "messagesPerSecond");
  });

  it("waits for the cluster's reservation, and banks nothing while the cluster window is spent", async () => {
    const limiter = new RateLimiterMemory({ points: 5, duration: 1 });
    let now = 0;
    const cluster = new ClusterShare(limiter, "k", 5, () => now, quiet);
    const budget = new PublishBudget({ messages: { ratePerSecond: 10, burst: 10, cluster } }, 0);
    assert.equal(budget.take(10, now), PENDING);
    await budget.ready();
    for (let i = 0; i < 5; i++) assert.equal(budget.take(10, now), 0);
    assert.equal(budget.take(10, now), PENDING);
    await budget.ready();
    const wait = budget.take(10, now);
    assert.ok(wait > 0 && wait <= 1000, `waits ${wait} ms for the window`);
    now += wait;
    // The local bucket (10/s, burst 10) was suspended: one token's time more, not a burst.
    assert.equal(budget.take(10, now), 100);
  });
});

describe("limits.publish config", () => {
  const parse = (publish: unknown): PublishLimitsConfig => {
    const { config } = resolveConfig({ limits: { publish } }, { env: {} });
    return config.limits.publish as PublishLimitsConfig;
  };
  const problems = (publish: unknown): readonly string[] => {
    try {
      resolveConfig({ limits: { publish } }, { env: {} });
      return [];
    } catch (error) {
      assert.ok(error instanceof ConfigError);
      return error.problems;
    }
  };

  it("is off when absent", () => {
    const { config } = resolveConfig({}, { env: {} });
    assert.equal(config.limits.publish, undefined);
  });

  it("fills the documented defaults", () => {
    assert.deepEqual(parse({ messagesPerSecond: 100 }), {
      messagesPerSecond: 100,
      burstMessages: 100,
      disconnectAfterSeconds: 30,
      overrides: [],
    });
    assert.deepEqual(parse({ bytesPerSecond: 4096, disconnectAfterSeconds: 5 }), {
      bytesPerSecond: 4096,
      burstBytes: 4096,
      disconnectAfterSeconds: 5,
      overrides: [],
    });
  });

  it("an override inherits what it does not set; a burst follows its own block's rate", () => {
    const config = parse({
      messagesPerSecond: 100,
      burstMessages: 300,
      bytesPerSecond: 10_000,
      overrides: [
        { username: "scada", messagesPerSecond: 5000 },
        { clientId: "hmi-*", bytesPerSecond: 50_000, burstBytes: 80_000 },
      ],
    });
    assert.deepEqual(config.overrides, [
      {
        username: "scada",
        messagesPerSecond: 5000,
        burstMessages: 5000,
        bytesPerSecond: 10_000,
        burstBytes: 10_000,
        disconnectAfterSeconds: 30,
      },
      {
        clientId: "hmi-*",
        messagesPerSecond: 100,
        burstMessages: 300,
        bytesPerSecond: 50_000,
        burstBytes: 80_000,
        disconnectAfterSeconds: 30,
      },
    ]);
  });

  it("names each problem", () => {
    assert.deepEqual(problems({}), [
      "limits.publish: give messagesPerSecond, bytesPerSecond or both",
    ]);
    assert.deepEqual(problems({ bytesPerSecond: 10, burstMessages: 5 }), [
      "limits.publish.burstMessages: needs messagesPerSecond",
    ]);
    assert.deepEqual(problems({ messagesPerSecond: 10, burstMessages: 0 }), [
      "limits.publish.burstMessages: Too small: expected number to be >0",
    ]);
    assert.deepEqual(
      problems({
        messagesPerSecond: 10,
        overrides: [{ username: "a", clientId: "b" }, { messagesPerSecond: 5 }],
      }),
      [
        "limits.publish.overrides[0]: give either username or clientId",
        "limits.publish.overrides[1]: give either username or clientId",
      ],
    );
  });
});

describe("publish profiles", () => {
  const profiles = new PublishProfiles({
    messagesPerSecond: 10,
    disconnectAfterSeconds: 30,
    overrides: [
      { username: "scada", messagesPerSecond: 1000, disconnectAfterSeconds: 30 },
      { clientId: "hmi-*", messagesPerSecond: 100, disconnectAfterSeconds: 30 },
      { clientId: "hmi-7", messagesPerSecond: 1, disconnectAfterSeconds: 30 },
    ],
  });

  it("the first matching override wins; otherwise the base limits", () => {
    const rate = (clientId: string, username?: string) =>
      profiles.for({ clientId, username }).rates.messagesPerSecond;
    assert.equal(rate("anything", "scada"), 1000);
    assert.equal(rate("hmi-7"), 100);
    assert.equal(rate("hmi-"), 100);
    assert.equal(rate("xhmi-1"), 10);
    assert.equal(rate("plc-1", "plc"), 10);
    assert.equal(rate("hmi-3", "scada"), 1000);
  });

  it("a registered device's own rates win over every override, other rates inherited", () => {
    const device = (limits: { messagesPerSecond?: number; bytesPerSecond?: number }) =>
      profiles.for({ clientId: "hmi-7", username: "scada", device: { limits } });
    const own = device({ messagesPerSecond: 5 });
    assert.equal(own.rates.messagesPerSecond, 5);
    assert.equal(own.rates.burstMessages, 5);
    assert.equal(own.rates.disconnectAfterSeconds, 30);
    assert.equal(device({ messagesPerSecond: 5 }), own, "one profile per distinct rates");
    assert.notEqual(device({ messagesPerSecond: 6 }).key, own.key);
    const bytesOnly = device({ bytesPerSecond: 2048 });
    assert.equal(bytesOnly.rates.bytesPerSecond, 2048);
    assert.equal(bytesOnly.rates.messagesPerSecond, 10, "the base rate it did not set");
    assert.equal(device({}).rates.messagesPerSecond, 1000, "no rates of its own: overrides apply");
  });

  it("budgets are keyed by username, else by client id, never confusing the two", () => {
    assert.equal(budgetKey({ clientId: "c1", username: "u" }), "u:u");
    assert.equal(budgetKey({ clientId: "c2", username: "u" }), "u:u");
    assert.equal(budgetKey({ clientId: "u", username: undefined }), "c:u");
  });
});

describe("read gate", () => {
  /** A QoS 1 PUBLISH. */
  function publishPacket(topic: string, messageId: number): Buffer {
    const id = Buffer.alloc(2);
    id.writeUInt16BE(messageId);
    return packet(0x32, Buffer.concat([mqttString(topic), id, Buffer.from("x")]));
  }

  it("holds the PUBLISH that is refused and everything after it, stops reading, and resumes in order", async () => {
    const broker = await Aedes.createBroker();
    const toBroker = new PassThrough();
    const fromBroker = new PassThrough();
    const conn = Duplex.from({ readable: toBroker, writable: fromBroker });
    const client = broker.handle(conn);
    const published: string[] = [];
    broker.on("publish", (p: AedesPublishPacket, c: unknown) => {
      if (c) published.push(p.topic);
    });
    // The second PUBLISH is refused until the test says otherwise.
    let asked = 0;
    let refuse = true;
    const gate = installReadGate(client, { admit: () => !(++asked >= 2 && refuse) });
    try {
      toBroker.write(connectPacket("gate-test"));
      await once(broker, "client");
      toBroker.write(
        Buffer.concat([
          publishPacket("t/1", 1),
          publishPacket("t/2", 2),
          packet(0xc0, Buffer.alloc(0)), // PINGREQ
          publishPacket("t/3", 3),
        ]),
      );
      const settle = async () => {
        for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
      };
      await settle();
      assert.equal(gate.holding, true);
      // More data arrives meanwhile: it is not read.
      toBroker.write(publishPacket("t/4", 4));
      await settle();
      assert.deepEqual(published, ["t/1"]);
      assert.ok(conn.readableLength > 0, "the connection is not read while holding");
      refuse = false;
      gate.resume();
      await settle();
      assert.deepEqual(published, ["t/1", "t/2", "t/3", "t/4"]);
      assert.equal(gate.holding, false);
    } finally {
      await new Promise<void>((resolve) => broker.close(() => resolve()));
    }
  });

  it("refuses to install on something that is not an aedes client", () => {
    assert.throws(() => installReadGate({}, { admit: () => true }), TypeError);
  });
});
