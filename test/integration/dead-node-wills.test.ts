import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Redis } from "ioredis";
import { withDeadline } from "../../harness/deadline.js";
import { connect, end, Inbox, type MqttClient, subscribe } from "../../harness/mqtt-client.js";
import { RedisServer } from "../../harness/redis-server.js";
import { type LogLine, SluiceProcess } from "../../harness/sluice-process.js";

/**
 * A node killed with SIGKILL, at the default heartbeat (1 s) and lease (15 s): the survivors
 * publish its clients' wills once each within seconds (a node is dead after 3 silent heartbeats
 * once Redis holds none of its connections, and its wills are looked for 4 times a heartbeat),
 * not when its lease runs out nor when aedes' own sweep (every 4 heartbeats) comes round; a
 * client that moved to another node keeps its will. A node that only stalls keeps its
 * connections open, and its clients' wills.
 */
const HEARTBEAT_MS = 1_000;
/** Up to 3 heartbeats and a quarter after the death, plus publishing, on a noisy machine. */
const BOUND_MS = 4_500;
/** Two passes of aedes' own will sweep (every 4 heartbeats) after the bound: a copy would show. */
const QUIET_MS = 9 * HEARTBEAT_MS;
const DEVICES = 50;

let dir: string;
let redis: RedisServer;
let control: Redis;
let keyPrefix: string;
const survivors: SluiceProcess[] = [];
const survivorUrls: string[] = [];
const victims: SluiceProcess[] = [];

async function spawnNode(name: string): Promise<{ node: SluiceProcess; url: string }> {
  const file = join(dir, `${name}.yaml`);
  await writeFile(
    file,
    `nodeId: ${name}\nlisteners: [{ type: tcp, host: 127.0.0.1, port: 0 }]\nhttp: { host: 127.0.0.1, port: 0 }\n` +
      `auth: { allowAnonymous: true }\nlog: { level: debug, format: json }\n` +
      `redis: { url: "${redis.url}", keyPrefix: "${keyPrefix}" }\n`,
  );
  const node = SluiceProcess.spawn(["start", "--config", file]);
  const { ports } = await node.ready();
  return { node, url: `mqtt://127.0.0.1:${ports.tcp}` };
}

/** A node whose death the survivors can notice: each has heard its heartbeat. */
async function startVictim(name: string): Promise<string> {
  const { node, url } = await spawnNode(name);
  victims.push(node);
  await withDeadline(
    Promise.all(
      survivors.map((s) => s.waitForLog((l) => l.event === "node.heard" && l.nodeId === name)),
    ),
    5 * HEARTBEAT_MS,
    `the survivors heard ${name}`,
  );
  return url;
}

/** Watchers on both survivors, subscribed to `filter`. */
async function watch(filter: string): Promise<{ clients: MqttClient[]; inboxes: Inbox[] }> {
  const clients = await Promise.all(survivorUrls.map((url) => connect(url)));
  for (const client of clients) await subscribe(client, filter, 1);
  return { clients, inboxes: clients.map((c) => new Inbox(c)) };
}

const will = (topic: string, payload: string) => ({
  topic,
  payload: Buffer.from(payload),
  qos: 1 as const,
  retain: false,
});

/** Wills of clients whose id starts so, by the survivors' `client.will_published` lines. */
const willsPublished = (clientPrefix: string): number =>
  survivors
    .flatMap((s) => s.lines)
    .filter(
      (l) => l.event === "client.will_published" && String(l.clientId).startsWith(clientPrefix),
    ).length;

