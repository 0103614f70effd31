import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { IClientOptions } from "mqtt";
import mqttPacket, {
  type IConnackPacket,
  type IDisconnectPacket,
  type IPubackPacket,
  type IPublishPacket,
} from "mqtt-packet";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { LogCapture } from "../../harness/log-capture.js";
import {
  connackOf,
  connect,
  end,
  type MqttClient,
  nextPacket,
  subscribeGranted,
} from "../../harness/mqtt-client.js";
import {
  closedByPeer,
  connectPacket,
  mqttString,
  packet,
  rawConnect,
} from "../../harness/raw-socket.js";
import { RedisServer } from "../../harness/redis-server.js";
import { publish, WireClient } from "../../harness/wire-client.js";
import { hashPassword } from "../../src/security/password-hash.js";

/**
 * Issue 15: wherever Sluice refuses or closes, an MQTT 5 client learns why (a reason code, and
 * a short Reason String unless it asked for none), while an MQTT 3.1.1 client keeps its return
 * codes exactly.
 */
const V5: IClientOptions = { protocolVersion: 5 };
const ACL = `user dev-a
topic readwrite dev/a/#
`;
const PASSWORDS = { "dev-a": "pw-a", "dev-c": "pw-c", "dev-q": "pw-q" } as const;

function portOf(url: string): number {
  return Number(new URL(url).port);
}

/** A raw MQTT 5 connection, CONNACK received. */
async function wire5(url: string, clientId: string, keepalive = 60): Promise<WireClient> {
  const wire = new WireClient(await rawConnect(portOf(url)), 5);
  wire.send({ cmd: "connect", protocolVersion: 5, clientId, keepalive, clean: true });
  const connack = (await wire.waitFor("CONNACK", (p) => p.cmd === "connack")) as IConnackPacket;
  assert.equal(connack.reasonCode, 0);
  return wire;
}

function disconnectOf(wire: WireClient): Promise<IDisconnectPacket> {
  return wire.waitFor("DISCONNECT", (p) => p.cmd === "disconnect") as Promise<IDisconnectPacket>;
}

