import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { withDeadline } from "../../harness/deadline.js";
import { end } from "../../harness/mqtt-client.js";
import { openV5, pause, type V5Session } from "../../harness/mqtt5-session.js";
import { RedisServer } from "../../harness/redis-server.js";
import { SluiceProcess } from "../../harness/sluice-process.js";

/**
 * A delayed will goes out when its session ends, if that comes first (the Will Delay text,
 * [MQTT-3.1.3-9]), also when the node that held the connection is SIGKILLed (default
 * heartbeat and lease: the death is known within about 3 s): a session with expiry 0 ends with
 * the death, so its will goes out then, not after the will's delay; a session shorter than the
 * delay takes its will with it when it expires. Each once, by one survivor.
 */
const HEARTBEAT_MS = 1_000;
/** Up to 3 heartbeats and a quarter after the death, plus publishing, on a noisy machine. */
const DEATH_MS = 4_500;
/** Far beyond every bound: a will that waits for it is caught. */
const WILL_DELAY_SECONDS = 60;

let dir: string;
let redis: RedisServer;
let keyPrefix: string;
const nodes: SluiceProcess[] = [];

async function spawnNode(name: string): Promise<{ node: SluiceProcess; url: string }> {
  const file = join(dir, `${name}.yaml`);
  await writeFile(
    file,
    `nodeId: ${name}\nlisteners: [{ type: tcp, host: 127.0.0.1, port: 0 }]\nhttp: { host: 127.0.0.1, port: 0 }\n` +
      `auth: { allowAnonymous: true }\nlog: { level: debug, format: json }\n` +
      `redis: { url: "${redis.url}", keyPrefix: "${keyPrefix}" }\n`,
  );
  const node = SluiceProcess.spawn(["start", "--config", file]);
  nodes.push(node);
  const { ports } = await node.ready();
  return { node, url: `mqtt://127.0.0.1:${ports.tcp}` };
}

const delayedWill = (topic: string) => ({
  topic,
  payload: Buffer.from("offline"),
  qos: 1 as const,
  retain: false,
  properties: { willDelayInterval: WILL_DELAY_SECONDS },
});

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-will-end-"));
  redis = await RedisServer.start();
  keyPrefix = `we${randomBytes(4).toString("hex")}:`;
});
after(async () => {
  for (const node of nodes) node.kill();
  await Promise.all(nodes.map((n) => n.exited));
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("a delayed will whose session ends first, after a SIGKILL of the node holding it", () => {
  it("expiry 0 (Clean Start 1 and 0): at the death; expiry 3 s: 3 s after; each once", async () => {
    const survivors = [await spawnNode("survivor-1"), await spawnNode("survivor-2")];
    const victim = await spawnNode("victim");
    await withDeadline(
      Promise.all(
        survivors.map(({ node }) =>
          node.waitForLog((l) => l.event === "node.heard" && l.nodeId === "victim"),
        ),
      ),
      5 * HEARTBEAT_MS,
      "the survivors heard the victim",
    );
    const watchers: V5Session[] = [];
    for (const [i, { url }] of survivors.entries()) {
      const watcher = await openV5(url, `watcher-${i}`, { cleanStart: true });
      await watcher.client.subscribeAsync("end/#", { qos: 1 });
      watchers.push(watcher);
    }
    const devices = [
      await openV5(victim.url, "ephemeral", {
        cleanStart: true,
        expiry: 0,
        will: delayedWill("end/ephemeral"),
      }),
      await openV5(victim.url, "resumed", {
        cleanStart: false,
        expiry: 0,
        will: delayedWill("end/resumed"),
      }),
      await openV5(victim.url, "short", {
        cleanStart: true,
        expiry: 3,
        will: delayedWill("end/short"),
      }),
    ];
    try {
      const killedAt = Date.now();
      victim.node.kill("SIGKILL");
      const arrivals = new Map<string, number>();
      for (const watcher of watchers) {
        watcher.client.on("message", (topic) => {
          if (!arrivals.has(topic)) arrivals.set(topic, Date.now() - killedAt);
        });
      }
      await withDeadline(
        Promise.all(watchers.map((w) => w.inbox.waitFor(2))),
        DEATH_MS,
        "the expiry-0 sessions' wills at every watcher",
      );
      await withDeadline(
        Promise.all(watchers.map((w) => w.inbox.waitFor(3))),
        DEATH_MS + 3_000 + 1_500,
        "the 3 s session's will at every watcher",
      );
      const short = arrivals.get("end/short") ?? 0;
      assert.ok(short >= 3_000, `the 3 s session's will after ${short} ms, not before it ended`);
      // Two passes of aedes' will sweep (every 4 heartbeats) and of the timers: a copy shows.
      await pause(9 * HEARTBEAT_MS);
      for (const watcher of watchers) {
        assert.deepEqual(
          watcher.inbox.received.map((m) => m.topic).sort(),
          ["end/ephemeral", "end/resumed", "end/short"],
          "each will once",
        );
      }
      const published = survivors
        .flatMap(({ node }) => node.lines)
        .filter((l) => l.event === "client.will_published");
      assert.equal(published.length, 3, "each by one survivor");
      process.stdout.write(
        `# after SIGKILL: ${[...arrivals].map(([t, ms]) => `${t} ${ms} ms`).join(", ")}\n`,
      );
    } finally {
      await end(...watchers.map((w) => w.client));
      for (const device of devices) device.client.end(true);
    }
  });
});
