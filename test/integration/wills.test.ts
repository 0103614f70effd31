import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect, end, Inbox, type MqttClient, subscribe } from "../../harness/mqtt-client.js";
import { RedisServer } from "../../harness/redis-server.js";
import { SluiceProcess } from "../../harness/sluice-process.js";

/** Wills of a crashed node: published by the survivors within a bound, and only once. */
const HEARTBEAT_MS = 250;
const LEASE_SECONDS = 1;
/**
 * A node is dead after 3 silent heartbeats and its lease gone, and wills are looked for every
 * 4 heartbeats: the lease plus 7 heartbeats at most.
 */
const BOUND_MS = LEASE_SECONDS * 1000 + 7 * HEARTBEAT_MS + 3_000;
/** Three more passes of the survivors' will check: a second copy would show. */
const QUIET_MS = 12 * HEARTBEAT_MS;

let dir: string;
let redis: RedisServer;
const nodes: SluiceProcess[] = [];
const ports: number[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-wills-"));
  redis = await RedisServer.start();
  const prefix = `w${randomBytes(4).toString("hex")}:`;
  for (const name of ["will-1", "will-2", "will-3"]) {
    const file = join(dir, `${name}.yaml`);
    await writeFile(
      file,
      `nodeId: ${name}\nlisteners: [{ type: tcp, host: 127.0.0.1, port: 0 }]\nhttp: { host: 127.0.0.1, port: 0 }\n` +
        `auth: { allowAnonymous: true }\nlog: { level: debug, format: json }\n` +
        `redis: { url: "${redis.url}", keyPrefix: "${prefix}", heartbeatMs: ${HEARTBEAT_MS}, nodeLeaseSeconds: ${LEASE_SECONDS} }\n`,
    );
    const node = SluiceProcess.spawn(["start", "--config", file]);
    nodes.push(node);
    ports.push((await node.ready()).ports.tcp as number);
  }
});
after(async () => {
  for (const node of nodes) node.kill();
  await Promise.all(nodes.map((n) => n.exited));
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("wills of a node killed with SIGKILL", () => {
  it("are published by exactly one survivor within the bound", async () => {
    const url = (i: number) => `mqtt://127.0.0.1:${ports[i]}`;
    const watchers: MqttClient[] = [await connect(url(1)), await connect(url(2))];
    const inboxes = watchers.map((w) => new Inbox(w));
    for (const watcher of watchers) await subscribe(watcher, "status/#", 1);
    const device = await connect(url(0), {
      clientId: "pump-station-9",
      will: {
        topic: "status/pump-station-9",
        payload: Buffer.from("offline"),
        qos: 1,
        retain: false,
      },
    });
    device.on("error", () => {});
    try {
      const killedAt = Date.now();
      nodes[0]?.kill("SIGKILL");
      const first = await Promise.race([
        Promise.all(inboxes.map((inbox) => inbox.waitFor(1))),
        new Promise<null>((resolve) => setTimeout(() => resolve(null), BOUND_MS).unref()),
      ]);
      assert.ok(first, `every watcher got the will within ${BOUND_MS} ms`);
      const elapsed = Date.now() - killedAt;
      await new Promise((resolve) => setTimeout(resolve, QUIET_MS));
      for (const inbox of inboxes) {
        assert.deepEqual(
          inbox.received.map((m) => m.payload.toString()),
          ["offline"],
          "published once, by one survivor",
        );
      }
      const publishers = nodes.filter((n) =>
        n.lines.some((l) => l.event === "client.will_published"),
      );
      assert.equal(publishers.length, 1, "exactly one survivor published it");
      process.stdout.write(`# dead node's will delivered ${elapsed} ms after SIGKILL\n`);
    } finally {
      await end(device, ...watchers);
    }
  });
});
