import assert from "node:assert/strict";
import type { Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import mqttPacket from "mqtt-packet";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import {
  connect,
  end,
  Inbox,
  type MqttClient,
  subscribe,
  subscribeGranted,
} from "../../harness/mqtt-client.js";
import { rawConnect, readBytes } from "../../harness/raw-socket.js";

/**
 * Limits on what one client can make the node hold: subscriptions per client, and subscribers
 * that stop reading while messages flood in.
 */
let node: RunningNode;

before(async () => {
  node = await startNode({
    // A window of 1,000 x 32 KiB is more than the kernel's socket buffers take, so the frozen
    // QoS 1 subscriber below does fill its socket and meet drainTimeoutMs. With the default
    // window (100) it stays connected, holding 3 MB (see queue-limits.test.ts).
    limits: {
      subscriptions: { perClient: 100 },
      queue: { drainTimeoutMs: 1_000, maxInflight: 1_000 },
    },
  });
});
after(async () => {
  await node?.stop();
});

async function metric(name: string, reason: string): Promise<number> {
  const metrics = await fetch(`${node.httpUrl}/metrics`).then((r) => r.text());
  const line = new RegExp(`^${name}\\{reason="${reason}",[^}]*\\} (\\d+)`, "m");
  return Number(line.exec(metrics)?.[1] ?? 0);
}

/** A subscriber on a raw socket that subscribes, then never reads again. */
async function frozenSubscriber(clientId: string, filter: string, qos: 0 | 1): Promise<Socket> {
  const socket = await rawConnect(Number(new URL(node.urls.tcp as string).port));
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
  await readBytes(socket, 4);
  socket.write(
    mqttPacket.generate({
      cmd: "subscribe",
      messageId: 1,
      subscriptions: [{ topic: filter, qos }],
    }),
  );
  await readBytes(socket, 5);
  socket.pause();
  // A small receive buffer, so the kernel does not hide the backlog.
  socket.setNoDelay(true);
  return socket;
}

/** Publishes `count` messages of `size` bytes at QoS 1 (acknowledged, so bounded in flight). */
async function flood(publisher: MqttClient, topic: string, count: number, size: number) {
  const payload = Buffer.alloc(size, 120);
  const window = 50;
  let next = 0;
  await Promise.all(
    Array.from({ length: window }, async () => {
      while (next < count) {
        next++;
        await publisher.publishAsync(topic, payload, { qos: 1 });
      }
    }),
  );
}

describe("subscriptions per client", () => {
  it("filters past the limit get SUBACK 0x80, also within one SUBSCRIBE, and replacing one is fine", async () => {
    const client = await connect(node.urls.tcp as string);
    try {
      const filters: Record<string, { qos: 0 }> = {};
      for (let i = 0; i < 120; i++) filters[`many/${i}`] = { qos: 0 };
      const granted = await subscribeGranted(client, filters);
      assert.equal(granted.filter((code) => code === 0).length, 100);
      assert.equal(granted.filter((code) => code === 0x80).length, 20);
      assert.deepEqual(await subscribeGranted(client, { "many/5": { qos: 0 } }), [0]);
      assert.deepEqual(await subscribeGranted(client, { "many/extra": { qos: 0 } }), [0x80]);
      assert.ok((await metric("sluice_subscriptions_refused_total", "per_client")) >= 21);
    } finally {
      await end(client);
    }
  });
});

describe("subscribers that stop reading", () => {
  it("QoS 0 to a frozen subscriber is dropped while another subscriber gets every message", async () => {
    const frozen = await frozenSubscriber("frozen-qos0", "flood0/#", 0);
    const healthy = await connect(node.urls.tcp as string);
    const publisher = await connect(node.urls.tcp as string);
    try {
      const inbox = new Inbox(healthy);
      await subscribe(healthy, "flood0/#", 1);
      const heapBefore = process.memoryUsage().heapUsed;
      // 96 MB: QoS 0 is dropped only once the kernel's buffers for the frozen socket are full,
      // and Linux grows them to tens of MB on loopback (tcp_rmem's maximum is 32 MB here).
      const count = 3_000;
      await flood(publisher, "flood0/data", count, 32_768);
      const got = await inbox.waitFor(count);
      assert.equal(got.length, count);
      const dropped = await metric("sluice_dropped_messages_total", "slow_consumer");
      assert.ok(dropped > 0, `dropped ${dropped}, frozen socket closed: ${frozen.closed}`);
      const grown = process.memoryUsage().heapUsed - heapBefore;
      // Held for the frozen client, the flood would show here.
      assert.ok(grown < 64 * 1024 * 1024, `heap grew ${Math.round(grown / 1e6)} MB`);
    } finally {
      frozen.destroy();
      await end(healthy, publisher);
    }
  });

  it("a frozen QoS 1 subscriber is disconnected at drainTimeoutMs, and the flood goes on", async () => {
    const frozen = await frozenSubscriber("frozen-qos1", "flood1/#", 1);
    const closed = new Promise<void>((resolve) => frozen.once("close", () => resolve()));
    const healthy = await connect(node.urls.tcp as string);
    const publisher = await connect(node.urls.tcp as string);
    try {
      const inbox = new Inbox(healthy);
      await subscribe(healthy, "flood1/#", 1);
      await flood(publisher, "flood1/data", 1_500, 32_768);
      assert.equal((await inbox.waitFor(1_500)).length, 1_500);
      // The node closed it; the close shows once what the kernel had buffered is read.
      frozen.resume();
      await closed;
    } finally {
      frozen.destroy();
      await end(healthy, publisher);
    }
  });
});
