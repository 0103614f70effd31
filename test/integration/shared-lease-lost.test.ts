import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Redis } from "ioredis";
import { withDeadline } from "../../harness/deadline.js";
import { connect, end, Inbox } from "../../harness/mqtt-client.js";
import { type NodePair, startNodePair } from "../../harness/node-pair.js";

/**
 * A node whose lease is missing for a moment (Redis restarted without its data, or the node was
 * cut off for longer than its lease) looks dead to the others: they take its members out of
 * their groups. The node then takes its lease again, and its members, still connected to it,
 * must be members again; otherwise the group has no member online and its messages wait in the
 * backlog for good. Found by the chaos bench's Redis restart without data (every member lost
 * within 150 ms of its resubscription; 1,124 messages stranded).
 */
describe("shared subscriptions: a member counted gone while its node's lease was missing", () => {
  let pair: NodePair;
  let control: Redis;

  before(async () => {
    pair = await startNodePair();
    control = new Redis(pair.redis.url);
  });
  after(async () => {
    control?.disconnect();
    await pair?.stop();
  });

  it("joins its group again once its node holds its lease again, and gets what waited", async () => {
    const member = await connect(pair.a.urls.tcp as string, {
      protocolVersion: 4,
      clientId: "lease-member",
      clean: false,
    });
    const inbox = new Inbox(member);
    const publisher = await connect(pair.b.urls.tcp as string, { protocolVersion: 4 });
    try {
      await member.subscribeAsync("$share/lease/lease/#", { qos: 1 });
      await withDeadline(listed(true), 5_000, "the member listed");
      // node-b's refresh (every 2 s) must see node-a's lease gone: it is deleted until then.
      await withDeadline(
        (async () => {
          while (await isListed()) {
            await control.del(`${pair.keyPrefix}node:node-a`);
            await new Promise((resolve) => setTimeout(resolve, 100));
          }
        })(),
        10_000,
        "node-b counting node-a's member gone",
      );
      await publisher.publishAsync("lease/1", "waited", { qos: 1 });
      // node-a takes its lease again at its next heartbeat, and its member at its next refresh.
      await withDeadline(inbox.waitFor(1), 10_000, "the message that waited");
      await publisher.publishAsync("lease/2", "live", { qos: 1 });
      await withDeadline(inbox.waitFor(2), 5_000, "a live message");
      assert.deepEqual(
        inbox.received.map((r) => r.payload.toString()),
        ["waited", "live"],
      );
    } finally {
      await end(member, publisher);
    }
  });

  /** Whether the group lists the member online. */
  async function isListed(): Promise<boolean> {
    const keys = await control.keys(`${pair.keyPrefix}share:*:members`);
    const found = await Promise.all(keys.map((key) => control.hexists(key, "lease-member")));
    return found.includes(1);
  }

  /** Polls Redis (every 50 ms) until the member is listed or not, as asked. */
  async function listed(wanted: boolean): Promise<void> {
    while ((await isListed()) !== wanted) await new Promise((resolve) => setTimeout(resolve, 50));
  }
});
