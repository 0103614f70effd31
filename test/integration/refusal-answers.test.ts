import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { connect as netConnect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { IClientOptions, IConnackPacket } from "mqtt";
import mqttPacket, { type IConnectPacket } from "mqtt-packet";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { LogCapture } from "../../harness/log-capture.js";
import { connect, end, type MqttClient } from "../../harness/mqtt-client.js";
import { proxyV1 } from "../../harness/proxy-protocol.js";
import { closedByPeer } from "../../harness/raw-socket.js";
import { RedisServer } from "../../harness/redis-server.js";
import { connackOver, labelledMetric, mosquittoSub } from "../../harness/refusal-clients.js";
import { hashPassword } from "../../src/security/password-hash.js";

/**
 * Issue 15: a client refused by a socket quota (per address, per node, connection rate) is
 * told why when that is affordable (MQTT 5 CONNACK 0x97 or 0x9F, 3.1.1 return code 3) and
 * dropped when it is not: past 2 answers at once per address, 64 per node, 200 a second, or
 * while the node is overloaded.
 */
function portOf(node: RunningNode): number {
  return Number(new URL(node.urls.tcp as string).port);
}

/** MQTT.js from `fromAddress` to the node's TCP listener: the CONNACK, or "closed". */
function connackFrom(
  node: RunningNode,
  fromAddress: string,
  options: IClientOptions,
): Promise<IConnackPacket | "closed"> {
  return connackOver({ url: node.urls.tcp as string, fromAddress }, options);
}

function mosquittoSubTo(
  node: RunningNode,
  fromAddress: string,
  version: "mqttv5" | "mqttv311",
  extra: string[] = [],
): Promise<{ code: number; output: string }> {
  return mosquittoSub(portOf(node), fromAddress, version, extra);
}

function rawConnect5(clientId: string, properties: IConnectPacket["properties"] = {}): Buffer {
  return mqttPacket.generate({
    cmd: "connect",
    protocolId: "MQTT",
    protocolVersion: 5,
    clientId,
    clean: true,
    keepalive: 60,
    properties,
  });
}

function dial(node: RunningNode, fromAddress: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: "127.0.0.1", port: portOf(node), localAddress: fromAddress });
    socket.once("connect", () => resolve(socket));
    socket.once("error", reject);
  });
}

/** Sends `bytes` on a new connection and resolves with all the node sent before it closed. */
async function exchange(node: RunningNode, fromAddress: string, bytes: Buffer): Promise<Buffer> {
  const socket = await dial(node, fromAddress);
  socket.on("error", () => {});
  const closed = closedByPeer(socket);
  socket.write(bytes);
  return withDeadline(closed, 5_000, "the node's close");
}

function metric(node: RunningNode, name: string, label: string): Promise<number> {
  return labelledMetric(node.httpUrl, name, label);
}

/** Waits (bounded) until the node counted `count` refusals for `reason`. */
async function refusalsCounted(node: RunningNode, reason: string, count: number): Promise<void> {
  const deadline = Date.now() + 5_000;
  while ((await metric(node, "sluice_connections_rejected_total", `reason="${reason}"`)) < count) {
    assert.ok(Date.now() < deadline, `fewer than ${count} ${reason} refusals counted`);
  }
}

function readyz(node: RunningNode): Promise<number> {
  return fetch(`${node.httpUrl}/readyz`).then((r) => r.status);
}

const V5: IClientOptions = { protocolVersion: 5 };
const V4: IClientOptions = { protocolVersion: 4 };