describe("MQTT 5 reason codes on a secured node", () => {
  let dir: string;
  let node: RunningNode;
  let url: string;
  let logs: LogCapture;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sluice-reasons-"));
    const lines = await Promise.all(
      Object.entries(PASSWORDS).map(async ([u, p]) => `${u}:${await hashPassword(p)}`),
    );
    await writeFile(join(dir, "passwd"), `${lines.join("\n")}\n`);
    await writeFile(join(dir, "acl.conf"), ACL);
    logs = new LogCapture("info");
    node = await startNode(
      {
        auth: { allowAnonymous: false, passwordFile: "passwd", clientIdPattern: "%u-*" },
        acl: { file: "acl.conf" },
        limits: {
          authFailures: { perIp: 100, perUsername: 2, blockSeconds: 60 },
          connections: { perUsername: 2 },
          maxKeepaliveSeconds: 60,
          maxTopicBytes: 64,
          subscriptions: { perClient: 2 },
        },
      },
      dir,
      { logger: logs.logger },
    );
    url = node.urls.tcp as string;
  });
  after(async () => {
    await node?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("bad user name or password: v5 CONNACK 0x86 with a reason string, v3.1.1 return code 4, both audited alike", async () => {
    const v5 = await connackOf(url, { ...V5, clientId: "x5", username: "ghost-5", password: "no" });
    assert.equal(v5.reasonCode, 0x86);
    assert.equal(v5.properties?.reasonString, "bad user name or password");
    const v4 = await connackOf(url, { clientId: "x4", username: "ghost-4", password: "no" });
    assert.equal(v4.returnCode, 4);
    const audited = (user: string) =>
      logs.waitFor((l) => l.event === "audit.auth_failed" && l.username === user);
    const [line5, line4] = await Promise.all([audited("ghost-5"), audited("ghost-4")]);
    assert.equal(line5.reason, line4.reason);
  });

  it("Request Problem Information 0: the refusal comes without a reason string", async () => {
    const connack = await connackOf(url, {
      ...V5,
      clientId: "x6",
      username: "ghost-6",
      password: "no",
      properties: { requestProblemInformation: false },
    });
    assert.equal(connack.reasonCode, 0x86);
    assert.equal(connack.properties?.reasonString, undefined);
  });

  it("not authorized (a will topic the ACL denies): v5 0x87, v3.1.1 5", async () => {
    const will = {
      topic: "dev/b/status",
      payload: Buffer.from("gone"),
      qos: 0 as const,
      retain: false,
    };
    const asDevA = { username: "dev-a", password: PASSWORDS["dev-a"], will };
    const v5 = await connackOf(url, { ...V5, ...asDevA, clientId: "dev-a-w5" });
    assert.equal(v5.reasonCode, 0x87);
    const v4 = await connackOf(url, { ...asDevA, clientId: "dev-a-w4" });
    assert.equal(v4.returnCode, 5);
  });

  it("client identifier not valid (a bound identity without one): v5 0x85", async () => {
    const v5 = await connackOf(url, {
      ...V5,
      clientId: "",
      username: "dev-a",
      password: PASSWORDS["dev-a"],
    });
    assert.equal(v5.reasonCode, 0x85);
    assert.equal(v5.properties?.reasonString, "client identifier not valid");
  });

  it("banned (locked out after repeated failures): v5 0x8A, v3.1.1 5", async () => {
    const bad = { username: "dev-c", password: "wrong" };
    assert.equal((await connackOf(url, { ...V5, ...bad, clientId: "dev-c-1" })).reasonCode, 0x86);
    assert.equal((await connackOf(url, { ...V5, ...bad, clientId: "dev-c-2" })).reasonCode, 0x86);
    const good = { username: "dev-c", password: PASSWORDS["dev-c"] };
    const v5 = await connackOf(url, { ...V5, ...good, clientId: "dev-c-3" });
    assert.equal(v5.reasonCode, 0x8a);
    const v4 = await connackOf(url, { ...good, clientId: "dev-c-4" });
    assert.equal(v4.returnCode, 5);
  });

  it("a per-username connection quota: v5 0x97, v3.1.1 3", async () => {
    const asQ = { username: "dev-q", password: PASSWORDS["dev-q"] };
    const held = await connect(url, { ...asQ, clientId: "dev-q-1" });
    const held2 = await connect(url, { ...asQ, clientId: "dev-q-2" });
    try {
      const v5 = await connackOf(url, { ...V5, ...asQ, clientId: "dev-q-5" });
      assert.equal(v5.reasonCode, 0x97);
      assert.equal(v5.properties?.reasonString, "quota exceeded");
      const v4 = await connackOf(url, { ...asQ, clientId: "dev-q-3" });
      assert.equal(v4.returnCode, 3);
    } finally {
      await end(held, held2);
    }
  });

  it("a keep-alive over the limit: v5 gets Server Keep Alive = the limit, v3.1.1 is refused (2)", async () => {
    const asA = { username: "dev-a", password: PASSWORDS["dev-a"] };
    for (const keepalive of [0, 3_600]) {
      const v5 = await connackOf(url, {
        ...V5,
        ...asA,
        clientId: `dev-a-k${keepalive}`,
        keepalive,
      });
      assert.equal(v5.reasonCode, 0, `keepalive ${keepalive}`);
      assert.equal(v5.properties?.serverKeepAlive, 60, `keepalive ${keepalive}`);
    }
    const within = await connackOf(url, { ...V5, ...asA, clientId: "dev-a-k30", keepalive: 30 });
    assert.equal(within.properties?.serverKeepAlive, undefined);
    const v4 = await connackOf(url, { ...asA, clientId: "dev-a-k4", keepalive: 3_600 });
    assert.equal(v4.returnCode, 2);
  });

  it("PUBACK 0x87 for a publish the ACL denies (v5); v3.1.1 gets a plain PUBACK; the connection stays", async () => {
    const v5 = await connect(url, {
      ...V5,
      username: "dev-a",
      password: "pw-a",
      clientId: "dev-a-p5",
    });
    const v4 = await connect(url, { username: "dev-a", password: "pw-a", clientId: "dev-a-p4" });
    try {
      const ack5 = nextPacket<IPubackPacket>(v5, "puback");
      v5.publish("dev/b/x", "no", { qos: 1 }, () => {});
      assert.equal((await ack5).reasonCode, 0x87);
      assert.equal((await ack5).properties, undefined, "the code alone, no Reason String");
      const ack4 = nextPacket<IPubackPacket>(v4, "puback");
      v4.publish("dev/b/x", "no", { qos: 1 }, () => {});
      assert.equal((await ack4).reasonCode, undefined);
      await v5.publishAsync("dev/a/x", "yes", { qos: 1 });
    } finally {
      await end(v5, v4);
    }
  });

  it("SUBACK: each filter its own code for v5 (0x87, 0x8F, 0x97); 0x80 for each refusal in v3.1.1", async () => {
    const asA = { username: "dev-a", password: PASSWORDS["dev-a"] };
    const v5 = await connect(url, { ...V5, ...asA, clientId: "dev-a-s5" });
    const v4 = await connect(url, { ...asA, clientId: "dev-a-s4" });
    const long = `dev/a/${"x".repeat(64)}`;
    try {
      const filters = {
        "dev/a/1": { qos: 1 as const },
        "dev/b/1": { qos: 1 as const },
        [long]: { qos: 1 as const },
        "dev/a/2": { qos: 0 as const },
        "dev/a/3": { qos: 0 as const },
      };
      assert.deepEqual(await subscribeGranted(v5, filters), [1, 0x87, 0x8f, 0, 0x97]);
      // a group no rule grants (shared subscriptions need `$share/<group>/<filter>` granted too)
      assert.deepEqual(await subscribeGranted(v5, { "$share/g/dev/a/9": { qos: 0 } }), [0x87]);
      assert.deepEqual(await subscribeGranted(v4, filters), [1, 0x80, 0x80, 0, 0x80]);
    } finally {
      await end(v5, v4);
    }
  });
});

