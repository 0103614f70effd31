import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Redis } from "ioredis";
import { withDeadline } from "../../harness/deadline.js";
import { end } from "../../harness/mqtt-client.js";
import { dropConnection, openV5, pause } from "../../harness/mqtt5-session.js";
import { RedisServer } from "../../harness/redis-server.js";
import { SluiceProcess } from "../../harness/sluice-process.js";

/**
 * MQTT 5 timers when the node that held the connection dies (SIGKILL, real node processes):
 * session expiry and will delay then count from the death, noticed within a node lease, and
 * a survivor acts on them; with three nodes polling, each timer is acted on exactly once.
 */
const HEARTBEAT_MS = 250;
const LEASE_SECONDS = 1;

let dir: string;
let redis: RedisServer;
let control: Redis;
let keyPrefix: string;
const nodes: SluiceProcess[] = [];
const ports: number[] = [];
const url = (i: number) => `mqtt://127.0.0.1:${ports[i]}`;

async function startNodes(count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const name = `timers-${i}`;
    const file = join(dir, `${name}.yaml`);
    await writeFile(
      file,
      `nodeId: ${name}\nlisteners: [{ type: tcp, host: 127.0.0.1, port: 0 }]\nhttp: { host: 127.0.0.1, port: 0 }\n` +
        `auth: { allowAnonymous: true }\nlog: { level: debug, format: json }\n` +
        `redis: { url: "${redis.url}", keyPrefix: "${keyPrefix}", heartbeatMs: ${HEARTBEAT_MS}, nodeLeaseSeconds: ${LEASE_SECONDS} }\n`,
    );
    const node = SluiceProcess.spawn(["start", "--config", file]);
    nodes.push(node);
    ports.push((await node.ready()).ports.tcp as number);
  }
}

/** Polls Redis (every 100 ms, up to `ms`) until `check` holds; resolves the seconds it took. */
async function until(check: () => Promise<boolean>, ms: number, what: string): Promise<number> {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > ms) throw new Error(`${what}: not within ${ms} ms`);
    await pause(100);
  }
  return (Date.now() - start) / 1000;
}