describe("socket quotas answered with a CONNACK", () => {
  it("per address: MQTT.js v5 0x97 with its reason string, v3.1.1 3, mosquitto_sub -V mqttv5 151; counted once", async () => {
    const node = await startNode({ limits: { connections: { perIp: 1 } } });
    const addresses = ["127.0.3.1", "127.0.3.2", "127.0.3.3", "127.0.3.4"];
    const held: MqttClient[] = [];
    try {
      for (const from of addresses)
        held.push(await connect(node.urls.tcp as string, { fromAddress: from }));
      const [v5, v4, mosquitto5, mosquitto4] = await Promise.all([
        connackFrom(node, "127.0.3.1", { ...V5, clientId: "refused-5" }),
        connackFrom(node, "127.0.3.2", { ...V4, clientId: "refused-4" }),
        mosquittoSubTo(node, "127.0.3.3", "mqttv5"),
        mosquittoSubTo(node, "127.0.3.4", "mqttv311"),
      ]);
      assert.ok(v5 !== "closed" && v4 !== "closed");
      assert.equal(v5.reasonCode, 0x97);
      assert.equal(v5.properties?.reasonString, "quota exceeded");
      assert.equal(v4.returnCode, 3);
      assert.match(mosquitto5.output, /received CONNACK \(151\)/);
      assert.notEqual(mosquitto5.code, 0);
      assert.match(mosquitto4.output, /received CONNACK \(3\)/);
      assert.equal(
        await metric(node, "sluice_connections_rejected_total", 'reason="per_ip"'),
        4,
        "each refusal counted once, under its quota",
      );
    } finally {
      await end(...held);
      await node.stop();
    }
  });

  it("limits.connections.answerRefusals false: closed without a CONNACK (clients that stop at a refusal keep retrying)", async () => {
    const node = await startNode({ limits: { connections: { perIp: 1, answerRefusals: false } } });
    let held: MqttClient | undefined;
    try {
      held = await connect(node.urls.tcp as string, { fromAddress: "127.0.3.9" });
      const refused = await connackFrom(node, "127.0.3.9", { ...V5, clientId: "refused-closed" });
      assert.equal(refused, "closed");
      await refusalsCounted(node, "per_ip", 1);
    } finally {
      await end(held);
      await node.stop();
    }
  });

  it("per node: 0x97; Request Problem Information 0: the code alone", async () => {
    const node = await startNode({ limits: { connections: { perNode: 1 } } });
    const held = await connect(node.urls.tcp as string);
    try {
      const v5 = await connackFrom(node, "127.0.3.5", { ...V5, clientId: "refused" });
      assert.ok(v5 !== "closed");
      assert.equal(v5.reasonCode, 0x97);
      const quiet = await connackFrom(node, "127.0.3.6", {
        ...V5,
        clientId: "quiet",
        properties: { requestProblemInformation: false },
      });
      assert.ok(quiet !== "closed");
      assert.equal(quiet.reasonCode, 0x97);
      assert.equal(quiet.properties, undefined);
    } finally {
      await end(held);
      await node.stop();
    }
  });

  it("connection rate: MQTT.js v5 0x9F with its reason string, v3.1.1 3, mosquitto_sub -V mqttv5 159", async () => {
    // A fresh node: the rate's one-second window starts with the first attempts below.
    const node = await startNode({ limits: { connections: { ratePerIp: 1 } } });
    const addresses = ["127.0.4.1", "127.0.4.2", "127.0.4.3"];
    try {
      const started = Date.now();
      const first = await Promise.all(
        addresses.map((from) => connect(node.urls.tcp as string, { fromAddress: from })),
      );
      await end(...first);
      const [v5, v4, mosquitto5] = await Promise.all([
        connackFrom(node, "127.0.4.1", { ...V5, clientId: "fast-5" }),
        connackFrom(node, "127.0.4.2", { ...V4, clientId: "fast-4" }),
        mosquittoSubTo(node, "127.0.4.3", "mqttv5"),
      ]);
      const elapsed = Date.now() - started;
      assert.ok(elapsed < 1_000, `the attempts took ${elapsed} ms, past the rate's window`);
      assert.ok(v5 !== "closed" && v4 !== "closed");
      assert.equal(v5.reasonCode, 0x9f);
      assert.equal(v5.properties?.reasonString, "connection rate exceeded, retry later");
      assert.equal(v4.returnCode, 3);
      assert.match(mosquitto5.output, /received CONNACK \(159\)/);
      assert.equal(await metric(node, "sluice_connections_rejected_total", 'reason="rate"'), 3);
    } finally {
      await node.stop();
    }
  });

  it("across the cluster (limits.connections.cluster, counts from Redis): 0x97 on the other node", async () => {
    const redis = await RedisServer.start();
    const prefix = `refusals${Date.now().toString(36)}:`;
    const clusterNode = (nodeId: string) =>
      startNode({
        nodeId,
        redis: { url: redis.url, keyPrefix: prefix },
        limits: { connections: { cluster: 1 } },
      });
    const a = await clusterNode("refusals-a").catch(async (error: unknown) => {
      await redis.stop();
      throw error;
    });
    const b = await clusterNode("refusals-b").catch(async (error: unknown) => {
      await a.stop();
      await redis.stop();
      throw error;
    });
    const held = await connect(a.urls.tcp as string);
    try {
      // B learns A's count within a second (each node writes its own count every second).
      const deadline = Date.now() + 5_000;
      let outcome = await connackFrom(b, "127.0.3.9", { ...V5, clientId: "across" });
      while (outcome !== "closed" && outcome.reasonCode === 0 && Date.now() < deadline) {
        outcome = await connackFrom(b, "127.0.3.9", { ...V5, clientId: "across" });
      }
      assert.ok(outcome !== "closed");
      assert.equal(outcome.reasonCode, 0x97);
      assert.equal(outcome.properties?.reasonString, "quota exceeded");
      assert.ok((await metric(b, "sluice_connections_rejected_total", 'reason="cluster"')) >= 1);
    } finally {
      await end(held);
      await a.stop();
      await b.stop();
      await redis.stop();
    }
  });

  it("behind the PROXY protocol: the address the header names gets the answer", async () => {
    const node = await startNode({
      listeners: [
        {
          type: "tcp",
          host: "127.0.0.1",
          port: 0,
          proxyProtocol: true,
          trustedProxies: ["127.0.0.1/32"],
        },
      ],
      limits: { connections: { perIp: 1 } },
    });
    const holder = await dial(node, "127.0.0.1");
    try {
      holder.on("error", () => {});
      const accepted = new Promise<Buffer>((resolve) => holder.once("data", resolve));
      holder.write(Buffer.concat([proxyV1("203.0.113.9"), rawConnect5("holder")]));
      assert.equal((await accepted)[3], 0x00, "the first from 203.0.113.9 is accepted");
      const sent = await exchange(
        node,
        "127.0.0.1",
        Buffer.concat([proxyV1("203.0.113.9"), rawConnect5("second")]),
      );
      assert.equal(sent[0], 0x20, "a CONNACK");
      assert.equal(sent[3], 0x97);
    } finally {
      holder.destroy();
      await node.stop();
    }
  });

  it("no answer without a valid CONNECT within the cap: another packet, an oversized CONNECT", async () => {
    const node = await startNode({ limits: { connections: { perNode: 1 } } });
    const held = await connect(node.urls.tcp as string);
    try {
      const ping = await exchange(node, "127.0.3.7", mqttPacket.generate({ cmd: "pingreq" }));
      assert.equal(ping.length, 0);
      const oversized = await exchange(node, "127.0.3.8", rawConnect5("x".repeat(600)));
      assert.equal(oversized.length, 0);
      const deadline = Date.now() + 5_000;
      while (
        (await metric(node, "sluice_connection_refusal_answers_total", 'outcome="unread"')) < 2
      ) {
        assert.ok(Date.now() < deadline, "the unread refusals were never counted");
      }
    } finally {
      await end(held);
      await node.stop();
    }
  });
});

