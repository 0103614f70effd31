import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { IClientOptions } from "mqtt";
import { withDeadline } from "../../harness/deadline.js";
import { HaProxy } from "../../harness/haproxy.js";
import { connect, end, Inbox, type MqttClient, type Received } from "../../harness/mqtt-client.js";
import { RedisServer } from "../../harness/redis-server.js";
import { SluiceProcess } from "../../harness/sluice-process.js";

/**
 * MQTT 5 across a cluster behind a real HAProxy (round robin): publisher and subscriber land on
 * different node processes, and what MQTT 5 adds to a message (properties, subscription
 * identifiers) crosses the nodes; a 3.1.1 subscriber gets the same message without them.
 */
let dir: string;
let redis: RedisServer;
const nodes: Array<{ process: SluiceProcess; httpUrl: string }> = [];
let lb: HaProxy;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-mqtt5-cluster-"));
  redis = await RedisServer.start();
  const prefix = `v5${randomBytes(4).toString("hex")}:`;
  const started = [];
  for (const name of ["v5-a", "v5-b"]) {
    const file = join(dir, `${name}.yaml`);
    await writeFile(
      file,
      `nodeId: ${name}\nlisteners: [{ type: tcp, host: 127.0.0.1, port: 0 }]\nhttp: { host: 127.0.0.1, port: 0 }\n` +
        `auth: { allowAnonymous: true }\nshutdown: { drainSeconds: 0 }\n` +
        `redis: { url: "${redis.url}", keyPrefix: "${prefix}" }\n`,
    );
    const process = SluiceProcess.spawn(["start", "--config", file]);
    started.push(
      process.ready().then(({ ports, httpPort }) => {
        nodes.push({ process, httpUrl: `http://127.0.0.1:${httpPort}` });
        return { name, mqttPort: ports.tcp as number, httpPort };
      }),
    );
  }
  lb = await HaProxy.start(await Promise.all(started));
});
after(async () => {
  await lb?.stop();
  for (const { process } of nodes) process.kill();
  await Promise.all(nodes.map((n) => n.process.exited));
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** The node's connections of one protocol (sluice_connections, every listener). */
async function connectionsOf(httpUrl: string, protocol: string): Promise<number> {
  const text = await fetch(`${httpUrl}/metrics`).then((r) => r.text());
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("sluice_connections{") && line.includes(`protocol="${protocol}"`))
      sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

const V5: IClientOptions = { protocolVersion: 5 };

/** The first message with this payload, whenever it comes (warm-up messages may precede it). */
async function arrival(inbox: Inbox, payload: string): Promise<Received> {
  for (let count = 1; ; count++) {
    const items = await inbox.waitFor(count);
    const hit = items.find((m) => m.payload.toString() === payload);
    if (hit !== undefined) return hit;
  }
}

describe("MQTT 5 across two nodes behind HAProxy", () => {
  it("properties and every matching subscription identifier cross nodes; 3.1.1 gets the message too", async () => {
    const clients: MqttClient[] = [];
    try {
      // Round robin: consecutive connections alternate between the two nodes.
      const subscriber = await connect(lb.url, { ...V5, clientId: "v5-cluster-sub" });
      const publisher = await connect(lb.url, { ...V5, clientId: "v5-cluster-pub" });
      const legacy = await connect(lb.url, { protocolVersion: 4, clientId: "v311-cluster-sub" });
      clients.push(subscriber, publisher, legacy);
      const perNode = await Promise.all(nodes.map((n) => connectionsOf(n.httpUrl, "5.0")));
      assert.deepEqual(perNode, [1, 1], "one MQTT 5 client on each node");

      const inbox = new Inbox(subscriber);
      await subscriber.subscribeAsync("cell/+/temp", {
        qos: 1,
        properties: { subscriptionIdentifier: 7 },
      });
      await subscriber.subscribeAsync("cell/#", {
        qos: 1,
        properties: { subscriptionIdentifier: 9 },
      });
      const legacyInbox = new Inbox(legacy);
      await legacy.subscribeAsync("cell/#", { qos: 1 });

      const properties = {
        userProperties: { line: "3", unit: "degC" },
        contentType: "text/plain",
        responseTopic: "cell/3/ack",
        correlationData: Buffer.from("req-41"),
        messageExpiryInterval: 600,
      };
      // Subscriptions reach the other node through Redis: publish until both subscribers hear.
      await withDeadline(
        (async () => {
          while (inbox.received.length === 0 || legacyInbox.received.length === 0) {
            await publisher.publishAsync("cell/3/temp", "warm-up", { qos: 1 });
            await withDeadline(
              Promise.all([inbox.waitFor(1), legacyInbox.waitFor(1)]),
              500,
              "warm-up",
            ).catch(() => undefined);
          }
        })(),
        10_000,
        "subscriptions known on the publisher's node",
      );
      await publisher.publishAsync("cell/3/temp", "21.5", { qos: 1, properties });

      const message = await withDeadline(arrival(inbox, "21.5"), 10_000, "the message");
      assert.equal(message.payload.toString(), "21.5");
      const received = message.packet.properties ?? {};
      assert.deepEqual({ ...received.userProperties }, properties.userProperties);
      assert.equal(received.contentType, "text/plain");
      assert.equal(received.responseTopic, "cell/3/ack");
      assert.deepEqual(received.correlationData, properties.correlationData);
      assert.ok(
        (received.messageExpiryInterval ?? 0) > 590 && (received.messageExpiryInterval ?? 0) <= 600,
        `remaining expiry ${received.messageExpiryInterval}`,
      );
      const identifiers = [received.subscriptionIdentifier ?? []].flat().sort();
      assert.deepEqual(identifiers, [7, 9], "both matching subscriptions named, in one message");
      assert.equal(
        inbox.received.filter((m) => m.payload.toString() === "21.5").length,
        1,
        "delivered once",
      );

      const legacyMessage = await withDeadline(arrival(legacyInbox, "21.5"), 10_000, "3.1.1 copy");
      assert.equal(legacyMessage.packet.properties, undefined, "no properties in 3.1.1");
    } finally {
      await end(...clients);
    }
  });
});
