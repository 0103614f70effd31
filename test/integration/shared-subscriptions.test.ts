import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { IClientOptions } from "mqtt";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, end, Inbox, type MqttClient } from "../../harness/mqtt-client.js";
import { type NodePair, startNodePair } from "../../harness/node-pair.js";

const V5: IClientOptions = { protocolVersion: 5 };
const V4: IClientOptions = { protocolVersion: 4 };

interface Member {
  client: MqttClient;
  inbox: Inbox;
}

async function member(url: string, options: IClientOptions, filter: string): Promise<Member> {
  const client = await connect(url, options);
  const inbox = new Inbox(client);
  const granted = await client.subscribeAsync(filter, { qos: 1 });
  assert.equal(granted[0]?.qos, 1, `granted ${JSON.stringify(granted)}`);
  return { client, inbox };
}

/** Waits until the members together hold `count` messages, then some more time for strays. */
async function collect(members: Member[], count: number): Promise<string[]> {
  const total = () => members.reduce((sum, m) => sum + m.inbox.received.length, 0);
  await withDeadline(
    new Promise<void>((resolve) => {
      const check = () => (total() >= count ? resolve() : setTimeout(check, 20));
      check();
    }),
    15_000,
    `${count} shared messages (got ${total()})`,
  );
  return members.flatMap((m) => m.inbox.received.map((r) => r.payload.toString()));
}

describe("shared subscriptions on one node", () => {
  let node: RunningNode;
  let url: string;

  before(async () => {
    node = await startNode();
    url = node.urls.tcp as string;
  });
  after(async () => node.stop());

  it("gives each message to one member of the group, MQTT 5 and 3.1.1 alike, balanced", async () => {
    const members = [
      await member(url, { ...V5, clientId: "s1" }, "$share/g1/plant/+/temp"),
      await member(url, { ...V5, clientId: "s2" }, "$share/g1/plant/+/temp"),
      await member(url, { ...V4, clientId: "s3" }, "$share/g1/plant/+/temp"),
    ];
    const plain = await connect(url, { ...V4, clientId: "plain" });
    const everything = new Inbox(plain);
    await plain.subscribeAsync("plant/+/temp", { qos: 1 });
    const publisher = await connect(url, { ...V5, clientId: "pub" });
    try {
      const sent: string[] = [];
      for (let i = 0; i < 300; i++) {
        sent.push(String(i));
        await publisher.publishAsync(`plant/${i % 7}/temp`, String(i), { qos: 1 });
      }
      const got = await collect(members, 300);
      assert.deepEqual([...got].sort(), [...sent].sort(), "each message once across members");
      for (const m of members) {
        assert.ok(
          Math.abs(m.inbox.received.length - 100) <= 15,
          `round robin share ${m.inbox.received.length} of 300`,
        );
      }
      await withDeadline(everything.waitFor(300), 10_000, "the plain subscriber's 300");
    } finally {
      await end(publisher);
      await end(plain);
      for (const m of members) await end(m.client);
    }
  });

  it("keeps messages while no member is online and hands them to the next one", async () => {
    const first = await member(
      url,
      { ...V5, clientId: "q1", clean: false, properties: { sessionExpiryInterval: 300 } },
      "$share/late/jobs/#",
    );
    await end(first.client);
    const publisher = await connect(url, { ...V5, clientId: "pub2" });
    try {
      for (let i = 0; i < 20; i++) await publisher.publishAsync(`jobs/${i}`, `j${i}`, { qos: 1 });
      const next = await member(url, { ...V5, clientId: "q2" }, "$share/late/jobs/#");
      const got = await withDeadline(next.inbox.waitFor(20), 10_000, "the backlog");
      assert.deepEqual(
        got.map((r) => r.payload.toString()).sort(),
        Array.from({ length: 20 }, (_, i) => `j${i}`).sort(),
      );
      await end(next.client);
    } finally {
      await end(publisher);
    }
  });

  it("redelivers what a leaving member had not acknowledged to another member", async () => {
    const stay = await member(url, { ...V5, clientId: "stay" }, "$share/jobs/work/#");
    const leaver = await connect(url, { ...V5, clientId: "leaver" });
    // Receives but never acknowledges: the client's own PUBACKs are withheld.
    const held: string[] = [];
    leaver.handleMessage = (packet, callback) => {
      held.push(String(packet.payload));
      // never calls back: no PUBACK
      void callback;
    };
    await leaver.subscribeAsync("$share/jobs/work/#", { qos: 1 });
    const publisher = await connect(url, { ...V5, clientId: "pub3" });
    try {
      // Each PUBACK comes once its message is kept for a member: all 40 are assigned after this.
      for (let i = 0; i < 40; i++) await publisher.publishAsync(`work/${i}`, `w${i}`, { qos: 1 });
      await withDeadline(
        new Promise<void>((resolve) => {
          const check = () => (held.length > 0 ? resolve() : setTimeout(check, 20));
          check();
        }),
        10_000,
        "a message for the member that will leave",
      );
      assert.ok(stay.inbox.received.length < 40, "the leaver was assigned some");
      leaver.end(true);
      const all = await withDeadline(stay.inbox.waitFor(40), 10_000, "the leaver's messages moved");
      assert.deepEqual(
        all.map((r) => r.payload.toString()).sort(),
        Array.from({ length: 40 }, (_, i) => `w${i}`).sort(),
      );
    } finally {
      leaver.end(true);
      await end(publisher);
      await end(stay.client);
    }
  });
});

describe("shared subscriptions across two nodes over Redis", () => {
  let pair: NodePair;

  before(async () => {
    pair = await startNodePair();
  });
  after(async () => pair.stop());

  it("gives each message to exactly one member, cluster-wide, 3 members on 2 nodes balanced", async () => {
    const a = pair.a.urls.tcp as string;
    const b = pair.b.urls.tcp as string;
    const members = [
      await member(a, { ...V5, clientId: "m1" }, "$share/scada/site/#"),
      await member(b, { ...V5, clientId: "m2" }, "$share/scada/site/#"),
      await member(b, { ...V4, clientId: "m3" }, "$share/scada/site/#"),
    ];
    await waitForMembers(pair.a.httpUrl, "scada/site/#", 3);
    const publisher = await connect(a, { ...V5, clientId: "pub" });
    try {
      const sent: string[] = [];
      for (let i = 0; i < 600; i++) {
        sent.push(String(i));
        await publisher.publishAsync(`site/${i % 5}`, String(i), { qos: 1 });
      }
      const got = await collect(members, 600);
      assert.deepEqual([...got].sort(), [...sent].sort(), "each message once across members");
      for (const m of members) {
        assert.ok(
          Math.abs(m.inbox.received.length - 200) <= 30,
          `round robin share ${m.inbox.received.length} of 600`,
        );
      }
    } finally {
      await end(publisher);
      for (const m of members) await end(m.client);
    }
  });
});

/** Waits until a node sees `count` online members of a group across the cluster (its metrics). */
async function waitForMembers(httpUrl: string, group: string, count: number): Promise<void> {
  const series = `sluice_shared_members{group="${group}",node=`;
  const deadline = Date.now() + 10_000;
  let seen = "none";
  while (Date.now() < deadline) {
    const text = await (await fetch(`${httpUrl}/metrics`)).text();
    const line = text.split("\n").find((l) => l.startsWith(series));
    seen = line ?? "none";
    if (line !== undefined && Number(line.split(" ").pop()) === count) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`${count} members of ${group} not seen (last: ${seen})`);
}