describe("MQTT 5 disconnects and flow control on one node", () => {
  let node: RunningNode;
  let url: string;
  before(async () => {
    node = await startNode({
      limits: { maxPacketBytes: 4_096, maxKeepaliveSeconds: 600 },
      mqtt5: { receiveMaximum: 3 },
    });
    url = node.urls.tcp as string;
  });
  after(() => node?.stop());

  it("the CONNACK advertises the Receive Maximum", async () => {
    const connack = await connackOf(url, { ...V5, clientId: "rm-connack" });
    assert.equal(connack.properties?.receiveMaximum, 3);
  });

  it("QoS 2 PUBLISHes past the Receive Maximum without PUBREL: DISCONNECT 0x93 [MQTT-3.3.4-9]", async () => {
    const wire = await wire5(url, "rm-over");
    wire.send(...[1, 2, 3].map((id) => publish("rm/x", "m", 2, id)));
    await wire.waitForCount("pubrec", 3);
    // a DUP of one held takes no second slot
    wire.send({ ...(publish("rm/x", "m", 2, 3) as IPublishPacket), dup: true });
    await wire.roundTrip();
    assert.equal(wire.received("disconnect").length, 0);
    wire.send(publish("rm/x", "m", 2, 4));
    assert.equal((await disconnectOf(wire)).reasonCode, 0x93);
    await wire.closedWithin();
  });

  it("past the Receive Maximum, what the client still sends after the DISCONNECT meets no reset", async () => {
    // Paho's test_flow_control2: the client answers each PUBREC with a PUBREL while it reads,
    // after the node closed. A socket destroyed at once answers those with a reset, and the
    // reset discards the DISCONNECT still unread on the client's side.
    const socket = await rawConnect(portOf(url));
    const errors: string[] = [];
    socket.on("error", (error: NodeJS.ErrnoException) => errors.push(error.code ?? error.message));
    const wire = new WireClient(socket, 5);
    wire.send({
      cmd: "connect",
      protocolVersion: 5,
      clientId: "rm-linger",
      keepalive: 60,
      clean: true,
    });
    await wire.waitFor("CONNACK", (p) => p.cmd === "connack");
    wire.send(...[1, 2, 3, 4].map((id) => publish("rm/l", "m", 2, id)));
    assert.equal((await disconnectOf(wire)).reasonCode, 0x93);
    // The node has closed its side by now; the client keeps talking, as Paho's does.
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    for (let id = 1; id <= 3; id++)
      socket.write(mqttPacket.generate({ cmd: "pubrel", messageId: id }));
    await withDeadline(closed, 5_000, "the connection closes");
    assert.deepEqual(errors, [], "no reset: the node read what came after its DISCONNECT");
  });

  it("PUBREL frees the slot: a publisher that keeps to the maximum is never cut", async () => {
    const wire = await wire5(url, "rm-within");
    for (let round = 0; round < 4; round++) {
      const ids = [1, 2, 3].map((i) => round * 3 + i);
      wire.send(...ids.map((id) => publish("rm/y", "m", 2, id)));
      await wire.waitForCount("pubrec", (round + 1) * 3);
      wire.send(...ids.map((messageId) => ({ cmd: "pubrel" as const, messageId })));
      await wire.waitForCount("pubcomp", (round + 1) * 3);
    }
    wire.send(...[101, 102, 103].map((id) => publish("rm/y", "m", 1, id)));
    await wire.waitForCount("puback", 3);
    assert.equal(wire.received("disconnect").length, 0);
    wire.stream.destroy();
  });

  it("MQTT.js keeping the Receive Maximum outstanding at full speed is never cut; past it, 0x93", async () => {
    const client = await connect(url, { ...V5, clientId: "rm-mqttjs" });
    try {
      for (let i = 0; i < 100; i++) {
        const window = [0, 1, 2].map((j) =>
          client.publishAsync("rm/z", `${i}.${j}`, { qos: j === 1 ? 2 : 1 }),
        );
        await withDeadline(Promise.all(window), 5_000, `window ${i} acknowledged`);
      }
      // MQTT.js does not hold back for the server's Receive Maximum: a burst past it is cut
      const told = nextPacket<IDisconnectPacket>(client, "disconnect");
      for (let i = 0; i < 10; i++) client.publish("rm/z", "burst", { qos: 1 }, () => {});
      assert.equal((await told).reasonCode, 0x93);
    } finally {
      await end(client);
    }
  });

  it("a keep-alive timeout: DISCONNECT 0x8D", async () => {
    const wire = await wire5(url, "ka-timeout", 1);
    assert.equal((await disconnectOf(wire)).reasonCode, 0x8d);
    await wire.closedWithin();
  });

  it("a PUBLISH over limits.maxPacketBytes: DISCONNECT 0x95; v3.1.1 is just closed", async () => {
    const wire = await wire5(url, "too-large");
    wire.send(publish("big/x", Buffer.alloc(5_000), 0));
    assert.equal((await disconnectOf(wire)).reasonCode, 0x95);
    await wire.closedWithin();
  });

  it("a CONNECT over limits.maxPacketBytes: v5 CONNACK 0x95, v3.1.1 closed without CONNACK", async () => {
    const v5 = new WireClient(await rawConnect(portOf(url)), 5);
    v5.send({
      cmd: "connect",
      protocolVersion: 5,
      clientId: "big-connect",
      keepalive: 60,
      clean: true,
      properties: { userProperties: { pad: "p".repeat(5_000) } },
    });
    const connack = (await v5.waitFor("CONNACK", (p) => p.cmd === "connack")) as IConnackPacket;
    assert.equal(connack.reasonCode, 0x95);
    await v5.closedWithin();
    const v4: Socket = await rawConnect(portOf(url));
    const big = connectPacket("x".repeat(5_000));
    v4.write(big);
    assert.equal((await closedByPeer(v4)).length, 0);
  });

  it("a malformed string (U+0000 in a topic) after CONNECT: DISCONNECT 0x81", async () => {
    const wire = await wire5(url, "malformed");
    const topic = Buffer.from("a\u0000b");
    // PUBLISH QoS 0: topic, empty properties, payload
    wire.send(packet(0x30, Buffer.concat([mqttString(topic), Buffer.from([0]), Buffer.from("x")])));
    assert.equal((await disconnectOf(wire)).reasonCode, 0x81);
    await wire.closedWithin();
  });

  it("a malformed filter aedes lets through (a/+b): DISCONNECT 0x82", async () => {
    const wire = await wire5(url, "bad-filter");
    wire.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "a/+b", qos: 0 }] });
    assert.equal((await disconnectOf(wire)).reasonCode, 0x82);
    await wire.closedWithin();
  });

  it("a takeover on one node: the old v5 connection gets DISCONNECT 0x8E", async () => {
    const first = await connect(url, { ...V5, clientId: "taken" });
    const told = nextPacket<IDisconnectPacket>(first, "disconnect");
    const second = await connect(url, { ...V5, clientId: "taken" });
    try {
      assert.equal((await told).reasonCode, 0x8e);
    } finally {
      await end(first, second);
    }
  });
});

