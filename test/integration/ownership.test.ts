import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, end, Inbox, type MqttClient, subscribe } from "../../harness/mqtt-client.js";
import { RedisServer } from "../../harness/redis-server.js";
import { hashPassword } from "../../src/security/password-hash.js";

/**
 * Client-id ownership across nodes: each CONNECT claims its id in Redis with a newer epoch,
 * the displaced node closes its connection only if that connection is older, and a node whose
 * Redis subscription dropped checks its connections again when it is back.
 */
let redis: RedisServer;
let dir: string;
let prefix: string;
let a: RunningNode;
let b: RunningNode;

const closed = (client: MqttClient): Promise<void> =>
  new Promise((resolve) => client.once("close", () => resolve()));

before(async () => {
  redis = await RedisServer.start();
  prefix = `own${randomBytes(4).toString("hex")}:`;
  dir = await mkdtemp(join(tmpdir(), "sluice-ownership-"));
  await writeFile(
    join(dir, "passwd"),
    `op:${await hashPassword("op-secret")}\neve:${await hashPassword("eve-secret")}\n`,
  );
  const node = (nodeId: string) =>
    startNode(
      {
        nodeId,
        redis: { url: redis.url, keyPrefix: prefix },
        auth: { allowAnonymous: false, passwordFile: "passwd" },
      },
      dir,
    );
  a = await node("own-a");
  b = await node("own-b");
});
after(async () => {
  await a?.stop();
  await b?.stop();
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

const op = { username: "op", password: "op-secret" };

describe("client-id ownership across nodes", () => {
  it("another identity cannot take over a live clean-session connection held on another node", async () => {
    const device = await connect(a.urls.tcp as string, { clientId: "pump-7", ...op });
    try {
      const refusal = await connect(b.urls.tcp as string, {
        clientId: "pump-7",
        username: "eve",
        password: "eve-secret",
      }).then(
        () => 0,
        (error: { code?: number }) => Number(error.code),
      );
      assert.equal(refusal, 5, "CONNACK 5: not authorized");
      // The device's connection is untouched: it still round-trips a message.
      const inbox = new Inbox(device);
      await subscribe(device, "pump-7/echo", 1);
      await device.publishAsync("pump-7/echo", "still here", { qos: 1 });
      const [message] = await inbox.waitFor(1);
      assert.equal(message?.payload.toString(), "still here");
    } finally {
      await end(device);
    }
  });

  it("connections alternating between nodes leave exactly the newest one open", async () => {
    const nodes = [a, b, a, b, a, b, a, b];
    const connections: MqttClient[] = [];
    const closings: Array<Promise<void>> = [];
    try {
      for (const node of nodes) {
        const client = await connect(node.urls.tcp as string, { clientId: "flapping-rtu", ...op });
        connections.push(client);
        closings.push(closed(client));
      }
      await Promise.all(closings.slice(0, -1));
      const newest = connections.at(-1) as MqttClient;
      assert.equal(newest.connected, true);
      const inbox = new Inbox(newest);
      await subscribe(newest, "flapping-rtu/echo", 1);
      await newest.publishAsync("flapping-rtu/echo", "owner", { qos: 1 });
      const [message] = await inbox.waitFor(1);
      assert.equal(message?.payload.toString(), "owner");
      assert.equal(newest.connected, true, "no late takeover closed the newest connection");
    } finally {
      await end(...connections);
    }
  });

  it("a takeover missed while a node's Redis subscription was down is caught up on reconnect", async () => {
    const device = await connect(a.urls.tcp as string, { clientId: "rtu-missed", ...op });
    try {
      const gone = closed(device);
      // As if node own-b had claimed the id while own-a's subscriber connection was down and
      // its takeover message was lost: only the owner entry in Redis says so.
      const newer = `9000000000000000|own-b|u:op`;
      assert.equal(await redis.command("HSET", `${prefix}owners`, "rtu-missed", newer), ":0");
      const killed = await redis.command("CLIENT", "KILL", "TYPE", "pubsub");
      assert.match(killed, /^:[1-9]/, "the nodes' subscriber connections were cut");
      await gone;
    } finally {
      await end(device);
    }
  });

  it("a connection that ends cleanly gives its owner entry up, so another identity may use the id", async () => {
    const device = await connect(b.urls.tcp as string, { clientId: "rtu-leaving", ...op });
    const entry = () => redis.command("HEXISTS", `${prefix}owners`, "rtu-leaving");
    assert.equal(await entry(), ":1");
    await end(device);
    // The release follows the server's side of the close; each check is one Redis round trip.
    const deadline = Date.now() + 5_000;
    while ((await entry()) !== ":0") assert.ok(Date.now() < deadline, "owner entry never released");
    const other = await connect(a.urls.tcp as string, {
      clientId: "rtu-leaving",
      username: "eve",
      password: "eve-secret",
    });
    await end(other);
  });
});
