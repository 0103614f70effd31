import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { Redis } from "ioredis";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, end, Inbox } from "../../harness/mqtt-client.js";
import { RedisRelay } from "../../harness/redis-relay.js";
import { RedisServer } from "../../harness/redis-server.js";

/**
 * A node resends what its members' queues hold and did not reach them (a forwarded delivery
 * lost) on its refresh. When the forwarded copy was only late, it must not go out a second
 * time after the member acknowledged the resent one: node A's pub/sub is held back (a relay
 * between A and Redis) while a message published on B is assigned to A's member.
 */
describe("shared subscriptions: a late forwarded delivery after a resend", () => {
  let redis: RedisServer;
  let relay: RedisRelay;
  let control: Redis;
  let keyPrefix: string;
  let a: RunningNode;
  let b: RunningNode;

  before(async () => {
    redis = await RedisServer.start();
    relay = await RedisRelay.start(redis.port);
    control = new Redis(redis.url);
    keyPrefix = `rs${randomBytes(4).toString("hex")}:`;
    a = await startNode({ nodeId: "resend-a", redis: { url: relay.url, keyPrefix } });
    b = await startNode({ nodeId: "resend-b", redis: { url: redis.url, keyPrefix } });
  });
  after(async () => {
    relay?.release();
    await a?.stop();
    await b?.stop();
    control?.disconnect();
    await relay?.close();
    await redis?.stop();
  });

  it("is not delivered again", async () => {
    const group = "late/late/#";
    const memberClient = await connect(a.urls.tcp as string, { protocolVersion: 5, clientId: "m" });
    const inbox = new Inbox(memberClient);
    const publisher = await connect(b.urls.tcp as string, { protocolVersion: 5 });
    try {
      await memberClient.subscribeAsync(`$share/${group}`, { qos: 1 });
      await membersOn(b, group, 1);
      relay.holdPubSub();
      await publisher.publishAsync("late/1", "first", { qos: 1 });
      // Its forwarded copy is held: A's refresh (every 2 s) resends it from the member's queue.
      await withDeadline(inbox.waitFor(1), 5_000, "the resent message");
      await queueEmptied(`${keyPrefix}share:*:q:m`);
      relay.release();
      // A marker behind the held copy on the same connection: once it is in, the copy was too.
      await publisher.publishAsync("late/2", "marker", { qos: 1 });
      await withDeadline(
        (async () => {
          for (let n = 2; !inbox.received.some((r) => r.payload.toString() === "marker"); n++) {
            await inbox.waitFor(n);
          }
        })(),
        5_000,
        "the marker",
      );
      assert.deepEqual(
        inbox.received.map((r) => r.payload.toString()),
        ["first", "marker"],
      );
    } finally {
      await end(memberClient, publisher);
    }
  });

  /** Polls B's /metrics (every 50 ms, up to 10 s) until it sees `count` members of the group. */
  async function membersOn(node: RunningNode, group: string, count: number): Promise<void> {
    const series = `sluice_shared_members{group="${group}"`;
    for (const deadline = Date.now() + 10_000; Date.now() < deadline; ) {
      const text = await fetch(`${node.httpUrl}/metrics`).then((r) => r.text());
      const line = text.split("\n").find((l) => l.startsWith(series));
      if (line !== undefined && Number(line.slice(line.lastIndexOf(" "))) === count) return;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`${count} members of ${group} not seen`);
  }

  /** Polls Redis (every 50 ms, up to 5 s) until the member's queue is empty: acknowledged. */
  async function queueEmptied(pattern: string): Promise<void> {
    for (const deadline = Date.now() + 5_000; Date.now() < deadline; ) {
      const keys = await control.keys(pattern);
      const lengths = await Promise.all(keys.map((key) => control.xlen(key)));
      if (keys.length > 0 && lengths.every((length) => length === 0)) return;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error("the resent message was not acknowledged");
  }
});
