import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import mqtt from "mqtt";
import { withDeadline } from "../../harness/deadline.js";
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

/** A CONNECT racing others for one client id: settles true on CONNACK, false if closed first. */
interface Racer {
  node: RunningNode;
  client: MqttClient;
  connected: Promise<boolean>;
  closed: boolean;
}

function race(node: RunningNode, clientId: string, onMessage: (payload: string) => void): Racer {
  const client = mqtt.connect(node.urls.tcp as string, {
    clientId,
    clean: false,
    reconnectPeriod: 0,
    connectTimeout: 10_000,
    protocolVersion: 4,
    ...op,
  });
  // Attached before the CONNACK: resent messages may come in the same read.
  client.on("message", (_topic, payload) => onMessage(payload.toString()));
  const racer: Racer = {
    node,
    client,
    closed: false,
    connected: new Promise((resolve, reject) => {
      client.once("connect", () => resolve(true));
      client.once("close", () => resolve(false));
      // A refusal (CONNACK 5, ...) fails the test; errors after the CONNACK are the close's.
      client.on("error", reject);
    }),
  };
  client.once("close", () => {
    racer.closed = true;
  });
  return racer;
}

/** Resolves once one racer is left open, with it; rejects if the last one closes too. */
function lastOneOpen(open: readonly Racer[]): Promise<Racer> {
  return new Promise((resolve, reject) => {
    const check = (): void => {
      const left = open.filter((r) => !r.closed);
      if (left.length === 1) resolve(left[0] as Racer);
      if (left.length === 0) reject(new Error("every connection was closed, the newest too"));
    };
    for (const racer of open) racer.client.once("close", check);
    check();
  });
}

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

  it("CONNECTs of one client id racing on both nodes leave only the newest open, and lose nothing acknowledged", async () => {
    const clientId = "race-plc";
    const topic = "race-plc/commands";
    const received = new Set<string>();
    const note = (payload: string): void => {
      received.add(payload);
    };
    const first = await connect(a.urls.tcp as string, { clientId, clean: false, ...op });
    await subscribe(first, topic, 1);
    await end(first);
    const publisher = await connect(b.urls.tcp as string, op);
    const racers: Racer[] = [];
    try {
      const published: string[] = [];
      for (let round = 0; round < 5; round++) {
        // Four CONNECTs on each node at once (each node's claims in one script), then one more
        // per message acknowledged meanwhile, on alternate nodes, while earlier ones are still
        // under way.
        const batch = Array.from({ length: 8 }, (_, i) => race(i % 2 ? b : a, clientId, note));
        for (let i = 0; i < 10; i++) {
          batch.push(race(i % 2 ? a : b, clientId, note));
          const payload = `r${round}-m${i}`;
          await publisher.publishAsync(topic, payload, { qos: 1 });
          published.push(payload);
        }
        racers.push(...batch);
        const answered = await withDeadline(
          Promise.all(batch.map((r) => r.connected)),
          20_000,
          "every racing CONNECT answered or closed",
        );
        const open = racers.filter((r) => !r.closed && answered[batch.indexOf(r)] !== false);
        const survivor = await withDeadline(lastOneOpen(open), 20_000, "all but one closed");
        // The one left is the owner Redis names: the newest claim.
        const owner = await redis.bulk("HGET", `${prefix}owners`, clientId);
        assert.equal(owner.split("|")[1], survivor.node === a ? "own-a" : "own-b");
        // It is live on the session: a message published now reaches it.
        const probe = `probe-${round}`;
        const heard = new Promise<void>((resolve) => {
          survivor.client.on("message", (_t, payload) => {
            if (payload.toString() === probe) resolve();
          });
        });
        await publisher.publishAsync(topic, probe, { qos: 1 });
        await withDeadline(heard, 10_000, "the survivor got a message published after the race");
        assert.equal(survivor.closed, false, "no late takeover closed the newest connection");
      }
      // Whatever a closed connection got but did not acknowledge is still queued: the next
      // CONNECT of the session is sent it.
      await end(...racers.map((r) => r.client));
      const missing = (): string[] => published.filter((p) => !received.has(p));
      const resumed = race(a, clientId, note);
      racers.push(resumed);
      assert.equal(await resumed.connected, true);
      await withDeadline(
        new Promise<void>((resolve) => {
          const check = (): void => {
            if (missing().length === 0) resolve();
          };
          resumed.client.on("message", check);
          check();
        }),
        10_000,
        "every acknowledged message delivered",
      ).catch((error: Error) => {
        throw new Error(`${error.message}; missing ${missing().join(", ")}`);
      });
    } finally {
      await end(publisher, ...racers.map((r) => r.client));
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
