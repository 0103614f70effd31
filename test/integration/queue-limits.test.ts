import assert from "node:assert/strict";
import type { Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { Redis } from "ioredis";
import mqttPacket, { type Packet } from "mqtt-packet";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import {
  connect,
  connectWithConnack,
  end,
  type MqttClient,
  subscribe,
} from "../../harness/mqtt-client.js";
import { rawConnect } from "../../harness/raw-socket.js";
import { RedisServer } from "../../harness/redis-server.js";
import { PersistenceKeys } from "../../src/redis/redis-keys.js";

/**
 * `limits.queue`: a session's QoS 1/2 queue is capped (`maxQueuedPerClient`, the oldest
 * dropped and counted), and a connected client has at most `maxInflight` deliveries
 * unacknowledged, the rest waiting; so a subscriber that does not read holds neither the
 * node's memory nor its topics' publishers.
 */
let redis: RedisServer;
before(async () => {
  redis = await RedisServer.start();
});
after(async () => {
  await redis?.stop();
});

const randomPrefix = (): string => `queue${Math.random().toString(36).slice(2)}:`;

async function metric(node: RunningNode, name: string, reason: string): Promise<number> {
  const metrics = await fetch(`${node.httpUrl}/metrics`).then((r) => r.text());
  const line = new RegExp(`^${name}\\{reason="${reason}",[^}]*\\} (\\d+)`, "m");
  return Number(line.exec(metrics)?.[1] ?? 0);
}

/** Publishes `count` QoS 1 messages whose payloads are their numbers, waiting for each PUBACK. */
async function publishNumbered(publisher: MqttClient, topic: string, count: number) {
  for (let i = 0; i < count; i++) await publisher.publishAsync(topic, String(i), { qos: 1 });
}

/** Keys matching a SCAN pattern, e.g. a session's packets. */
async function keysUnder(url: string, pattern: string): Promise<string[]> {
  const client = new Redis(url);
  try {
    const keys: string[] = [];
    for await (const batch of client.scanStream({ match: pattern, count: 1000 }))
      keys.push(...(batch as string[]));
    return keys;
  } finally {
    client.disconnect();
  }
}

/** Resolves once `check` holds, looking again after each turn of I/O; rejects after `ms`. */
async function eventually(check: () => Promise<boolean>, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const CAP = 20;

for (const store of ["Redis", "memory"] as const) {
  describe(`stored queue cap (${store})`, () => {
    let node: RunningNode;
    let prefix: string;
    before(async () => {
      prefix = randomPrefix();
      node = await startNode({
        ...(store === "Redis" ? { redis: { url: redis.url, keyPrefix: prefix } } : {}),
        limits: { queue: { maxInflight: 5, maxQueuedPerClient: CAP } },
      });
    });
    after(async () => {
      await node?.stop();
    });

    it("an offline session keeps the newest maxQueuedPerClient of 3x as many, delivered in order on resume", async () => {
      const first = await connect(node.urls.tcp as string, {
        clientId: "offline-plc",
        clean: false,
      });
      await subscribe(first, "capped/#", 1);
      await end(first);
      const publisher = await connect(node.urls.tcp as string);
      await publishNumbered(publisher, "capped/data", 3 * CAP);
      await end(publisher);
      assert.equal(await metric(node, "sluice_dropped_messages_total", "queue_full"), 2 * CAP);

      const { client, inbox } = await connectWithConnack(node.urls.tcp as string, {
        clientId: "offline-plc",
        clean: false,
      });
      try {
        const got = await inbox.waitFor(CAP);
        assert.deepEqual(
          got.map((m) => Number(m.payload.toString())),
          Array.from({ length: CAP }, (_, i) => 2 * CAP + i),
        );
        if (store === "Redis") {
          // Every dropped and every acknowledged message took its packet along.
          const keys = new PersistenceKeys(prefix);
          await eventually(
            async () =>
              (await keysUnder(redis.url, keys.pattern(keys.packets("offline-plc"), ""))).length ===
              0,
          );
          assert.deepEqual(
            await keysUnder(redis.url, keys.pattern(keys.queue("offline-plc"), "")),
            [],
          );
        }
        assert.equal(inbox.received.length, CAP);
      } finally {
        await end(client);
      }
    });
  });
}

/** A raw-socket subscriber that reads every PUBLISH and acknowledges only when told to. */
class ManualSubscriber {
  readonly publishes: Array<Packet & { cmd: "publish" }> = [];
  private readonly parser = mqttPacket.parser({ protocolVersion: 4 });
  private waiter: { count: number; resolve: () => void } | undefined;

  private constructor(readonly socket: Socket) {
    this.parser.on("packet", (packet) => {
      if (packet.cmd !== "publish") return;
      this.publishes.push(packet);
      if (this.waiter && this.publishes.length >= this.waiter.count) {
        this.waiter.resolve();
        this.waiter = undefined;
      }
    });
    socket.on("data", (data) => this.parser.parse(data));
  }

  static async start(port: number, clientId: string, filter: string): Promise<ManualSubscriber> {
    const socket = await rawConnect(port);
    const subscriber = new ManualSubscriber(socket);
    const suback = new Promise<void>((resolve) =>
      subscriber.parser.on("packet", (p) => p.cmd === "suback" && resolve()),
    );
    socket.write(
      mqttPacket.generate({
        cmd: "connect",
        protocolId: "MQTT",
        protocolVersion: 4,
        clean: true,
        clientId,
        keepalive: 0,
      }),
    );
    socket.write(
      mqttPacket.generate({
        cmd: "subscribe",
        messageId: 1,
        subscriptions: [{ topic: filter, qos: 1 }],
      }),
    );
    await suback;
    return subscriber;
  }

  waitFor(count: number): Promise<void> {
    if (this.publishes.length >= count) return Promise.resolve();
    return new Promise((resolve) => {
      this.waiter = { count, resolve };
    });
  }

  ack(index: number): void {
    const messageId = this.publishes[index]?.messageId;
    this.socket.write(mqttPacket.generate({ cmd: "puback", messageId }));
  }
}

describe("in-flight window", () => {
  let node: RunningNode;
  before(async () => {
    node = await startNode({
      limits: { queue: { maxInflight: 5, maxQueuedPerClient: 100, drainTimeoutMs: 60_000 } },
    });
  });
  after(async () => {
    await node?.stop();
  });
  const port = (): number => Number(new URL(node.urls.tcp as string).port);

  it("a subscriber that does not acknowledge gets maxInflight deliveries, the rest as it acks", async () => {
    const subscriber = await ManualSubscriber.start(port(), "slow-hmi", "window/#");
    const publisher = await connect(node.urls.tcp as string);
    try {
      // Every PUBACK arrives although the subscriber acknowledges nothing.
      await withDeadline(publishNumbered(publisher, "window/data", 30), 10_000, "30 PUBACKs");
      await subscriber.waitFor(5);
      // A PINGREQ round trip on the subscriber's own connection: anything the node had
      // written before its PINGRESP has arrived by then.
      await new Promise<void>((resolve) => {
        const parser = mqttPacket.parser();
        const onData = (data: Buffer) => parser.parse(data);
        parser.on("packet", (p) => {
          if (p.cmd !== "pingresp") return;
          subscriber.socket.off("data", onData);
          resolve();
        });
        subscriber.socket.on("data", onData);
        subscriber.socket.write(mqttPacket.generate({ cmd: "pingreq" }));
      });
      assert.equal(subscriber.publishes.length, 5);
      for (let acked = 0; acked < 30; acked++) {
        subscriber.ack(acked);
        await subscriber.waitFor(Math.min(30, acked + 6));
        assert.ok(
          subscriber.publishes.length <= acked + 6,
          `${subscriber.publishes.length} after ${acked + 1} acks`,
        );
      }
      assert.deepEqual(
        subscriber.publishes.map((p) => Number(p.payload.toString())),
        Array.from({ length: 30 }, (_, i) => i),
      );
    } finally {
      subscriber.socket.destroy();
      await end(publisher);
    }
  });

  it("a frozen QoS 1 subscriber does not stall its publisher, and costs bounded memory", async () => {
    // Subscribes, then reads nothing: its socket fills and stays full.
    const frozen = await ManualSubscriber.start(port(), "frozen-window", "frozen/#");
    frozen.socket.pause();
    const publisher = await connect(node.urls.tcp as string);
    try {
      const dropsBefore = await metric(node, "sluice_dropped_messages_total", "queue_full");
      const heapBefore = process.memoryUsage().heapUsed;
      const payload = Buffer.alloc(32_768, 120);
      const started = Date.now();
      // 1,500 x 32 KiB = 48 MB. Before the window the first PUBACK that waited on the frozen
      // socket held the publisher up until drainTimeoutMs (60 s here).
      let next = 0;
      await withDeadline(
        Promise.all(
          Array.from({ length: 20 }, async () => {
            while (next < 1_500) {
              next++;
              await publisher.publishAsync("frozen/data", payload, { qos: 1 });
            }
          }),
        ),
        30_000,
        "1,500 PUBACKs",
      );
      const elapsed = Date.now() - started;
      assert.ok(elapsed < 20_000, `1,500 PUBACKs took ${elapsed} ms`);
      // 5 in flight, 100 waiting: the rest dropped and counted.
      const dropped =
        (await metric(node, "sluice_dropped_messages_total", "queue_full")) - dropsBefore;
      assert.equal(dropped, 1_500 - 5 - 100);
      const grown = process.memoryUsage().heapUsed - heapBefore;
      assert.ok(grown < 32 * 1024 * 1024, `heap grew ${Math.round(grown / 1e6)} MB`);
    } finally {
      frozen.socket.destroy();
      await end(publisher);
    }
  });
});
