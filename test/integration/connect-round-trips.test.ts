import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { after, before, describe, it } from "node:test";
import { setTimeout as pause } from "node:timers/promises";
import { Redis } from "ioredis";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, end } from "../../harness/mqtt-client.js";
import {
  connectPacket,
  mqttString,
  packet,
  rawConnect,
  readBytes,
} from "../../harness/raw-socket.js";
import { RedisRelay } from "../../harness/redis-relay.js";
import { RedisServer } from "../../harness/redis-server.js";

/**
 * What a CONNECT over one Redis asks of it: a client id no connection holds skips the steps its
 * session read shows have nothing to do (inbound QoS 2 ids, the queue), and one that an earlier
 * connection left something in still gets them.
 */
let redis: RedisServer;
let control: Redis;
let node: RunningNode;
let prefix: string;

before(async () => {
  redis = await RedisServer.start();
  control = new Redis(redis.url);
  prefix = `crt${randomBytes(4).toString("hex")}:`;
  node = await startNode({ nodeId: "crt-a", redis: { url: redis.url, keyPrefix: prefix } });
});
after(async () => {
  await node?.stop();
  control?.disconnect();
  await redis?.stop();
});

/** Redis' calls so far by command (INFO commandstats; scripts' own commands included). */
async function calls(): Promise<Record<string, number>> {
  const text = await redis.bulk("INFO", "commandstats");
  const counts: Record<string, number> = {};
  for (const [, name = "", count = "0"] of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm))
    counts[name] = Number(count);
  return counts;
}

/** Waits for the node to drop the id's owner entry (it does as it handles the close). */
async function ownerGone(clientId: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while ((await control.hexists(`${prefix}owners`, clientId)) === 1) {
    assert.ok(Date.now() < deadline, "the owner entry goes with the connection");
    await pause(50);
  }
}

describe("CONNECT round trips over Redis", () => {
  it("a clean CONNECT of an id nobody holds deletes no inbound QoS 2 ids and reads no queue", async () => {
    const before = await calls();
    const client = await connect(node.urls.tcp as string, { clientId: "fresh-1", clean: true });
    const afterConnack = await calls();
    await end(client);
    // read-queues runs LRANGE on each queue; the inbound QoS 2 cleanup is a DEL
    assert.equal((afterConnack.lrange ?? 0) - (before.lrange ?? 0), 0, "queue read");
    assert.equal((afterConnack.del ?? 0) - (before.del ?? 0), 0, "inbound QoS 2 cleanup");
    assert.ok((afterConnack.hgetall ?? 0) > (before.hgetall ?? 0), "its session was read");
  });

  it("a clean CONNECT of an id whose stored session holds an inbound QoS 2 id discards it [MQTT-3.1.2-6]", async () => {
    const clientId = "left-qos2";
    const incoming = `${prefix}client:{${clientId}}:incoming`;
    const { port } = new URL(node.urls.tcp as string);
    const socket = await rawConnect(Number(port));
    try {
      // A stored session (clean session 0): its ids outlive the connection.
      socket.write(connectPacket(clientId, { clean: false }));
      assert.deepEqual([...(await readBytes(socket, 4))], [0x20, 2, 0, 0]);
      // PUBLISH QoS 2, packet id 7, answered with PUBREC; no PUBREL follows
      const id = Buffer.from([0, 7]);
      socket.write(packet(0x34, Buffer.concat([mqttString("crt/t"), id, Buffer.from("x")])));
      assert.deepEqual([...(await readBytes(socket, 4))], [0x50, 2, 0, 7]);
    } finally {
      socket.destroy();
    }
    assert.equal(await control.exists(incoming), 1, "the id is stored until its PUBREL");
    await ownerGone(clientId);
    const client = await withDeadline(
      connect(node.urls.tcp as string, { clientId, clean: true }),
      10_000,
      "the clean CONNECT",
    );
    try {
      assert.equal(await control.exists(incoming), 0, "the earlier connection's ids are gone");
    } finally {
      await end(client);
    }
  });
});