/** Kills the node and resolves with when each watcher had `count` messages, in ms after. */
async function killAndReceive(victim: SluiceProcess, inboxes: Inbox[], count: number) {
  const killedAt = Date.now();
  victim.kill("SIGKILL");
  const arrivals = await withDeadline(
    Promise.all(
      inboxes.map(async (inbox) => {
        const first = inbox.waitFor(1).then(() => Date.now() - killedAt);
        const all = inbox.waitFor(count).then(() => Date.now() - killedAt);
        return { first: await first, last: await all };
      }),
    ),
    BOUND_MS,
    `${count} wills at every watcher`,
  );
  return arrivals;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-dead-wills-"));
  redis = await RedisServer.start();
  control = new Redis(redis.url);
  keyPrefix = `dw${randomBytes(4).toString("hex")}:`;
  for (const name of ["survivor-1", "survivor-2"]) {
    const { node, url } = await spawnNode(name);
    survivors.push(node);
    survivorUrls.push(url);
  }
});
after(async () => {
  for (const node of [...survivors, ...victims]) node.kill();
  await Promise.all([...survivors, ...victims].map((n) => n.exited));
  control?.disconnect();
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("wills of a node killed with SIGKILL, at the default heartbeat", () => {
  it("one client's will reaches watchers on both survivors once, within the bound", async () => {
    const url = await startVictim("victim-1");
    const { clients, inboxes } = await watch("lone/#");
    const device = await connect(url, {
      clientId: "lone-device",
      will: will("lone/lone-device", "offline"),
    });
    device.on("error", () => {});
    try {
      const arrivals = await killAndReceive(victims[0] as SluiceProcess, inboxes, 1);
      await new Promise((resolve) => setTimeout(resolve, QUIET_MS));
      for (const inbox of inboxes) {
        assert.deepEqual(
          inbox.received.map((m) => m.payload.toString()),
          ["offline"],
          "published once",
        );
      }
      assert.equal(willsPublished("lone-"), 1, "by one survivor");
      const dead = survivors
        .flatMap((s) => s.lines)
        .filter((l) => l.event === "node.dead" && l.nodeId === "victim-1");
      assert.deepEqual(
        dead.map((l) => l.signal).sort(),
        ["connections", "lease"],
        "one survivor knew it gone by its connections (and released its lease), the other then by its lease",
      );
      const ms = arrivals.map((a) => a.first).join(", ");
      process.stdout.write(`# one will delivered ${ms} ms after SIGKILL\n`);
    } finally {
      await end(device, ...clients);
    }
  });

  it("50 clients' wills arrive once each within the bound; a client that moved keeps its will", async () => {
    const url = await startVictim("victim-2");
    const { clients, inboxes } = await watch("fleet/#");
    const moves = await watch("moved/#");
    const devices: MqttClient[] = [];
    for (let i = 0; i < DEVICES; i++) {
      const id = `fleet-${i}`;
      const device = await connect(url, { clientId: id, will: will(`fleet/${id}`, "offline") });
      device.on("error", () => {});
      devices.push(device);
    }
    // Connected to the victim, then to a survivor: the victim's connection is taken over (and
    // its will published then, as for any connection that ends without DISCONNECT).
    const old = await connect(url, { clientId: "mover", will: will("moved/mover", "old") });
    old.on("error", () => {});
    const oldClosed = new Promise<void>((resolve) => old.once("close", () => resolve()));
    const mover = await connect(survivorUrls[0] as string, {
      clientId: "mover",
      will: will("moved/mover", "new"),
    });
    devices.push(old, mover);
    try {
      await withDeadline(oldClosed, 5_000, "the old connection of the mover closed");
      const atMove = await withDeadline(
        Promise.all(moves.inboxes.map((inbox) => inbox.waitFor(1))),
        5_000,
        "the old connection's will",
      );
      for (const [message] of atMove) assert.equal(message?.payload.toString(), "old");
      await untilWillGone("victim-2", "mover", 5_000);

      const arrivals = await killAndReceive(victims[1] as SluiceProcess, inboxes, DEVICES);
      await new Promise((resolve) => setTimeout(resolve, QUIET_MS));
      const expected = Array.from({ length: DEVICES }, (_, i) => `fleet/fleet-${i}`).sort();
      for (const inbox of inboxes) {
        assert.deepEqual(inbox.received.map((m) => m.topic).sort(), expected, "each once");
      }
      assert.equal(willsPublished("fleet-"), DEVICES, "each by one survivor");
      for (const inbox of moves.inboxes) {
        assert.deepEqual(
          inbox.received.map((m) => m.payload.toString()),
          ["old"],
          "the moved client's will is not published again, nor its live connection's",
        );
      }
      assert.equal(mover.connected, true, "the moved client stays connected");
      const figures = arrivals.map((a) => `${a.first}-${a.last}`).join(", ");
      process.stdout.write(`# ${DEVICES} wills delivered ${figures} ms after SIGKILL\n`);
    } finally {
      await end(...devices, ...clients, ...moves.clients);
    }
  });
});

describe("a node that stalls, with its connections open", () => {
  it("is counted dead after 3 heartbeats, but its clients' wills wait: it still holds them", async () => {
    const url = await startVictim("victim-3");
    const { clients, inboxes } = await watch("stalled/#");
    const device = await connect(url, {
      clientId: "stalled-device",
      will: will("stalled/stalled-device", "offline"),
    });
    device.on("error", () => {});
    const victim = victims[2] as SluiceProcess;
    try {
      const heard = (l: LogLine) => l.event === "node.heard" && l.nodeId === "victim-3";
      const heardBefore = new Set(survivors.flatMap((s) => s.lines.filter(heard)));
      victim.kill("SIGSTOP");
      await withDeadline(
        Promise.all(
          survivors.map((s) =>
            s.waitForLog((l) => l.event === "node.silent" && l.nodeId === "victim-3"),
          ),
        ),
        5 * HEARTBEAT_MS,
        "the survivors counted victim-3 dead",
      );
      // Asked whether it is gone at once, then once a heartbeat: two more asks.
      await new Promise((resolve) => setTimeout(resolve, 2 * HEARTBEAT_MS + 500));
      victim.kill("SIGCONT");
      await withDeadline(
        Promise.all(survivors.map((s) => s.waitForLog((l) => heard(l) && !heardBefore.has(l)))),
        5 * HEARTBEAT_MS,
        "the survivors heard victim-3 again",
      );
      for (const inbox of inboxes) assert.deepEqual(inbox.received, [], "no will");
      assert.equal(willsPublished("stalled-"), 0);
      assert.equal(await control.exists(`${keyPrefix}node:victim-3`), 1, "its lease stays");
      assert.equal(device.connected, true, "the device stayed connected to it");
    } finally {
      victim.kill("SIGCONT");
      await end(device, ...clients);
    }
  });
});

/** Resolves once the node's will of the client is off the will index (polled every 50 ms). */
async function untilWillGone(brokerId: string, clientId: string, ms: number): Promise<void> {
  const entry = `${brokerId}:${encodeURIComponent(clientId)}`;
  const deadline = Date.now() + ms;
  while ((await control.sismember(`${keyPrefix}persistence:wills`, entry)) === 1) {
    if (Date.now() > deadline) throw new Error(`${entry} still indexed after ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