/** Sessions expired so far, by the log lines of every node. */
function expiredCount(): number {
  let count = 0;
  for (const node of nodes) count += node.lines.filter((l) => l.event === "session.expired").length;
  return count;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-timers-"));
  redis = await RedisServer.start();
  control = new Redis(redis.url);
  keyPrefix = `tk${randomBytes(4).toString("hex")}:`;
  await startNodes(3);
});
after(async () => {
  for (const node of nodes) node.kill();
  await Promise.all(nodes.map((n) => n.exited));
  control?.disconnect();
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("MQTT 5 timers after a SIGKILL of the node holding the connections", () => {
  it("session expiry, will delay (one client back in time, one not) and queued message expiry", async () => {
    const watcher = await openV5(url(1), "watcher", { cleanStart: true });
    await watcher.client.subscribeAsync("status/#", { qos: 1 });
    const will = (id: string) => ({
      topic: `status/${id}`,
      payload: Buffer.from(`${id} offline`),
      qos: 1 as const,
      retain: false,
      properties: { willDelayInterval: 2 },
    });
    // On the node to be killed: a session of 3 s, one of an hour (kept), two delayed wills,
    // and an offline session with queued messages.
    const shortLived = await openV5(url(0), "short-lived", { cleanStart: true, expiry: 3 });
    await shortLived.client.subscribeAsync("orders/short", { qos: 1 });
    const longLived = await openV5(url(0), "long-lived", { cleanStart: true, expiry: 3_600 });
    await longLived.client.subscribeAsync("orders/long", { qos: 1 });
    const late = await openV5(url(0), "late", { cleanStart: true, expiry: 60, will: will("late") });
    const back = await openV5(url(0), "back", { cleanStart: true, expiry: 60, will: will("back") });
    const offline = await openV5(url(0), "offline", { cleanStart: true, expiry: 60 });
    await offline.client.subscribeAsync("queue/offline", { qos: 1 });
    await offline.client.endAsync();
    const publisher = await openV5(url(2), "publisher", { cleanStart: true });
    await publisher.client.publishAsync("queue/offline", "expires", {
      qos: 1,
      properties: { messageExpiryInterval: 2 },
    });
    await publisher.client.publishAsync("queue/offline", "stays", {
      qos: 1,
      properties: { messageExpiryInterval: 60 },
    });
    const sessions = `${keyPrefix}sessions`;
    try {
      const killedAt = Date.now();
      nodes[0]?.kill("SIGKILL");
      await nodes[0]?.exited;
      // "back" returns on another node within the will delay: its will must never go out.
      const returned = await openV5(url(2), "back", { expiry: 60 });
      assert.equal(returned.connack.sessionPresent, true);

      const [lateWill] = await withDeadline(watcher.inbox.waitFor(1), 10_000, "late's will");
      const willAfter = (Date.now() - killedAt) / 1000;
      assert.equal(lateWill?.payload.toString(), "late offline");
      // Counted from the death, noticed within 3 heartbeats (the will sweep) + its 1 s pass.
      assert.ok(willAfter >= 2 && willAfter <= 2 + 3 * 0.25 + 1 + 1, `will after ${willAfter} s`);

      await until(
        async () => (await control.hexists(sessions, "short-lived")) === 0,
        15_000,
        "short-lived's session expiring",
      );
      const sinceKill = (Date.now() - killedAt) / 1000;
      // 3 s from the death being noticed: within the 1 s lease and the survivors' 1 s look.
      assert.ok(
        sinceKill >= 3 && sinceKill <= 3 + LEASE_SECONDS + 1 + 1.5,
        `expired after ${sinceKill} s`,
      );
      process.stdout.write(
        `# after SIGKILL: delayed will (2 s) at ${willAfter} s, session (3 s) gone at ${sinceKill} s\n`,
      );
      // The session's keys are wiped after its registry entry goes (the expiry's next step).
      await until(
        async () => (await control.keys(`${keyPrefix}client:{short-lived}:*`)).length === 0,
        5_000,
        "short-lived's keys wiped",
      );
      assert.equal(await control.hexists(sessions, "long-lived"), 1, "an hour's session is kept");

      const resumed = await openV5(url(1), "offline", { expiry: 60 });
      assert.equal(resumed.connack.sessionPresent, true);
      const [kept] = await withDeadline(resumed.inbox.waitFor(1), 10_000, "the queued message");
      await pause(300);
      assert.deepEqual(
        resumed.inbox.received.map((m) => m.payload.toString()),
        ["stays"],
        "the message past its interval was dropped from the stored queue",
      );
      const remaining = kept?.packet.properties?.messageExpiryInterval ?? 0;
      assert.ok(remaining > 0 && remaining < 60, `remaining interval ${remaining} s`);

      // Twice the will delay past "back"'s return: nothing from it.
      await pause(Math.max(0, 4_000 - (Date.now() - killedAt)));
      assert.deepEqual(
        watcher.inbox.received.map((m) => m.payload.toString()),
        ["late offline"],
        "late's will once, back's never",
      );
      await end(returned.client, resumed.client);
    } finally {
      await end(watcher.client, publisher.client);
      for (const client of [shortLived, longLived, late, back]) client.client.end(true);
    }
  });

  it("with three nodes polling, each session expires and each delayed will goes out exactly once", async () => {
    // nodes[0] is dead; a fresh node takes its place so that three poll.
    await startNodes(1);
    const live = [1, 2, 3];
    const watcher = await openV5(url(1), "watcher-3", { cleanStart: true });
    await watcher.client.subscribeAsync("fleet/#", { qos: 1 });
    const count = 30;
    const devices = [];
    for (let i = 0; i < count; i++) {
      const id = `fleet-${i}`;
      devices.push(
        await openV5(url(live[i % 3] as number), id, {
          cleanStart: true,
          expiry: 2,
          will: {
            topic: `fleet/${id}`,
            payload: Buffer.from(id),
            qos: 1,
            retain: false,
            properties: { willDelayInterval: 1 },
          },
        }),
      );
    }
    try {
      const expiredBefore = expiredCount();
      await Promise.all(devices.map((device) => dropConnection(device.client)));
      await withDeadline(watcher.inbox.waitFor(count), 10_000, "every will");
      const ids = devices.map((_, i) => `fleet-${i}`);
      await until(
        async () => {
          const held = await control.hmget(`${keyPrefix}sessions`, ...ids);
          return held.every((holder) => holder === null);
        },
        10_000,
        "every fleet session expiring",
      );
      // Three more polls of every node: a second will would show.
      await pause(1_000);
      const wills = watcher.inbox.received.map((m) => m.payload.toString()).sort();
      assert.equal(wills.length, count, "each will once");
      assert.equal(new Set(wills).size, count);
      assert.equal(expiredCount() - expiredBefore, count, "each session expired once");
      const actingNodes = nodes.filter((n) => n.lines.some((l) => l.event === "session.expired"));
      process.stdout.write(`# ${count} sessions expired over ${actingNodes.length} nodes\n`);
    } finally {
      await end(watcher.client);
    }
  });
});
