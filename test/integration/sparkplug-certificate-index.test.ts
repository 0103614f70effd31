import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, end, Inbox, type MqttClient } from "../../harness/mqtt-client.js";
import { RedisServer } from "../../harness/redis-server.js";

/**
 * Sparkplug Aware over Redis: an NBIRTH clears its edge node's DBIRTH certificates through the
 * per-edge-node index (exact reads), not by scanning the retained store, which holds every
 * retained message of the cluster; where the index cannot tell (certificates stored before
 * it), it scans once, and clears the same.
 */
const GROUP = "Plant9";
const EDGE = "edge-9";
const CERTIFICATES = `$sparkplug/certificates/spBv1.0/${GROUP}`;
const birthTopic = (device?: string) =>
  device === undefined
    ? `spBv1.0/${GROUP}/NBIRTH/${EDGE}`
    : `spBv1.0/${GROUP}/DBIRTH/${EDGE}/${device}`;

let redis: RedisServer;
let node: RunningNode;
let edge: MqttClient;
let watcher: MqttClient;
let watched: Inbox;
const keyPrefix = `spi${randomBytes(3).toString("hex")}:`;

/** HSCAN calls Redis served so far: how the retained hash is scanned. */
async function hscans(): Promise<number> {
  const stats = await redis.bulk("INFO", "commandstats");
  return Number(/cmdstat_hscan:calls=(\d+)/.exec(stats)?.[1] ?? 0);
}

/** Publishes births at QoS 1 in order, and waits for the certificates they make or clear. */
async function births(devices: readonly (string | undefined)[], certificates: number) {
  const expected = watched.received.length + certificates;
  for (const device of devices) {
    await edge.publishAsync(birthTopic(device), Buffer.from(`birth of ${device ?? EDGE}`), {
      qos: 1,
    });
  }
  return (await withDeadline(watched.waitFor(expected), 5_000, `${certificates} certificates`))
    .slice(expected - certificates)
    .map(
      (m) => `${m.topic.slice(CERTIFICATES.length + 1)}${m.payload.length === 0 ? " cleared" : ""}`,
    )
    .sort();
}

/** The certificates a subscriber joining now is sent (retained), read up to a marker. */
async function standing(): Promise<string[]> {
  const late = await connect(node.urls.tcp as string);
  try {
    const inbox = new Inbox(late);
    await late.subscribeAsync(`${CERTIFICATES}/#`, { qos: 1 });
    // A marker published after the SUBACK arrives after every retained message.
    await late.subscribeAsync("marker/+", { qos: 1 });
    await late.publishAsync("marker/1", "end", { qos: 1 });
    const all = await withDeadline(
      (async () => {
        for (let n = 1; ; n++) {
          const got = await inbox.waitFor(n);
          if (got[n - 1]?.topic === "marker/1") return got.slice(0, n - 1);
        }
      })(),
      5_000,
      "the marker",
    );
    return all.map((m) => m.topic.slice(CERTIFICATES.length + 1)).sort();
  } finally {
    await end(late);
  }
}

before(async () => {
  redis = await RedisServer.start();
  node = await startNode({
    redis: { url: redis.url, keyPrefix },
    sparkplug: { aware: true },
  });
  edge = await connect(node.urls.tcp as string, { clientId: "edge-9" });
  watcher = await connect(node.urls.tcp as string, { clientId: "watcher" });
  watched = new Inbox(watcher);
  await watcher.subscribeAsync(`${CERTIFICATES}/#`, { qos: 1 });
  // Retained messages of others: what a scan of the retained store would read through.
  for (let i = 0; i < 50; i++)
    await edge.publishAsync(`site/tag-${i}`, "1", { qos: 1, retain: true });
});
after(async () => {
  await end(edge, watcher);
  await node?.stop();
  await redis?.stop();
});

describe("Sparkplug Aware: DBIRTH certificates cleared per edge node", () => {
  it("a rebirth clears exactly the edge node's DBIRTH certificates, without a scan", async () => {
    assert.deepEqual(await births([undefined, "pump", "valve"], 3), [
      `DBIRTH/${EDGE}/pump`,
      `DBIRTH/${EDGE}/valve`,
      `NBIRTH/${EDGE}`,
    ]);
    const before = await hscans();
    // The NBIRTH clears both DBIRTH certificates, then stands; the pump's comes back.
    assert.deepEqual(await births([undefined, "pump"], 4), [
      `DBIRTH/${EDGE}/pump`,
      `DBIRTH/${EDGE}/pump cleared`,
      `DBIRTH/${EDGE}/valve cleared`,
      `NBIRTH/${EDGE}`,
    ]);
    assert.equal(await hscans(), before, "no scan of the retained store");
    assert.deepEqual(await standing(), [`DBIRTH/${EDGE}/pump`, `NBIRTH/${EDGE}`]);
  });

  it("certificates the index does not know of (stored before it) are found by one scan", async () => {
    // As if the pump's certificate and the gauge's had been stored by a version without it.
    await births(["gauge"], 1);
    assert.equal(await redis.command("DEL", `${keyPrefix}sparkplug-dbirth:${GROUP}/${EDGE}`), ":1");
    await births(["meter"], 1);
    const before = await hscans();
    assert.deepEqual(await births([undefined], 4), [
      `DBIRTH/${EDGE}/gauge cleared`,
      `DBIRTH/${EDGE}/meter cleared`,
      `DBIRTH/${EDGE}/pump cleared`,
      `NBIRTH/${EDGE}`,
    ]);
    assert.ok((await hscans()) > before, "the retained store was scanned");
    assert.deepEqual(await standing(), [`NBIRTH/${EDGE}`]);
    // From then on the index is complete again: no scan.
    await births(["pump"], 1);
    const after = await hscans();
    assert.deepEqual(await births([undefined], 2), [
      `DBIRTH/${EDGE}/pump cleared`,
      `NBIRTH/${EDGE}`,
    ]);
    assert.equal(await hscans(), after);
  });
});
