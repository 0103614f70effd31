import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import mqtt, { type IPublishPacket, type MqttClient, type Packet } from "mqtt";
import { connect, connectWithConnack, end, Inbox, subscribe } from "../../harness/mqtt-client.js";
import { MqttProxy, PacketType } from "../../harness/mqtt-proxy.js";
import {
  connectPacket,
  mqttString,
  packet,
  rawConnect,
  readBytes,
} from "../../harness/raw-socket.js";
import { RedisServer } from "../../harness/redis-server.js";
import { SluiceProcess } from "../../harness/sluice-process.js";
import { PersistenceKeys } from "../../src/redis/redis-keys.js";

/**
 * QoS 2 flows cut by a node's death (SIGKILL). The in-flight state lives in Redis (Sluice's
 * persistence: the client's `incoming` hash for what it publishes, its `queue` list with its
 * packets and packet identifiers for what it receives), so a node resuming a session finds it.
 * A proxy in front of the victim node stops each flow at an exact step; the client then goes
 * on with the surviving node.
 */
const SETTLE_TRIES = 100;
const SETTLE_INTERVAL_MS = 100;

interface ClusterNode {
  name: string;
  process: SluiceProcess;
  port: number;
  url: string;
}

let dir: string;
let redis: RedisServer;
let prefix: string;
let survivor: ClusterNode;
const spawned: SluiceProcess[] = [];

async function startNode(name: string, redisAuth = ""): Promise<ClusterNode> {
  const file = join(dir, `${name}.yaml`);
  await writeFile(
    file,
    `nodeId: ${name}\nlisteners: [{ type: tcp, host: 127.0.0.1, port: 0 }]\nhttp: { host: 127.0.0.1, port: 0 }\n` +
      `auth: { allowAnonymous: true }\nshutdown: { drainSeconds: 0 }\nlog: { level: debug, format: json }\n` +
      `redis: { url: "${redis.url}", keyPrefix: "${prefix}"${redisAuth} }\n`,
  );
  const process = SluiceProcess.spawn(["start", "--config", file]);
  spawned.push(process);
  const port = (await process.ready()).ports.tcp as number;
  return { name, process, port, url: `mqtt://127.0.0.1:${port}` };
}

async function kill(node: ClusterNode): Promise<void> {
  node.process.kill("SIGKILL");
  await node.process.exited;
}

/** The node is up and logged nothing at error level or above (no uncaught error, no exit). */
function assertHealthy(node: ClusterNode): void {
  assert.equal(node.process.child.exitCode, null, `${node.name} exited`);
  assert.equal(node.process.child.signalCode, null, `${node.name} was killed`);
  const bad = node.process.lines.filter((l) => (l.level ?? 0) >= 50);
  assert.deepEqual(bad, [], `${node.name} logged errors`);
}

/** A client that resumes its session through the proxy (reconnecting within 100 ms). */
function sessionClient(proxy: MqttProxy, clientId: string) {
  const client = mqtt.connect(proxy.url, {
    clientId,
    clean: false,
    reconnectPeriod: 100,
    connectTimeout: 5_000,
    protocolVersion: 4,
  });
  const inbox = new Inbox(client);
  const errors: string[] = [];
  client.on("error", (error) => errors.push(error.message));
  const publishes: IPublishPacket[] = [];
  client.on("packetreceive", (packet: Packet) => {
    if (packet.cmd === "publish") publishes.push(packet);
  });
  return { client, inbox, errors, publishes };
}

async function redisInteger(...args: string[]): Promise<number> {
  const reply = await redis.command(...args);
  assert.match(reply, /^:\d+$/, `${args.join(" ")} answered ${reply}`);
  return Number(reply.slice(1));
}

/** Entries of a client's outgoing QoS 1/2 queue in Redis: 0 once every flow completed. */
async function outgoingQueueLength(clientId: string): Promise<number> {
  return redisInteger("LLEN", `${prefix}${new PersistenceKeys(prefix).queue(clientId)}`);
}