describe("MQTT 5 refusals of an overloaded node", () => {
  it("server busy: v5 CONNACK 0x89, v3.1.1 3", async () => {
    const logs = new LogCapture("info");
    const node = await startNode(
      { limits: { overload: { heapUsedRatio: 0.001 } } },
      process.cwd(),
      { logger: logs.logger },
    );
    try {
      await withDeadline(
        logs.waitFor((l) => l.event === "overload.started"),
        5_000,
        "overload.started",
      );
      const url = node.urls.tcp as string;
      const v5 = await connackOf(url, { ...V5, clientId: "busy-5" });
      assert.equal(v5.reasonCode, 0x89);
      assert.equal(v5.properties?.reasonString, "server busy, retry later");
      assert.equal((await connackOf(url, { clientId: "busy-4" })).returnCode, 3);
    } finally {
      await node.stop();
    }
  });
});

describe("MQTT 5 disconnects while a node drains", () => {
  it("0x9C with the Server Reference when shutdown.serverReference is set; v3.1.1 just closed", async () => {
    const node = await startNode({ shutdown: { drainSeconds: 0, serverReference: "other:1883" } });
    const url = node.urls.tcp as string;
    const v5 = await connect(url, { ...V5, clientId: "drain-5" });
    const v4 = await connect(url, { clientId: "drain-4" });
    const told = nextPacket<IDisconnectPacket>(v5, "disconnect");
    const v4Closed = new Promise<void>((resolve) => v4.once("close", () => resolve()));
    try {
      await node.stop();
      const disconnect = await told;
      assert.equal(disconnect.reasonCode, 0x9c);
      assert.equal(disconnect.properties?.serverReference, "other:1883");
      await v4Closed;
    } finally {
      await end(v5, v4);
    }
  });

  it("0x8B without a Server Reference", async () => {
    const node = await startNode({ shutdown: { drainSeconds: 0 } });
    const v5 = await connect(node.urls.tcp as string, { ...V5, clientId: "drain-8b" });
    const told = nextPacket<IDisconnectPacket>(v5, "disconnect");
    try {
      await node.stop();
      assert.equal((await told).reasonCode, 0x8b);
    } finally {
      await end(v5);
    }
  });
});

