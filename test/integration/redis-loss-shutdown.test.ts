import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect, end, Inbox, type MqttClient } from "../../harness/mqtt-client.js";
import { RedisServer } from "../../harness/redis-server.js";
import { SluiceProcess } from "../../harness/sluice-process.js";

/**
 * A node whose Redis is gone while its subscribed clients close and it shuts down: every failed
 * Redis call must be handled where it is made. Before the mqemitter-redis patch, aedes' close
 * of the emitter sent QUIT to the lost Redis and nobody handled its rejection: the process
 * logged `process.unhandled_rejection` and exited 1 instead of 0.
 */
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-redis-loss-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function startNode(redis: RedisServer): Promise<{ node: SluiceProcess; url: string }> {
  const file = join(dir, `${randomBytes(3).toString("hex")}.yaml`);
  await writeFile(
    file,
    "listeners: [{ type: tcp, host: 127.0.0.1, port: 0 }]\nhttp: { host: 127.0.0.1, port: 0 }\n" +
      "auth: { allowAnonymous: true }\nshutdown: { drainSeconds: 0 }\nlog: { level: debug, format: json }\n" +
      `redis: { url: "${redis.url}", keyPrefix: "loss${randomBytes(3).toString("hex")}:" }\n`,
  );
  const node = SluiceProcess.spawn(["start", "--config", file]);
  const { ports } = await node.ready();
  return { node, url: `mqtt://127.0.0.1:${ports.tcp}` };
}

/** Clients with clean and persistent sessions, each holding a few subscriptions. */
async function subscribedClients(url: string, count: number): Promise<MqttClient[]> {
  const clients: MqttClient[] = [];
  for (let i = 0; i < count; i++) {
    const client = await connect(url, { clientId: `loss-${i}`, clean: i % 2 === 0 });
    client.on("error", () => {});
    // One filter per SUBSCRIBE: see the report on multi-filter SUBSCRIBEs of persistent sessions.
    for (const filter of [`loss/${i}/a`, `loss/${i}/+`, "loss/all/#"])
      await client.subscribeAsync(filter, { qos: 1 });
    clients.push(client);
  }
  // A round trip through the node: every SUBSCRIBE (and its retained lookup) is finished.
  const inbox = new Inbox(clients[0] as MqttClient);
  await (clients[1] as MqttClient).publishAsync("loss/all/ping", "x", { qos: 1 });
  await inbox.waitFor(1);
  return clients;
}

function unexpected(node: SluiceProcess): string[] {
  return node.lines
    .filter(
      (l) => l.event === "process.unhandled_rejection" || l.event === "process.uncaught_exception",
    )
    .map((l) => JSON.stringify(l.err));
}

describe("shutdown while Redis is lost", () => {
  it("clients close and the node stops during a Redis outage: nothing unhandled, exit 0", async () => {
    const redis = await RedisServer.start();
    const { node, url } = await startNode(redis);
    try {
      const clients = await subscribedClients(url, 20);
      await redis.kill();
      await node.waitForEvent("redis.down");
      for (const client of clients) client.end(true);
      // The node notices every close (its unsubscribes go to the lost Redis), then stops.
      await node.waitForLog(
        (l) => l.event === "client.disconnected" && l.clientId === `loss-${clients.length - 1}`,
      );
      node.kill("SIGTERM");
      const { code } = await node.exited;
      assert.deepEqual(unexpected(node), []);
      assert.equal(code, 0);
    } finally {
      node.kill();
      await redis.stop();
    }
  });

  it("Redis dies as the node stops with subscribed clients: nothing unhandled, exit 0", async () => {
    const redis = await RedisServer.start();
    const { node, url } = await startNode(redis);
    let clients: MqttClient[] = [];
    try {
      clients = await subscribedClients(url, 20);
      node.kill("SIGTERM");
      await redis.kill();
      const { code } = await node.exited;
      assert.deepEqual(unexpected(node), []);
      assert.equal(code, 0);
    } finally {
      await end(...clients);
      node.kill();
      await redis.stop();
    }
  });
});
