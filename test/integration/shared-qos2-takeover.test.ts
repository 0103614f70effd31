import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { withDeadline } from "../../harness/deadline.js";
import type { RunningNode } from "../../harness/in-process-node.js";
import { connect, end, Inbox, type MqttClient, subscribe } from "../../harness/mqtt-client.js";
import { metricValue } from "../../harness/node-metrics.js";
import { connectMovingPublisher, startNodePair } from "../../harness/node-pair.js";
import type { RedisRelay } from "../../harness/redis-relay.js";

/**
 * Issue 17, "Shared subscriptions: each message goes to exactly one member" with "No QoS 2
 * duplicates": a publisher's QoS 2 PUBLISH reaches node A, which assigns it in a shared group
 * and publishes it; neither reaches Redis (A reaches Redis through a relay that holds them, as
 * a stopped or cut-off node would). The client's resend through node B takes the packet id
 * over, and B assigns and publishes the message. A's held assignment, once it reaches Redis,
 * must assign nothing: the group's one member gets the message once.
 */
const DEADLINE_MS = 15_000;

describe("a shared group's QoS 2 message whose publish is taken over by another node", () => {
  it("is assigned once: A's held assignment assigns nothing after B's take-over", async () => {
    const { a, b, relay, stop } = await startNodePair({ relayA: true });
    const held = relay as RedisRelay;
    const clients: MqttClient[] = [];
    try {
      const topic = `shtakeover/${randomBytes(4).toString("hex")}`;
      const member = await connect(b.urls.tcp as string, {
        clientId: "member-b",
        protocolVersion: 5,
      });
      clients.push(member);
      const inbox = new Inbox(member);
      await subscribe(member, `$share/g/${topic}`, 2);
      for (const node of [a, b]) await membersSeen(node, 1);
      const publisher = await connectMovingPublisher(a, b, "shtakeover-pub");
      clients.push(publisher);

      held.holdCommandsWith(topic);
      const first = publisher.publishAsync(topic, "once", { qos: 2 });
      await withDeadline(held.commandHeld(), DEADLINE_MS, "A's assignment held");
      // The load balancer drops the client from A; it reconnects to B and sends again.
      publisher.stream.destroy();
      await withDeadline(first, DEADLINE_MS, "PUBCOMP through B");
      await withDeadline(inbox.waitFor(1), DEADLINE_MS, "B's assignment at the member");
      held.releaseCommands();
      // Assigned by A after its held commands, on the same connection to Redis, and sent on to
      // the member's node in that order: once these arrive, a second copy would have come.
      const later = await connect(a.urls.tcp as string, { clientId: "shtakeover-later" });
      clients.push(later);
      for (const payload of ["after", "last"]) {
        await withDeadline(
          later.publishAsync(topic, payload, { qos: 2 }),
          DEADLINE_MS,
          `PUBCOMP of ${payload}`,
        );
      }
      await withDeadline(inbox.waitFor(3), DEADLINE_MS, "the later messages at the member");
      assert.deepEqual(
        inbox.received.map((m) => m.payload.toString()),
        ["once", "after", "last"],
      );
    } finally {
      held.releaseCommands();
      await end(...clients);
      await stop();
    }
  });
});

/** Polls the node's /metrics (every 50 ms, up to the deadline) until it sees `count` members. */
async function membersSeen(node: RunningNode, count: number): Promise<void> {
  const deadline = Date.now() + DEADLINE_MS;
  let seen = Number.NaN;
  while (Date.now() < deadline) {
    seen = await metricValue(node.httpUrl, "sluice_shared_members");
    if (seen === count) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`${node.httpUrl}: sluice_shared_members ${seen}, not ${count}`);
}
