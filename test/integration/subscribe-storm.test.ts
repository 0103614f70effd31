import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connectPacket, rawConnect, readBytes } from "../../harness/raw-socket.js";
import { RedisServer } from "../../harness/redis-server.js";
import {
  gaugeReaches,
  leave,
  SUBACK_BYTES,
  storm,
  subscribeAll,
  subscribePackets,
} from "../../harness/storm-clients.js";

/**
 * A plant-wide reconnect: many clients each re-subscribe to many command topics at once, then
 * leave. The node must count them, answer them, and give everything back when they go: the
 * subscription gauge to its baseline, the heap near its own, and (over Redis) every Redis
 * channel. Speed is the bench's (subscribe-storm scenario), not these tests'.
 */

// Not exposed to the test runner's processes by default; the heap comparisons need full GCs.
setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

const CLIENTS = 300;
const FILTERS = 100;

/**
 * Sends a CONNECT and `filters` SUBSCRIBEs in one write, without waiting for the CONNACK (as
 * MQTT allows): the node parses the SUBSCRIBEs while it handles the CONNECT. Resolves with the
 * reads the CONNACK and SUBACKs came in.
 */
async function connectAndSubscribe(
  port: number,
  clientId: string,
  filters: number,
): Promise<number> {
  const socket = await rawConnect(port);
  let reads = 0;
  socket.on("data", () => {
    reads++;
  });
  const answers = readBytes(socket, 4 + filters * SUBACK_BYTES);
  socket.write(
    Buffer.concat([connectPacket(clientId, { keepalive: 0 }), subscribePackets(clientId, filters)]),
  );
  const bytes = await answers;
  assert.equal(bytes[3], 0, "CONNACK accepted");
  await leave([socket]);
  return reads;
}

function heapAfterGc(): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

/**
 * The storm and its aftermath, on one node: after a first, small storm (the node's one-time
 * growth: compiled code, buffer pools), the baseline; then CLIENTS x FILTERS subscriptions, the
 * heap they hold, and what is left once they have gone.
 */
async function stormAndLeave(node: RunningNode): Promise<void> {
  const port = Number(new URL(node.urls.tcp as string).port);
  await leave(await storm(port, `warm${randomBytes(2).toString("hex")}`, 20, FILTERS));
  await gaugeReaches(node, 0);
  const baselineHeap = heapAfterGc();

  const sockets = await storm(port, `s${randomBytes(3).toString("hex")}`, CLIENTS, FILTERS);
  await gaugeReaches(node, CLIENTS * FILTERS);
  const heldHeap = heapAfterGc();
  const held = heldHeap - baselineHeap;
  assert.ok(held > 0, "the subscriptions take heap");

  await leave(sockets);
  await gaugeReaches(node, 0);
  const left = heapAfterGc() - baselineHeap;
  assert.ok(
    left < held / 3,
    `heap ${Math.round(left / 1024)} KiB over its baseline after the clients left (they held ${Math.round(held / 1024)} KiB)`,
  );
}

describe("subscribe storm - in memory", () => {
  let node: RunningNode;
  before(async () => {
    node = await startNode();
  });
  after(async () => {
    await node?.stop();
  });

  it("the subscription gauge and the heap are back at their baseline once the clients leave", async () => {
    await stormAndLeave(node);
  });

  it("a client's SUBSCRIBEs sent back to back are handled together: their SUBACKs leave in one write", async () => {
    const port = Number(new URL(node.urls.tcp as string).port);
    const { socket, reads } = await subscribeAll(
      port,
      `run-${randomBytes(3).toString("hex")}`,
      100,
    );
    await leave([socket]);
    // One at a time, each SUBACK took its own turn and socket write: about 100 reads.
    assert.ok(reads <= 10, `100 SUBACKs came in ${reads} reads`);
  });

  it("a burst of SUBSCRIBEs is spread over turns of the event loop (64 per turn), not taken in one", async () => {
    const port = Number(new URL(node.urls.tcp as string).port);
    const { socket, reads } = await subscribeAll(
      port,
      `burst-${randomBytes(3).toString("hex")}`,
      640,
    );
    await leave([socket]);
    // Taken in one read, the 640 SUBACKs left in one or two writes.
    assert.ok(reads >= 5, `640 SUBACKs came in ${reads} reads`);
  });

  it("SUBSCRIBEs sent with the CONNECT wait for it in the parser, then are spread over turns", async () => {
    const port = Number(new URL(node.urls.tcp as string).port);
    const reads = await connectAndSubscribe(port, `early-${randomBytes(3).toString("hex")}`, 640);
    // Parsed while the CONNECT was handled, aedes queued 42 of them and closed the connection
    // at the 43rd (its queueLimit); held instead, they would all be handled at once.
    assert.ok(reads >= 5, `CONNACK and 640 SUBACKs came in ${reads} reads`);
  });
});

describe("subscribe storm - over Redis", () => {
  let redis: RedisServer;
  let node: RunningNode;
  before(async () => {
    redis = await RedisServer.start();
    node = await startNode({
      redis: { url: redis.url, keyPrefix: `ss${randomBytes(4).toString("hex")}:` },
    });
  });
  after(async () => {
    await node?.stop();
    await redis?.stop();
  });

  it("the gauge, the heap and the node's Redis channels are back at their baseline once the clients leave", async () => {
    await stormAndLeave(node);
    const channels = await redis.reply("PUBSUB", "CHANNELS", "storm/*");
    assert.deepEqual(channels, ["*0"], "no storm channel is left subscribed in Redis");
  });

  it("the filters a client subscribes to at once reach Redis in a few SUBSCRIBE commands, not one each", async () => {
    const port = Number(new URL(node.urls.tcp as string).port);
    await redis.reply("CONFIG", "RESETSTAT");
    const { socket } = await subscribeAll(port, `batch-${randomBytes(3).toString("hex")}`, 100);
    const stats = (await redis.reply("INFO", "commandstats")).join("\n");
    await leave([socket]);
    const calls = Number(/^cmdstat_subscribe:calls=(\d+)/m.exec(stats)?.[1] ?? 0);
    assert.ok(calls >= 1 && calls <= 5, `100 filters took ${calls} SUBSCRIBE commands`);
  });

  it("SUBSCRIBEs sent with the CONNECT are spread over turns too (the CONNECT takes Redis round trips)", async () => {
    const port = Number(new URL(node.urls.tcp as string).port);
    const reads = await connectAndSubscribe(port, `early-${randomBytes(3).toString("hex")}`, 640);
    // Handled at once they come in one or two reads; paced, in ten turns, of which a loaded
    // machine's reads may join a few (4 reads seen with other tests running).
    assert.ok(reads >= 3, `CONNACK and 640 SUBACKs came in ${reads} reads`);
  });
});