describe("MQTT 5 disconnect for a publisher over its limits", () => {
  it("throttled without a break for disconnectAfterSeconds: DISCONNECT 0x96", async () => {
    const node = await startNode({
      limits: { publish: { messagesPerSecond: 5, burstMessages: 1, disconnectAfterSeconds: 1 } },
    });
    const client = await connect(node.urls.tcp as string, { ...V5, clientId: "flooder" });
    const told = nextPacket<IDisconnectPacket>(client, "disconnect");
    try {
      for (let i = 0; i < 100 && client.connected; i++) client.publish("flood/x", "m", { qos: 0 });
      const disconnect = await withDeadline(told, 10_000, "DISCONNECT 0x96");
      assert.equal(disconnect.reasonCode, 0x96);
    } finally {
      await end(client);
      await node.stop();
    }
  });
});

describe("MQTT 5 takeover across two nodes over Redis", () => {
  it("a CONNECT on node B with the id of a v5 client on node A: A's connection gets DISCONNECT 0x8E", async () => {
    const redis = await RedisServer.start();
    const keyPrefix = `r5${randomBytes(4).toString("hex")}:`;
    const a = await startNode({ nodeId: "node-a", redis: { url: redis.url, keyPrefix } });
    const b = await startNode({ nodeId: "node-b", redis: { url: redis.url, keyPrefix } });
    let first: MqttClient | undefined;
    let second: MqttClient | undefined;
    try {
      first = await connect(a.urls.tcp as string, { ...V5, clientId: "moved" });
      const told = nextPacket<IDisconnectPacket>(first, "disconnect");
      second = await connect(b.urls.tcp as string, { ...V5, clientId: "moved" });
      assert.equal((await told).reasonCode, 0x8e);
    } finally {
      await end(first, second);
      await a.stop();
      await b.stop();
      await redis.stop();
    }
  });
});