/** Polls Redis (bounded) until `check` holds; a node completes a flow after the client's last packet. */
async function settles(check: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < SETTLE_TRIES; i++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, SETTLE_INTERVAL_MS));
  }
  assert.fail(`${what}: not within ${SETTLE_TRIES * SETTLE_INTERVAL_MS} ms`);
}

/** The next `event` of an MQTT.js client (its typings are not a Node EventEmitter's). */
function next(client: MqttClient, event: "connect" | "close"): Promise<void> {
  return new Promise((resolve) => client.once(event, () => resolve()));
}

/** A raw QoS 2 PUBLISH, so a test picks the packet id as a restarted device would. */
function publishQos2(topic: string, id: number, payload: string): Buffer {
  const identifier = Buffer.alloc(2);
  identifier.writeUInt16BE(id);
  return packet(0x34, Buffer.concat([mqttString(topic), identifier, Buffer.from(payload)]));
}

/** An acknowledgement (PUBREC 0x50, PUBREL 0x62, PUBCOMP 0x70) of packet id `id`. */
function ack(firstByte: number, id: number): Buffer {
  return Buffer.from([firstByte, 2, id >> 8, id & 0xff]);
}

const CONNACK_ACCEPTED = Buffer.from([0x20, 2, 0, 0]);

const payloads = (inbox: Inbox) => inbox.received.map((m) => m.payload.toString());

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-qos2-"));
  redis = await RedisServer.start();
  prefix = `q${randomBytes(4).toString("hex")}:`;
  survivor = await startNode("qos2-survivor");
});
after(async () => {
  for (const process of spawned) process.kill();
  await Promise.all(spawned.map((p) => p.exited));
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("QoS 2 from a publisher whose node dies mid-flow", () => {
  it("a PUBREL the dead node never saw is answered PUBCOMP by another node; the message is delivered once", async () => {
    const victim = await startNode("qos2-pub-victim");
    const proxy = await MqttProxy.start(victim.port);
    const watcher = await connect(survivor.url);
    const inbox = new Inbox(watcher);
    await subscribe(watcher, "q2/from-publisher", 2);
    const { client: publisher, errors } = sessionClient(proxy, "q2-publisher");
    try {
      await next(publisher, "connect");
      proxy.routeTo(survivor.port); // the next connection goes to the survivor
      const pubrelWithheld = proxy.cutAt((f) => f.type === PacketType.pubrel);
      // PUBREC came from the victim: it stored the message id and published the message.
      const completed = publisher.publishAsync("q2/from-publisher", "exactly-once", { qos: 2 });
      const pubrel = await pubrelWithheld;
      await kill(victim);
      // MQTT.js reconnects and resends the PUBREL from its store; only the survivor can answer.
      await completed;
      await survivor.process.waitForLog(
        (l) => l.event === "client.connected" && l.clientId === "q2-publisher",
      );
      // The survivor found the stored id and removed it: it did not publish a second copy.
      assert.equal(
        await redisInteger(
          "HEXISTS",
          `${prefix}${new PersistenceKeys(prefix).incoming("q2-publisher")}`,
          String(pubrel.messageId),
        ),
        0,
      );
      await publisher.publishAsync("q2/from-publisher", "marker", { qos: 2 });
      await inbox.waitFor(2);
      assert.deepEqual(payloads(inbox), ["exactly-once", "marker"]);
      assert.deepEqual(errors, []);
      assertHealthy(survivor);
    } finally {
      await end(publisher, watcher);
      await proxy.close();
    }
  });

  it("a PUBLISH the dead node stored but never published is published when retried on another node", async () => {
    // The victim's own Redis user loses PUBLISH: it stores the message id, then fails to
    // publish, exactly as a node that dies between the two steps.
    const user = "qos2-store-victim";
    const password = randomBytes(12).toString("hex");
    assert.equal(
      await redis.command("ACL", "SETUSER", user, "on", `>${password}`, "~*", "&*", "+@all"),
      "+OK",
    );
    const victim = await startNode(user, `, username: "${user}", password: "${password}"`);
    const proxy = await MqttProxy.start(victim.port);
    const watcher = await connect(survivor.url);
    const inbox = new Inbox(watcher);
    await subscribe(watcher, "q2/stored", 2);
    const { client: publisher } = sessionClient(proxy, "q2-stored-publisher");
    try {
      await next(publisher, "connect");
      proxy.routeTo(survivor.port);
      assert.equal(await redis.command("ACL", "SETUSER", user, "-publish"), "+OK");
      const dropped = next(publisher, "close");
      const completed = publisher.publishAsync("q2/stored", "stored-not-published", { qos: 2 });
      await dropped; // the victim closed the connection: its publish failed after the store
      await kill(victim);
      await completed; // PUBREC, PUBREL, PUBCOMP with the survivor
      await publisher.publishAsync("q2/stored", "marker", { qos: 2 });
      await inbox.waitFor(1);
      const marker = payloads(inbox).indexOf("marker");
      await inbox.waitFor(marker + 1);
      assert.deepEqual(payloads(inbox), ["stored-not-published", "marker"]);
      assertHealthy(survivor);
    } finally {
      await end(publisher, watcher);
      await proxy.close();
    }
  });
  it("a clean-session publisher whose flow a dead node cut does not lose its next message with the same packet id", async () => {
    const victim = await startNode("qos2-clean-victim");
    const watcher = await connect(survivor.url);
    const inbox = new Inbox(watcher);
    await subscribe(watcher, "q2/clean", 2);
    const clientId = "q2-clean-publisher";
    const before = await rawConnect(victim.port);
    const after = await rawConnect(survivor.port);
    try {
      before.write(connectPacket(clientId));
      assert.deepEqual(await readBytes(before, 4), CONNACK_ACCEPTED);
      before.write(publishQos2("q2/clean", 1, "first"));
      assert.deepEqual(await readBytes(before, 4), ack(0x50, 1));
      await kill(victim); // no PUBREL: the device restarts, with a clean session
      after.write(connectPacket(clientId));
      assert.deepEqual(await readBytes(after, 4), CONNACK_ACCEPTED);
      // A restarted device numbers its packets from 1 again.
      after.write(publishQos2("q2/clean", 1, "second"));
      assert.deepEqual(await readBytes(after, 4), ack(0x50, 1));
      after.write(ack(0x62, 1));
      assert.deepEqual(await readBytes(after, 4), ack(0x70, 1));
      await watcher.publishAsync("q2/clean", "marker", { qos: 2 });
      while (!payloads(inbox).includes("marker")) await inbox.waitFor(inbox.received.length + 1);
      assert.deepEqual(payloads(inbox), ["first", "second", "marker"]);
      assertHealthy(survivor);
    } finally {
      before.destroy();
      after.destroy();
      await end(watcher);
    }
  });
});

describe("QoS 2 to a subscriber whose node dies mid-flow", () => {
  /**
   * Starts a victim node, a persistent QoS 2 subscriber on it through a proxy, and publishes
   * one message on the victim; the proxy withholds the subscriber's `cut` packet for it, and
   * the victim is killed. The subscriber then resumes on the survivor.
   */
  async function cutDelivery(name: string, cut: number) {
    const victim = await startNode(name);
    const proxy = await MqttProxy.start(victim.port);
    const clientId = `${name}-subscriber`;
    const topic = `q2/${name}`;
    const subscriber = sessionClient(proxy, clientId);
    await next(subscriber.client, "connect");
    await subscriber.client.subscribeAsync(topic, { qos: 2 });
    proxy.routeTo(survivor.port);
    const withheld = proxy.cutAt((f) => f.type === cut);
    const publisher = await connect(victim.url);
    await publisher.publishAsync(topic, "once", { qos: 2 });
    const frame = await withheld;
    await end(publisher);
    await kill(victim);
    return { ...subscriber, proxy, clientId, topic, messageId: frame.messageId };
  }

  it("a PUBREC the dead node never saw: the survivor resends the PUBLISH (DUP, same id), then PUBREL; delivered once", async () => {
    const { client, inbox, errors, publishes, proxy, clientId, topic, messageId } =
      await cutDelivery("qos2-pubrec-victim", PacketType.pubrec);
    const publisher = await connect(survivor.url);
    try {
      await survivor.process.waitForLog(
        (l) => l.event === "client.connected" && l.clientId === clientId,
      );
      // MQTT.js hands a QoS 2 message to the application on PUBREL.
      const [first] = await inbox.waitFor(1);
      assert.equal(first?.payload.toString(), "once");
      await publisher.publishAsync(topic, "marker", { qos: 2 });
      await inbox.waitFor(2);
      assert.deepEqual(payloads(inbox), ["once", "marker"]);
      const copies = publishes.filter((p) => p.payload.toString() === "once");
      assert.deepEqual(
        copies.map((p) => ({ id: p.messageId, dup: p.dup })),
        [
          { id: messageId, dup: false },
          { id: messageId, dup: true },
        ],
      );
      await settles(async () => (await outgoingQueueLength(clientId)) === 0, "flows completed");
      assert.deepEqual(errors, []);
      assertHealthy(survivor);
    } finally {
      await end(client, publisher);
      await proxy.close();
    }
  });

  it("a PUBCOMP the dead node never saw: the survivor resends the PUBREL and the session resumes; delivered once", async () => {
    const { client, inbox, errors, proxy, clientId, topic } = await cutDelivery(
      "qos2-pubcomp-victim",
      PacketType.pubcomp,
    );
    const publisher = await connect(survivor.url);
    try {
      // The victim's PUBREL reached the subscriber: the application has the message.
      assert.deepEqual(payloads(inbox), ["once"]);
      await survivor.process.waitForLog(
        (l) => l.event === "client.connected" && l.clientId === clientId,
      );
      await settles(async () => (await outgoingQueueLength(clientId)) === 0, "flow completed");
      await publisher.publishAsync(topic, "marker", { qos: 2 });
      await inbox.waitFor(2);
      assert.deepEqual(payloads(inbox), ["once", "marker"]);
      assert.deepEqual(errors, []);
      assertHealthy(survivor);
    } finally {
      await end(client, publisher);
      await proxy.close();
    }
  });
});

describe("QoS 2 state of a persistent subscriber", () => {
  /** More flows than aedes-persistence-redis sent per session resume (1,001). */
  const FLOWS = 1_050;
  const WINDOW = 20;

  it("completed QoS 2 flows leave no entry in the subscriber's queue; a message queued after them is delivered on resume", async () => {
    const clientId = "q2-many-flows";
    const topic = "q2/many";
    const subscriber = await connect(survivor.url, { clientId, clean: false });
    await subscribe(subscriber, topic, 2);
    const inbox = new Inbox(subscriber);
    const publisher = await connect(survivor.url);
    let resumed: MqttClient | undefined;
    try {
      let sent = 0;
      const publishSome = async (): Promise<void> => {
        while (sent < FLOWS) {
          sent++;
          await publisher.publishAsync(topic, "flow", { qos: 2 });
        }
      };
      await Promise.all(Array.from({ length: WINDOW }, publishSome));
      await inbox.waitFor(FLOWS);
      await settles(
        async () => (await outgoingQueueLength(clientId)) === 0,
        "queue emptied by the completed flows",
      );
      await end(subscriber);
      await publisher.publishAsync(topic, "queued", { qos: 2 });
      // The inbox listens before CONNACK: the queued message may arrive in the same read.
      const back = await connectWithConnack(survivor.url, { clientId, clean: false });
      resumed = back.client;
      const [message] = await back.inbox.waitFor(1);
      assert.equal(message?.payload.toString(), "queued");
    } finally {
      await end(subscriber, publisher, resumed);
    }
  });
});
