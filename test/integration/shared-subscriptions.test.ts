import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { IClientOptions } from "mqtt";
import type { ISubackPacket } from "mqtt-packet";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { LogCapture } from "../../harness/log-capture.js";
import {
  connackOf,
  connect,
  end,
  Inbox,
  type MqttClient,
  subscribeGranted,
} from "../../harness/mqtt-client.js";
import { type NodePair, startNodePair } from "../../harness/node-pair.js";
import { rawConnect } from "../../harness/raw-socket.js";
import { WireClient } from "../../harness/wire-client.js";

const V5: IClientOptions = { protocolVersion: 5 };
const V4: IClientOptions = { protocolVersion: 4 };

interface Member {
  client: MqttClient;
  inbox: Inbox;
}

async function member(
  url: string,
  options: IClientOptions,
  filter: string,
  qos: 0 | 1 | 2 = 1,
): Promise<Member> {
  const client = await connect(url, options);
  const inbox = new Inbox(client);
  const granted = await client.subscribeAsync(filter, { qos });
  assert.equal(granted[0]?.qos, qos, `granted ${JSON.stringify(granted)}`);
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

  it("delivers what a publisher sent with a Topic Alias, and what follows it", async () => {
    await assertAliasedReachMember(url, url, "aliased");
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

  it("delivers what a publisher on one node sent with a Topic Alias to a member on the other", async () => {
    await assertAliasedReachMember(
      pair.a.urls.tcp as string,
      pair.b.urls.tcp as string,
      "aliased2",
      pair.a.httpUrl,
    );
  });

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

/**
 * A publisher that sets a Topic Alias, then publishes by it alone, then without one: each
 * message reaches the group's member, with the topic, and no alias (its own maximum is 0).
 * The resolved alias (aedes sets it undefined) read back as null across the envelope, and the
 * member got neither this message nor any after it.
 */
async function assertAliasedReachMember(
  publisherUrl: string,
  memberUrl: string,
  group: string,
  /** Where the publisher's node counts the group's members (another node's member), if not here. */
  publisherHttpUrl?: string,
) {
  const filter = `$share/${group}/alias/#`;
  const m = await member(memberUrl, { ...V5, clientId: `${group}-member` }, filter);
  if (publisherHttpUrl !== undefined) await waitForMembers(publisherHttpUrl, `${group}/alias/#`, 1);
  const publisher = await connect(publisherUrl, { ...V5, clientId: `${group}-pub` });
  try {
    await publisher.publishAsync("alias/1", "set", { qos: 1, properties: { topicAlias: 3 } });
    await publisher.publishAsync("", "by alias", { qos: 1, properties: { topicAlias: 3 } });
    await publisher.publishAsync("alias/2", "plain", { qos: 1 });
    const got = await withDeadline(m.inbox.waitFor(3), 10_000, "the member's 3 messages");
    assert.deepEqual(
      got.map((r) => [r.topic, r.payload.toString()]),
      [
        ["alias/1", "set"],
        ["alias/1", "by alias"],
        ["alias/2", "plain"],
      ],
    );
    for (const r of got) assert.equal(r.packet.properties?.topicAlias, undefined);
  } finally {
    await end(publisher);
    await end(m.client);
  }
}

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

describe("shared subscriptions: syntax, protocol and access control", () => {
  let node: RunningNode;
  let url: string;
  let logs: LogCapture;
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sluice-share-"));
    // Anonymous clients (lines before any `user`): the filter and the group must both be granted.
    await writeFile(
      join(dir, "acl.conf"),
      [
        "topic read plant/#",
        "topic write plant/#",
        "topic read $share/historians/plant/#",
        "pattern read $share/%c/#",
        "topic read $SYS/#",
        "",
      ].join("\n"),
    );
    logs = new LogCapture("info");
    node = await startNode(
      { acl: { file: "acl.conf" }, sharedSubscriptions: { maxGroups: 3 } },
      dir,
      { logger: logs.logger },
    );
    url = node.urls.tcp as string;
  });
  after(async () => {
    await node.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("advertises shared subscriptions in the MQTT 5 CONNACK", async () => {
    const connack = await connackOf(url, { ...V5, clientId: "adv" });
    assert.equal(connack.reasonCode, 0);
    assert.notEqual(connack.properties?.sharedSubscriptionAvailable, false);
  });

  it("grants a group only with both the filter and $share/<group>/<filter> allowed, and audits refusals", async () => {
    const client = await connect(url, { ...V5, clientId: "hist-1" });
    try {
      const granted = await subscribeGranted(client, {
        "$share/historians/plant/#": { qos: 1 },
        "$share/other/plant/#": { qos: 1 },
        "$share/historians/secret/#": { qos: 1 },
        "$share/hist-1/plant/a": { qos: 1 },
      });
      assert.deepEqual(granted, [1, 0x87, 0x87, 1]);
      const audit = await withDeadline(
        logs.waitFor((l) => l.event === "audit.acl_denied" && l.topic === "$share/other/plant/#"),
        5_000,
        "the audit line of the refused group",
      );
      assert.equal(audit.action, "subscribe");
    } finally {
      await end(client);
    }
  });

  it("hands no client the nodes' own signals, though the ACL grants $SYS/#", async () => {
    const monitor = await connect(url, { ...V5, clientId: "monitor" });
    const seen = new Inbox(monitor);
    await monitor.subscribeAsync("$SYS/#", { qos: 0 });
    // Joining announces a change of the group to the nodes on $SYS/sluice/share/changed; aedes'
    // own notice of the SUBSCRIBE is for $SYS readers, and comes after it.
    const joining = await member(url, { ...V5, clientId: "sys-1" }, "$share/sys-1/plant/sys");
    // A later SUBSCRIBE's notice comes after that announcement.
    const later = await member(url, { ...V5, clientId: "sys-later" }, "plant/later");
    try {
      await withDeadline(
        new Promise<void>((resolve) => {
          const check = () =>
            seen.received.some(
              (r) => r.topic.endsWith("/new/subscribes") && r.payload.includes("sys-later"),
            )
              ? resolve()
              : setTimeout(check, 20);
          check();
        }),
        5_000,
        "aedes' notice of the SUBSCRIBE",
      );
      assert.deepEqual(
        seen.received.filter((r) => r.topic.startsWith("$SYS/sluice/")).map((r) => r.topic),
        [],
      );
    } finally {
      await end(joining.client, later.client);
      await end(monitor);
    }
  });

  it("refuses malformed shared filters: 0x8F for MQTT 5, 0x80 for 3.1.1; a wildcard in a share name closes", async () => {
    const topics = ["$share/g", "$share//plant/a", "$share/historians/"];
    for (const [version, refused] of [
      [5, 0x8f],
      [4, 0x80],
    ] as const) {
      const wire = await wireClient(url, version, `bad${version}`);
      try {
        wire.send({
          cmd: "subscribe",
          messageId: 7,
          subscriptions: topics.map((topic) => ({ topic, qos: 1 as const })),
        });
        const suback = (await wire.waitFor("SUBACK", (p) => p.cmd === "suback")) as ISubackPacket;
        assert.deepEqual(
          suback.granted,
          topics.map(() => refused),
        );
        // [MQTT-4.8.2-2] no wildcard in a share name: a malformed filter, the connection closes
        wire.send({
          cmd: "subscribe",
          messageId: 8,
          subscriptions: [{ topic: "$share/g+/plant/a", qos: 1 }],
        });
        await wire.closedWithin();
      } finally {
        wire.stream.destroy();
      }
    }
  });

  it("disconnects an MQTT 5 client that sets No Local on a shared subscription (0x82)", async () => {
    const client = await connect(url, { ...V5, clientId: "nolocal" });
    const disconnect = new Promise<number | undefined>((resolve) =>
      client.once("disconnect", (packet) => resolve(packet.reasonCode)),
    );
    client.subscribe("$share/nolocal/plant/#", { qos: 1, nl: true });
    assert.equal(await withDeadline(disconnect, 5_000, "the DISCONNECT"), 0x82);
    client.end(true);
  });

  it("sends no retained message on a shared subscription, and unsubscribing ends a membership", async () => {
    const publisher = await connect(url, { ...V5, clientId: "ret-pub" });
    const first = await member(url, { ...V5, clientId: "ret-1" }, "$share/historians/plant/ret");
    const second = await member(url, { ...V5, clientId: "ret-2" }, "$share/historians/plant/ret");
    const plain = await connect(url, { ...V5, clientId: "ret-plain" });
    try {
      await publisher.publishAsync("plant/ret", "kept", { qos: 1, retain: true });
      const late = await member(url, { ...V5, clientId: "ret-3" }, "$share/historians/plant/ret");
      const plainInbox = new Inbox(plain);
      await plain.subscribeAsync("plant/ret", { qos: 1 });
      await withDeadline(plainInbox.waitFor(1), 5_000, "the retained message on a plain filter");
      // The shared members got the live message once between them, and nothing retained.
      const live =
        first.inbox.received.length + second.inbox.received.length + late.inbox.received.length;
      assert.equal(live, 1);
      await end(late.client);
      await second.client.unsubscribeAsync("$share/historians/plant/ret");
      for (let i = 0; i < 10; i++) await publisher.publishAsync("plant/ret", `m${i}`, { qos: 1 });
      await withDeadline(first.inbox.waitFor(1 + 10), 5_000, "all ten to the member left");
      assert.equal(second.inbox.received.filter((r) => r.payload.toString() !== "kept").length, 0);
    } finally {
      await publisher.publishAsync("plant/ret", "", { qos: 1, retain: true });
      await end(publisher);
      await end(first.client);
      await end(second.client);
      await end(plain);
    }
  });

  it("delivers QoS 2 to one member, once", async () => {
    const members = [
      await member(url, { ...V5, clientId: "q2-a" }, "$share/historians/plant/q2", 2),
      await member(url, { ...V4, clientId: "q2-b" }, "$share/historians/plant/q2", 2),
    ];
    const publisher = await connect(url, { ...V5, clientId: "q2-pub" });
    try {
      for (let i = 0; i < 50; i++) await publisher.publishAsync("plant/q2", `x${i}`, { qos: 2 });
      const got = await collect(members, 50);
      assert.deepEqual([...got].sort(), Array.from({ length: 50 }, (_, i) => `x${i}`).sort());
      for (const m of members) assert.ok(m.inbox.received.every((r) => r.packet.qos === 2));
    } finally {
      await end(publisher);
      for (const m of members) await end(m.client);
    }
  });

  it("refuses a new group past sharedSubscriptions.maxGroups (0x97), and frees a place as a group ends", async () => {
    const client = await connect(url, { ...V5, clientId: "quota" });
    try {
      // This suite's earlier groups have ended with their members: three places.
      const filters = ["a", "b", "c", "d"].map((f) => `$share/quota/plant/${f}`);
      const granted = [];
      for (const filter of filters) {
        granted.push(...(await subscribeGranted(client, { [filter]: { qos: 1 } })));
      }
      assert.deepEqual(granted, [1, 1, 1, 0x97]);
      await client.unsubscribeAsync(filters[0] as string);
      assert.deepEqual(await subscribeGranted(client, { [filters[3] as string]: { qos: 1 } }), [1]);
    } finally {
      await end(client);
    }
  });
});

/** A raw connection, CONNACK received. */
async function wireClient(url: string, version: 4 | 5, clientId: string): Promise<WireClient> {
  const wire = new WireClient(await rawConnect(Number(new URL(url).port)), version);
  wire.send({ cmd: "connect", protocolVersion: version, clientId, keepalive: 60, clean: true });
  await wire.waitFor("CONNACK", (p) => p.cmd === "connack");
  return wire;
}