describe("CONNECT round trips over Redis: shared and together", () => {
  let relayed: RunningNode;
  let relay: RedisRelay;
  let relayedPrefix: string;

  before(async () => {
    relay = await RedisRelay.start(redis.port);
    relayedPrefix = `crr${randomBytes(4).toString("hex")}:`;
    relayed = await startNode({
      nodeId: "crt-relayed",
      redis: { url: relay.url, keyPrefix: relayedPrefix },
    });
  });
  after(async () => {
    relay?.releaseCommands();
    await relayed?.stop();
    await relay?.close();
  });

  it("a CONNECT's client-id claim and its session read go to Redis before either is answered", async () => {
    const clientId = `together-${randomBytes(3).toString("hex")}`;
    const { port } = new URL(relayed.urls.tcp as string);
    // Holds the claim (its arguments carry the id) and all its connection sends after it.
    relay.holdCommandsWith(clientId);
    const socket = await rawConnect(Number(port));
    try {
      socket.write(connectPacket(clientId, { clean: true }));
      await relay.commandHeld();
      // Unanswered, the claim could not have let a read wait for its answer go out.
      await relay.heldCarrying(`${relayedPrefix}client:{${clientId}}:subs`, 5_000);
      relay.releaseCommands();
      assert.deepEqual([...(await readBytes(socket, 4))], [0x20, 2, 0, 0]);
    } finally {
      relay.releaseCommands();
      socket.destroy();
    }
  });

  it("CONNECTs that come together share the lockout read, the claim and the session read", async () => {
    const count = 30;
    const tag = `shared-${randomBytes(3).toString("hex")}-`;
    const calls = { claims: 0, claimed: 0, reads: 0, lockoutReads: 0 };
    let allClaimed: () => void = () => {};
    const claimedAll = new Promise<void>((resolve) => {
      allClaimed = resolve;
    });
    // MONITOR on a socket of its own: one line per command Redis runs, quoted arguments.
    const monitor = await rawConnect(redis.port);
    let rest = "";
    monitor.setEncoding("latin1").on("data", (chunk: string) => {
      const lines = (rest + chunk).split("\r\n");
      rest = lines.pop() ?? "";
      for (const line of lines) {
        if (line.includes('"mget"') && line.includes("auth-ip:")) calls.lockoutReads++;
        if (!line.includes('"evalsha"') && !line.includes('"eval"')) continue;
        const ours = line.split(`"${tag}`).length - 1 + (line.split(`{${tag}`).length - 1);
        if (ours === 0) continue;
        if (line.includes(`"${relayedPrefix}owner-epoch"`)) {
          calls.claims++;
          calls.claimed += ours;
          if (calls.claimed >= count) allClaimed();
        } else if (line.includes(':subs"')) calls.reads++;
      }
    });
    monitor.write("MONITOR\r\n");
    await withDeadline(once(monitor, "data"), 5_000, "MONITOR's +OK");
    const { port } = new URL(relayed.urls.tcp as string);
    const sockets = await Promise.all(
      Array.from({ length: count }, () => rawConnect(Number(port))),
    );
    try {
      for (const [i, socket] of sockets.entries())
        socket.write(connectPacket(`${tag}${i}`, { clean: true }));
      for (const socket of sockets)
        assert.deepEqual(
          [...(await withDeadline(readBytes(socket, 4), 10_000, "CONNACK"))],
          [0x20, 2, 0, 0],
        );
      // The node (in this process) may have answered before MONITOR's lines reached this socket.
      await withDeadline(claimedAll, 5_000, "MONITOR's lines of every claim");
    } finally {
      for (const socket of sockets) socket.destroy();
      monitor.destroy();
    }
    assert.equal(calls.claimed, count, "every CONNECT claimed its id once");
    // One call at a time per step: what comes while a call awaits its answer goes in the next.
    assert.ok(calls.claims <= count / 2, `claim calls: ${calls.claims} for ${count} CONNECTs`);
    assert.equal(calls.reads, calls.claims, "a session read beside each claim call");
    assert.ok(
      calls.lockoutReads >= 1 && calls.lockoutReads <= count / 2,
      `lockout reads: ${calls.lockoutReads} for ${count} CONNECTs`,
    );
  });
});
