import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { withDeadline } from "../../harness/deadline.js";
import { connect, end, Inbox } from "../../harness/mqtt-client.js";
import { type NodePair, startNodePair } from "../../harness/node-pair.js";

/**
 * A persistent member that is offline keeps its groups (their messages wait for it); once its
 * session ends (a clean start discards it, or it expires) it holds them no more: a group held
 * by nobody ends, and what is published after is not kept for a later member.
 */
describe("shared subscriptions: a member's session ends", () => {
  let pair: NodePair;

  before(async () => {
    pair = await startNodePair();
  });
  after(async () => pair?.stop());

  /**
   * Polls a node's /metrics (every 50 ms, up to 10 s) until the group's online members are
   * `count`; undefined: until the node holds no such group.
   */
  async function membersOn(httpUrl: string, group: string, count?: number): Promise<void> {
    const series = `sluice_shared_members{group="${group}"`;
    let seen: string | undefined;
    for (const deadline = Date.now() + 10_000; Date.now() < deadline; ) {
      const text = await fetch(`${httpUrl}/metrics`).then((r) => r.text());
      seen = text.split("\n").find((l) => l.startsWith(series));
      const value = seen === undefined ? undefined : Number(seen.slice(seen.lastIndexOf(" ")));
      if (value === count) return;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`${group} on ${httpUrl}: ${seen ?? "no group"}, not ${count ?? "no group"}`);
  }

  async function groupGone(group: string): Promise<void> {
    await membersOn(pair.a.httpUrl, group);
    await membersOn(pair.b.httpUrl, group);
  }

  /** Publishes one message on B, then checks that a new member gets nothing kept for it. */
  async function nothingKept(group: string, topic: string): Promise<void> {
    const publisher = await connect(pair.b.urls.tcp as string, { protocolVersion: 5 });
    await publisher.publishAsync(topic, "after the end", { qos: 1 });
    const next = await connect(pair.a.urls.tcp as string, { protocolVersion: 5 });
    const inbox = new Inbox(next);
    try {
      await next.subscribeAsync(`$share/${group}`, { qos: 1 });
      await membersOn(pair.b.httpUrl, group, 1);
      // A message published now comes behind anything the group had kept.
      await publisher.publishAsync(topic, "marker", { qos: 1 });
      await withDeadline(inbox.waitFor(1), 5_000, "the marker");
      assert.deepEqual(
        inbox.received.map((r) => r.payload.toString()),
        ["marker"],
      );
    } finally {
      await end(publisher, next);
    }
  }

  /** A member on A whose session outlives its connection by `expirySeconds`, gone offline. */
  async function offlineMember(clientId: string, group: string, expirySeconds: number) {
    const member = await connect(pair.a.urls.tcp as string, {
      protocolVersion: 5,
      clientId,
      clean: true,
      properties: { sessionExpiryInterval: expirySeconds },
    });
    await member.subscribeAsync(`$share/${group}`, { qos: 1 });
    await end(member);
  }

  it("a clean start of the member's client id (on the other node) ends its membership", async () => {
    const group = "ended/clean/#";
    await offlineMember("clean-again", group, 300);
    const again = await connect(pair.b.urls.tcp as string, {
      protocolVersion: 5,
      clientId: "clean-again",
      clean: true,
    });
    await end(again);
    await groupGone(group);
    await nothingKept(group, "clean/1");
  });

  it("the expiry of the member's session ends its membership", async () => {
    const group = "ended/expired/#";
    await offlineMember("expires", group, 1);
    await groupGone(group);
    await nothingKept(group, "expired/1");
  });
});