describe("refusals past the answers' bounds are dropped", () => {
  it("silent refused sockets take at most 2 places per address and 64 per node; past them, a close without a CONNACK; the node stays ready; after the deadline, answers again", async () => {
    const node = await startNode({
      limits: { connectTimeoutMs: 1_500, connections: { perNode: 1 } },
    });
    const held = await connect(node.urls.tcp as string);
    const silent: Socket[] = [];
    try {
      // 2 places from one address: a third from it is dropped while 62 places are free.
      silent.push(await dial(node, "127.0.5.1"), await dial(node, "127.0.5.1"));
      await refusalsCounted(node, "per_node", 2);
      assert.equal(
        (await exchange(node, "127.0.5.1", rawConnect5("third-from-one-address"))).length,
        0,
        "a third refusal from one address is dropped",
      );
      // The 62 other places, from 31 more addresses: the 65th refusal on the node is dropped.
      for (let i = 2; i <= 32; i++) {
        silent.push(await dial(node, `127.0.5.${i}`), await dial(node, `127.0.5.${i}`));
      }
      const silentClosed = silent.map((socket) => closedByPeer(socket));
      await refusalsCounted(node, "per_node", 65);
      assert.equal(
        (await exchange(node, "127.0.6.1", rawConnect5("sixty-fifth"))).length,
        0,
        "the 65th refusal on the node is dropped",
      );
      assert.equal(await readyz(node), 200);
      assert.equal(
        await metric(node, "sluice_connection_refusal_answers_total", 'outcome="dropped"'),
        2,
      );
      // The silent sockets are closed at the deadline (min(2 s, connectTimeoutMs)) unanswered.
      const sent = await withDeadline(Promise.all(silentClosed), 5_000, "silent sockets closed");
      assert.ok(sent.every((bytes) => bytes.length === 0));
      const again = await exchange(node, "127.0.6.1", rawConnect5("after-the-deadline"));
      assert.equal(again[3], 0x97, "answered again once places are free");
    } finally {
      for (const socket of silent) socket.destroy();
      await end(held);
      await node.stop();
    }
  });

  it("a connect flood (1,500 refusals, 32 at once from 32 addresses) is answered at most 200 a second, the rest dropped; the node stays ready and takes a client after", async () => {
    const node = await startNode({ limits: { connections: { perNode: 1 } } });
    let held: MqttClient | undefined = await connect(node.urls.tcp as string);
    try {
      const total = 1_500;
      let next = 0;
      let answered = 0;
      let dropped = 0;
      const started = Date.now();
      const worker = async (w: number): Promise<void> => {
        while (next < total) {
          const i = next++;
          const sent = await exchange(node, `127.0.7.${w + 1}`, rawConnect5(`flood-${i}`));
          if (sent.length > 0) answered++;
          else dropped++;
        }
      };
      await withDeadline(
        Promise.all(Array.from({ length: 32 }, (_, w) => worker(w))),
        60_000,
        "the flood",
      );
      // The budget's windows are one second each, the first starting with the flood.
      const windows = Math.floor((Date.now() - started) / 1_000) + 1;
      assert.equal(answered + dropped, total);
      assert.ok(answered <= 200 * windows, `${answered} answered in at most ${windows} windows`);
      assert.ok(answered > 0, "some answered");
      assert.equal(
        await metric(node, "sluice_connection_refusal_answers_total", 'outcome="answered"'),
        answered,
      );
      assert.equal(await readyz(node), 200);
      await end(held);
      held = undefined;
      const deadline = Date.now() + 5_000;
      let after = await connect(node.urls.tcp as string).catch(() => undefined);
      while (after === undefined && Date.now() < deadline) {
        after = await connect(node.urls.tcp as string).catch(() => undefined);
      }
      assert.ok(after, "a client is taken once the place is free");
      await end(after);
    } finally {
      await end(held);
      await node.stop();
    }
  });
});

