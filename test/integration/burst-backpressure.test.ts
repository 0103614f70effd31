import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import mqttPacket from "mqtt-packet";
import { withDeadline } from "../../harness/deadline.js";
import { connect, end, type MqttClient } from "../../harness/mqtt-client.js";
import { metricValue } from "../../harness/node-metrics.js";
import { connectPacket, rawConnect } from "../../harness/raw-socket.js";
import { RedisServer } from "../../harness/redis-server.js";
import { SluiceProcess } from "../../harness/sluice-process.js";

/**
 * Publishers faster than the node, over a real Redis at its default output-buffer limits, with
 * no end-to-end window: raw sockets write QoS 0 PUBLISHes as fast as TCP takes them for 10 s.
 * The node (its own process) must pause them instead of letting Redis cut its subscription:
 * no cut, readiness never flaps, every acknowledged QoS 1 message arrives.
 */
const FLOOD_MS = 10_000;
const FLOODERS = 4;
/** Bounds each flooder's count too: 64 KiB batches of ~80-byte packets. */
const MAX_BATCHES_PER_FLOODER = 20_000;
const QOS1_MESSAGES = 2_000;

let dir: string;
let redis: RedisServer;
let node: SluiceProcess;
let url: string;
let httpPort: number;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-burst-"));
  redis = await RedisServer.start();
  const file = join(dir, "node.yaml");
  await writeFile(
    file,
    "listeners: [{ type: tcp, host: 127.0.0.1, port: 0 }]\nhttp: { host: 127.0.0.1, port: 0 }\n" +
      "auth: { allowAnonymous: true }\nshutdown: { drainSeconds: 0 }\nlog: { level: info, format: json }\n" +
      `redis: { url: "${redis.url}", keyPrefix: "burst${randomBytes(3).toString("hex")}:", backpressure: { pendingBytes: 65536 } }\n`,
  );
  node = SluiceProcess.spawn(["start", "--config", file], { SLUICE_LOG_LEVEL: "info" });
  const ready = await node.ready();
  url = `mqtt://127.0.0.1:${ready.ports.tcp}`;
  httpPort = ready.httpPort;
});
after(async () => {
  node?.kill("SIGKILL");
  await node?.exited;
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** A raw publisher: CONNECT, then batches of QoS 0 PUBLISHes whenever the socket takes them. */
async function flood(port: number, index: number, until: number): Promise<number> {
  const socket = await rawConnect(port);
  socket.write(connectPacket(`flooder-${index}`, { keepalive: 0 }));
  // One batch built once; each copy gets its own sequence numbers (fixed width, in place), so
  // the generator outruns the node.
  const digits = 9;
  const offsets: number[] = [];
  const parts: Buffer[] = [];
  let size = 0;
  while (size < 65_536) {
    const packet = mqttPacket.generate({
      cmd: "publish",
      topic: `burst/${index}`,
      payload: Buffer.from(`${index}:${"0".repeat(digits)}:${"x".repeat(40)}`),
      qos: 0,
      retain: false,
      dup: false,
    });
    offsets.push(size + packet.indexOf(":") + 1);
    parts.push(packet);
    size += packet.length;
  }
  const template = Buffer.concat(parts);
  let sequence = 0;
  let batches = 0;
  try {
    while (Date.now() < until && batches < MAX_BATCHES_PER_FLOODER && !socket.destroyed) {
      const batch = Buffer.from(template);
      for (const offset of offsets) {
        batch.write(String(sequence++).padStart(digits, "0"), offset, "latin1");
      }
      batches++;
      // A turn for the test's own subscribers between batches (they share this process).
      await new Promise((resolve) => setImmediate(resolve));
      if (!socket.write(batch)) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.max(0, until - Date.now()));
          socket.once("drain", () => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
    }
  } finally {
    socket.destroy();
  }
  return sequence;
}

async function readyStatus(): Promise<number> {
  const response = await fetch(`http://127.0.0.1:${httpPort}/readyz`);
  await response.arrayBuffer();
  return response.status;
}

/** The ids of Redis' pub/sub connections: a cut subscription comes back with a new id. */
async function subscriberIds(): Promise<string[]> {
  const { Redis } = await import("ioredis");
  const client = new Redis(redis.url);
  try {
    const list = String(await client.call("CLIENT", "LIST", "TYPE", "pubsub"));
    return [...list.matchAll(/^id=(\d+) .* name=sluice\/[^ ]+\/subscriber /gm)].map(
      (m) => m[1] as string,
    );
  } finally {
    client.disconnect();
  }
}

describe("a burst over Redis", () => {
  it("slows the publishers: no subscription cut, readiness steady, every acknowledged QoS 1 message delivered", async () => {
    const port = Number(new URL(url).port);
    const subscribersBefore = await subscriberIds();
    assert.equal(subscribersBefore.length, 1, "the node's one subscriber connection");
    const reader = await connect(url, { clientId: "burst-reader" });
    const durable = await connect(url, { clientId: "burst-durable", clean: false });
    const qos1 = await connect(url, { clientId: "burst-qos1" });
    const clients: MqttClient[] = [reader, durable, qos1];
    const received = new Map<string, Set<number>>();
    const durableGot = new Set<number>();
    try {
      reader.on("message", (_topic, payload) => {
        const [publisher, sequence] = payload.toString().split(":");
        const seen = received.get(publisher as string) ?? new Set<number>();
        received.set(publisher as string, seen);
        seen.add(Number(sequence));
      });
      durable.on("message", (_topic, payload) => durableGot.add(Number(payload.toString())));
      await reader.subscribeAsync("burst/+", { qos: 0 });
      await durable.subscribeAsync("acked/#", { qos: 1 });

      const statuses: number[] = [];
      let polling = true;
      const poll = (async () => {
        while (polling) {
          statuses.push(await readyStatus().catch(() => 0));
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      })();

      const until = Date.now() + FLOOD_MS;
      const flooders = Array.from({ length: FLOODERS }, (_, i) => flood(port, i, until));
      const acknowledged: number[] = [];
      const qos1Sent = (async () => {
        for (let i = 0; i < QOS1_MESSAGES && Date.now() < until; i++) {
          await qos1.publishAsync(`acked/${i % 10}`, String(i), { qos: 1 });
          acknowledged.push(i);
        }
      })();
      const sent = await withDeadline(Promise.all(flooders), FLOOD_MS + 10_000, "flooders");
      await withDeadline(qos1Sent, 30_000, "QoS 1 publisher");
      polling = false;
      await poll;

      // Every acknowledged QoS 1 message reaches the persistent subscriber.
      await withDeadline(
        (async () => {
          while (!acknowledged.every((i) => durableGot.has(i)))
            await new Promise((resolve) => setTimeout(resolve, 50));
        })(),
        30_000,
        "acknowledged QoS 1 messages delivered",
      );

      const got = [...received.values()].reduce((sum, seen) => sum + seen.size, 0);
      const offered = sent.reduce((a, b) => a + b, 0);
      const paused = node.lines.filter((l) => l.event === "cluster.backpressure").length;
      assert.deepEqual(await subscriberIds(), subscribersBefore, "Redis cut no subscription");
      assert.deepEqual(
        node.lines.filter((l) => l.event === "redis.down" || l.event === "pubsub.gap"),
        [],
        "the node never lost Redis",
      );
      assert.ok(statuses.length > 20, "readiness was polled throughout");
      assert.deepEqual(
        statuses.filter((s) => s !== 200),
        [],
        "readiness never flapped",
      );
      assert.ok(got > 0, "the reading subscriber got messages");
      assert.ok(acknowledged.length > 0, "QoS 1 messages were acknowledged during the burst");
      // What the reader got is counted per publisher, never more than was sent.
      assert.ok(got <= offered, `${got} received of ${offered} sent`);
      // The bound (64 KiB pending here, so that four publishers pass it) held the publishers,
      // and let them go again.
      const http = `http://127.0.0.1:${httpPort}`;
      const metric = (name: string): Promise<number> => metricValue(http, name);
      assert.ok((await metric("sluice_cluster_backpressure_total")) > 0, "publishers were paused");
      assert.ok(
        (await metric("sluice_cluster_backpressure_seconds_total")) > 0,
        "for a measured time",
      );
      // Released once Redis has answered what is in flight.
      await withDeadline(
        (async () => {
          while ((await metric("sluice_cluster_backpressure_active")) !== 0)
            await new Promise((resolve) => setTimeout(resolve, 50));
        })(),
        10_000,
        "publishers resumed",
      );
      assert.equal(paused, 1, "one warning line however many pauses");
    } finally {
      await end(...clients);
    }
  });
});