describe("CONNECT-time refusals seen by mosquitto_sub -V mqttv5", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sluice-refusals-"));
    await writeFile(join(dir, "passwd"), `dev-b:${await hashPassword("pw-b")}\n`);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("locked out after repeated failures: 138 (0x8A banned)", async () => {
    const node = await startNode(
      {
        auth: { allowAnonymous: false, passwordFile: "passwd" },
        limits: { authFailures: { perIp: 2, perUsername: 2, blockSeconds: 60 } },
      },
      dir,
    );
    try {
      for (const password of ["no-1", "no-2"]) {
        const bad = await mosquittoSubTo(node, "127.0.8.1", "mqttv5", [
          "-u",
          "dev-b",
          "-P",
          password,
        ]);
        assert.match(bad.output, /received CONNACK \(134\)/);
      }
      const good = await mosquittoSubTo(node, "127.0.8.1", "mqttv5", ["-u", "dev-b", "-P", "pw-b"]);
      assert.match(good.output, /received CONNACK \(138\)/);
    } finally {
      await node.stop();
    }
  });

  it("overloaded: 137 (0x89 server busy); a socket-quota refusal meanwhile is dropped unanswered", async () => {
    const logs = new LogCapture("info");
    const node = await startNode(
      { limits: { overload: { heapUsedRatio: 0.001 }, connections: { ratePerIp: 1 } } },
      undefined,
      { logger: logs.logger },
    );
    try {
      await withDeadline(
        logs.waitFor((l) => l.event === "overload.started"),
        10_000,
        "overload.started",
      );
      const busy = await mosquittoSubTo(node, "127.0.8.2", "mqttv5");
      assert.match(busy.output, /received CONNACK \(137\)/);
      // The second attempt from the address within the rate's window: refused at the socket.
      const sent = await exchange(node, "127.0.8.2", rawConnect5("while-overloaded"));
      assert.equal(sent.length, 0);
      assert.equal(
        await metric(node, "sluice_connection_refusal_answers_total", 'outcome="dropped"'),
        1,
      );
    } finally {
      await node.stop();
    }
  });
});
