import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { IClientOptions } from "mqtt";
import type { Packet } from "mqtt-packet";
import { withDeadline } from "../../harness/deadline.js";
import { HaProxy } from "../../harness/haproxy.js";
import {
  connect,
  connectWithConnack,
  end,
  Inbox,
  type MqttClient,
} from "../../harness/mqtt-client.js";
import { rawConnect } from "../../harness/raw-socket.js";
import { reapOnExit } from "../../harness/reaper.js";
import { RedisServer } from "../../harness/redis-server.js";
import { SluiceProcess } from "../../harness/sluice-process.js";
import { WireClient } from "../../harness/wire-client.js";

/**
 * Shared subscriptions across two node processes on a real Redis, clients direct to a node or
 * through a real HAProxy: single assignment and balance, strategies, members leaving (with
 * messages in flight, by disconnect, takeover, and the SIGKILL of their node), the backlog and
 * its cap, mixed shared and normal subscriptions, and 3.1.1 clients (MQTT.js, mosquitto_sub).
 */
const MAX_QUEUED = 500;
const V5: IClientOptions = { protocolVersion: 5 };
const V4: IClientOptions = { protocolVersion: 4 };

interface Node {
  readonly name: string;
  readonly process: SluiceProcess;
  readonly url: string;
  readonly port: number;
  readonly httpUrl: string;
}

let dir: string;
let redis: RedisServer;
let lb: HaProxy;
const nodes: Node[] = [];
const nodeA = () => nodes[0] as Node;
const nodeB = () => nodes[1] as Node;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-shared-cluster-"));
  redis = await RedisServer.start();
  const prefix = `sh${randomBytes(4).toString("hex")}:`;
  const started = ["sh-a", "sh-b"].map(async (name) => {
    const file = join(dir, `${name}.yaml`);
    await writeFile(
      file,
      `nodeId: ${name}\nlisteners: [{ type: tcp, host: 127.0.0.1, port: 0 }]\nhttp: { host: 127.0.0.1, port: 0 }\n` +
        `auth: { allowAnonymous: true }\nshutdown: { drainSeconds: 0 }\n` +
        `redis: { url: "${redis.url}", keyPrefix: "${prefix}", heartbeatMs: 250, nodeLeaseSeconds: 1 }\n` +
        `sharedSubscriptions:\n  maxQueued: ${MAX_QUEUED}\n  groups:\n` +
        `    - { match: "ht-*", strategy: hash_topic }\n    - { match: "hc-*", strategy: hash_clientid }\n` +
        `    - { match: "lf-*", strategy: local_first }\n    - { match: "st-*", strategy: sticky }\n`,
    );
    const process = SluiceProcess.spawn(["start", "--config", file], { SLUICE_LOG_LEVEL: "info" });
    const { ports, httpPort } = await process.ready();
    const port = ports.tcp as number;
    return {
      name,
      process,
      port,
      url: `mqtt://127.0.0.1:${port}`,
      httpUrl: `http://127.0.0.1:${httpPort}`,
      httpPort,
    };
  });
  const ready = await Promise.all(started);
  nodes.push(...ready);
  lb = await HaProxy.start(
    ready.map((n) => ({ name: n.name, mqttPort: n.port, httpPort: n.httpPort })),
  );
});
after(async () => {
  await lb?.stop();
  for (const node of nodes) node.process.kill();
  await Promise.all(nodes.map((n) => n.process.exited));
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** The sum of a metric's series whose labels include every `label="value"` given. */
async function metric(node: Node, name: string, labels: Record<string, string>): Promise<number> {
  const text = await fetch(`${node.httpUrl}/metrics`).then((r) => r.text());
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    const labelText = line.slice(name.length, line.lastIndexOf("}") + 1);
    if (wanted.every((w) => labelText.includes(w)))
      sum += Number(line.slice(line.lastIndexOf(" ")));
  }
  return sum;
}

/** Polls a node's /metrics (every 50 ms, up to `ms`) until the group's series is `value`. */
async function waitForMetric(
  node: Node,
  name: string,
  group: string,
  value: number,
  ms = 10_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  let seen = Number.NaN;
  while (Date.now() < deadline) {
    const text = await fetch(`${node.httpUrl}/metrics`).then((r) => r.text());
    const line = text.split("\n").find((l) => l.startsWith(`${name}{group="${group}"`));
    seen = line === undefined ? Number.NaN : Number(line.slice(line.lastIndexOf(" ")));
    if (seen === value) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`${name}{group="${group}"} on ${node.name}: ${seen}, not ${value}`);
}

/** Both nodes see `count` online members of the group (publishing picks from that view). */
async function membersSeen(group: string, count: number): Promise<void> {
  await Promise.all(nodes.map((n) => waitForMetric(n, "sluice_shared_members", group, count)));
}

/**
 * Members `<prefix>-1`, `-2`, `-3` of `$share/<group>` on nodes A, B and B (MQTT 5), once both
 * nodes see all three (a publishing node picks from its view).
 */
async function threeMembers(prefix: string, group: string): Promise<Member[]> {
  const members = [];
  for (const [i, node] of [nodeA(), nodeB(), nodeB()].entries()) {
    members.push(await member(`${prefix}-${i + 1}`, node.url, V5, `$share/${group}`));
  }
  try {
    await membersSeen(group, 3);
  } catch (error) {
    await end(...members.map((m) => m.client));
    throw error;
  }
  return members;
}

interface Member {
  readonly name: string;
  readonly client: MqttClient;
  readonly inbox: Inbox;
}

async function member(
  name: string,
  url: string,
  options: IClientOptions,
  filter: string,
): Promise<Member> {
  const client = await connect(url, { clientId: name, ...options });
  const inbox = new Inbox(client);
  const granted = await client.subscribeAsync(filter, { qos: 1 });
  assert.equal(granted[0]?.qos, 1, `granted ${JSON.stringify(granted)}`);
  return { name, client, inbox };
}

const payloads = (m: Member) => m.inbox.received.map((r) => r.payload.toString());

/** Resolves once `done()` holds, checked on every message any of the clients receives. */
function until(clients: MqttClient[], done: () => boolean, ms: number, what: string) {
  return withDeadline(
    new Promise<void>((resolve) => {
      const check = () => {
        if (!done()) return;
        for (const c of clients) c.off("message", check);
        resolve();
      };
      for (const c of clients) c.on("message", check);
      check();
    }),
    ms,
    what,
  );
}

/** Publishes `count` QoS 1 messages, `window` at a time; resolves with the acknowledged ones. */
async function publishMany(
  client: MqttClient,
  count: number,
  message: (i: number) => { topic: string; payload: string },
  window = 1,
  onAck: (payload: string) => void = () => {},
): Promise<string[]> {
  const acked: string[] = [];
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const { topic, payload } = message(next++);
      await client.publishAsync(topic, payload, { qos: 1 });
      acked.push(payload);
      onAck(payload);
    }
  };
  await Promise.all(Array.from({ length: window }, worker));
  return acked;
}

/** A raw MQTT connection that reads PUBLISHes and never acknowledges them; subscribed. */
async function withholdingMember(
  node: Node,
  clientId: string,
  filter: string,
  version: 4 | 5,
  persistent = false,
): Promise<WireClient> {
  const wire = new WireClient(await rawConnect(node.port), version);
  wire.send({
    cmd: "connect",
    protocolId: "MQTT",
    protocolVersion: version,
    clean: !persistent,
    clientId,
    keepalive: 60,
    ...(persistent && version === 5 ? { properties: { sessionExpiryInterval: 300 } } : {}),
  } as Packet);
  await wire.waitFor("CONNACK", (p) => p.cmd === "connack");
  wire.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: filter, qos: 1 }] });
  const suback = await wire.waitFor("SUBACK", (p) => p.cmd === "suback");
  assert.deepEqual((suback as { granted: number[] }).granted, [1]);
  return wire;
}

/** Checks `done` every 20 ms until it holds; rejects naming `what` after `ms`. */
async function pollUntil(done: () => boolean, ms: number, what: () => string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`${what()}: not within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function sortedNumbers(values: readonly string[]): string[] {
  return [...values].sort((a, b) => Number(a) - Number(b));
}

const range = (from: number, to: number) =>
  Array.from({ length: to - from }, (_, i) => String(from + i));

describe("shared subscriptions across two node processes", () => {
  it("3 members on 2 nodes, 3,000 QoS 1 messages: each to exactly one member, round robin within 15 %", async () => {
    const group = "rr/load/#";
    const members = await threeMembers("rr", group);
    const publishers = [await connect(nodeA().url, V5), await connect(nodeB().url, V5)];
    try {
      const started = Date.now();
      // Half published on each node: both nodes' pickers take part.
      await Promise.all(
        publishers.map((p, k) =>
          publishMany(
            p,
            1_500,
            (i) => ({ topic: `load/${i % 10}`, payload: `${k * 1_500 + i}` }),
            20,
          ),
        ),
      );
      const total = () => members.reduce((sum, m) => sum + m.inbox.received.length, 0);
      await until(
        members.map((m) => m.client),
        () => total() >= 3_000,
        20_000,
        "3,000 messages",
      );
      const elapsed = Date.now() - started;
      const got = members.flatMap(payloads);
      assert.deepEqual(sortedNumbers(got), range(0, 3_000), "each message once across the group");
      // Sent by the nodes: a duplicate still on its way would show here.
      let delivered = 0;
      let redelivered = 0;
      for (const node of nodes) {
        delivered += await metric(node, "sluice_shared_delivered_total", { group });
        redelivered += await metric(node, "sluice_shared_redelivered_total", { group });
      }
      assert.equal(delivered, 3_000);
      assert.equal(redelivered, 0);
      const shares = members.map((m) => m.inbox.received.length);
      for (const share of shares) assert.ok(Math.abs(share - 1_000) <= 150, `shares ${shares}`);
      process.stdout.write(`# round robin: shares ${shares.join("/")} of 3,000 in ${elapsed} ms\n`);
    } finally {
      await end(...publishers, ...members.map((m) => m.client));
    }
  });

  it("a shared and a normal subscription to one topic: the normal one gets all, the group each once", async () => {
    const group = "mix/mix/#";
    const members = [
      await member("mix-1", nodeA().url, V5, `$share/${group}`),
      await member("mix-2", nodeB().url, V4, `$share/${group}`),
    ];
    const normal = await member("mix-plain", nodeB().url, V5, "mix/#");
    const publisher = await connect(nodeA().url, V5);
    try {
      await membersSeen(group, 2);
      // The normal subscription reaches the publisher's node through Redis: publish until it hears.
      await withDeadline(
        (async () => {
          for (let k = 0; normal.inbox.received.length === 0 && k < 100; k++) {
            await publisher.publishAsync("mix/warm", `warm-${k}`, { qos: 1 });
            await withDeadline(normal.inbox.waitFor(1), 100, "warm-up").catch(() => undefined);
          }
        })(),
        10_000,
        "the normal subscription known on the publisher's node",
      );
      const warm = (m: Member) => m.inbox.received.filter((r) => r.topic === "mix/warm").length;
      await publishMany(publisher, 200, (i) => ({ topic: `mix/${i % 3}`, payload: String(i) }));
      const counted = () => normal.inbox.received.length - warm(normal);
      const groupCount = () => members.reduce((s, m) => s + m.inbox.received.length - warm(m), 0);
      await until(
        [normal.client, ...members.map((m) => m.client)],
        () => counted() >= 200 && groupCount() >= 200,
        10_000,
        "200 to the normal subscriber and 200 to the group",
      );
      const cold = (m: Member) =>
        m.inbox.received.filter((r) => r.topic !== "mix/warm").map((r) => r.payload.toString());
      assert.deepEqual(cold(normal), range(0, 200), "the normal subscriber: all, in order");
      assert.deepEqual(sortedNumbers(members.flatMap(cold)), range(0, 200), "the group: each once");
      assert.ok(
        members.every((m) => cold(m).length > 0),
        "both members take part",
      );
    } finally {
      await end(publisher, normal.client, ...members.map((m) => m.client));
    }
  });

  it("3.1.1 clients (MQTT.js v4, mosquitto_sub -V 311) share a group with MQTT 5 clients", async () => {
    const group = "legacy/legacy/#";
    const v5 = await member("legacy-v5", nodeA().url, V5, `$share/${group}`);
    const v4 = await member("legacy-v4", nodeB().url, V4, `$share/${group}`);
    const mosquitto = spawnMosquittoSub(nodeA().port, "legacy-mosq", `$share/${group}`);
    const publisher = await connect(nodeB().url, V5);
    try {
      await membersSeen(group, 3);
      await publishMany(publisher, 300, (i) => ({ topic: `legacy/${i % 4}`, payload: String(i) }));
      const total = () =>
        v5.inbox.received.length + v4.inbox.received.length + mosquitto.lines.length;
      await pollUntil(
        () => total() >= 300,
        10_000,
        () => `300 across the group (got ${total()})`,
      );
      const all = [...payloads(v5), ...payloads(v4), ...mosquitto.lines];
      assert.deepEqual(sortedNumbers(all), range(0, 300), "each message once");
      const shares = [v5.inbox.received.length, v4.inbox.received.length, mosquitto.lines.length];
      for (const share of shares) assert.ok(Math.abs(share - 100) <= 15, `shares ${shares}`);
      assert.ok(
        v4.inbox.received.every((r) => r.packet.properties === undefined),
        "no MQTT 5 properties to a 3.1.1 member",
      );
    } finally {
      mosquitto.stop();
      await end(publisher, v5.client, v4.client);
    }
  });

  describe("strategies chosen by share name (sharedSubscriptions.groups)", () => {
    it("hash_topic: one topic's messages go to one member, in order, whichever node they come from", async () => {
      const group = "ht-1/ht/#";
      const members = await threeMembers("ht-m", group);
      const publishers = [await connect(nodeA().url, V5), await connect(nodeB().url, V5)];
      try {
        // Topics ht/0..9, each published from both nodes.
        await Promise.all(
          publishers.map((p, k) =>
            publishMany(p, 200, (i) => ({ topic: `ht/${i % 10}`, payload: `${k}:${i % 10}:${i}` })),
          ),
        );
        await orderedByKey(members, 400, (payload) => payload.split(":")[1] as string);
      } finally {
        await end(...publishers, ...members.map((m) => m.client));
      }
    });

    it("hash_clientid: one publisher's messages go to one member, in order", async () => {
      const group = "hc-1/hc/#";
      const members = [
        await member("hc-m1", nodeA().url, V5, `$share/${group}`),
        await member("hc-m2", nodeB().url, V4, `$share/${group}`),
        await member("hc-m3", nodeA().url, V5, `$share/${group}`),
      ];
      const publishers: MqttClient[] = [];
      try {
        for (let k = 0; k < 6; k++) {
          const node = k % 2 === 0 ? nodeA() : nodeB();
          publishers.push(await connect(node.url, { ...V5, clientId: `hc-pub-${k}` }));
        }
        await membersSeen(group, 3);
        await Promise.all(
          publishers.map((p, k) =>
            publishMany(p, 50, (i) => ({ topic: `hc/${(i * 7) % 5}`, payload: `${k}:${i}` })),
          ),
        );
        await orderedByKey(members, 300, (payload) => payload.split(":")[0] as string);
      } finally {
        await end(...publishers, ...members.map((m) => m.client));
      }
    });

    it("local_first: each node's messages go to the member on that node", async () => {
      const group = "lf-1/lf/#";
      const onA = await member("lf-a", nodeA().url, V5, `$share/${group}`);
      const onB = await member("lf-b", nodeB().url, V5, `$share/${group}`);
      const publishers = [await connect(nodeA().url, V5), await connect(nodeB().url, V5)];
      try {
        await membersSeen(group, 2);
        await Promise.all(
          publishers.map((p, k) =>
            publishMany(p, 50, (i) => ({ topic: "lf/x", payload: `${k === 0 ? "a" : "b"}${i}` })),
          ),
        );
        await until(
          [onA.client, onB.client],
          () => payloads(onA).length + payloads(onB).length >= 100,
          10_000,
          "100 messages",
        );
        assert.deepEqual(
          payloads(onA).sort(),
          range(0, 50)
            .map((i) => `a${i}`)
            .sort(),
        );
        assert.deepEqual(
          payloads(onB).sort(),
          range(0, 50)
            .map((i) => `b${i}`)
            .sort(),
        );
      } finally {
        await end(...publishers, onA.client, onB.client);
      }
    });

    it("sticky: one member until it leaves, then one other member", async () => {
      const group = "st-1/st/#";
      const members = await threeMembers("st-m", group);
      const publisher = await connect(nodeA().url, V5);
      try {
        await publishMany(publisher, 50, (i) => ({ topic: `st/${i % 5}`, payload: String(i) }));
        const clients = members.map((m) => m.client);
        const total = () => members.reduce((sum, m) => sum + m.inbox.received.length, 0);
        await until(clients, () => total() >= 50, 10_000, "50 messages");
        const first = members.filter((m) => m.inbox.received.length > 0);
        assert.equal(first.length, 1, `one member: ${members.map((m) => m.inbox.received.length)}`);
        const stuck = first[0] as Member;
        assert.deepEqual(payloads(stuck), range(0, 50), "in order");
        await end(stuck.client);
        await membersSeen(group, 2);
        const rest = members.filter((m) => m !== stuck);
        await publishMany(publisher, 50, (i) => ({
          topic: `st/${i % 5}`,
          payload: String(50 + i),
        }));
        await until(
          clients,
          () => rest.reduce((s, m) => s + m.inbox.received.length, 0) >= 50,
          10_000,
          "50 more",
        );
        const next = rest.filter((m) => m.inbox.received.length > 0);
        assert.equal(
          next.length,
          1,
          `one other member: ${rest.map((m) => m.inbox.received.length)}`,
        );
        assert.deepEqual(payloads(next[0] as Member), range(50, 100), "in order");
      } finally {
        await end(publisher, ...members.map((m) => m.client));
      }
    });
  });

  it("a member that disconnects with QoS 1 messages in flight: they go to another member", async () => {
    const group = "leave/leave/#";
    const stay = await member("leave-stay", nodeB().url, V5, `$share/${group}`);
    const leaver = await withholdingMember(nodeA(), "leave-go", `$share/${group}`, 4);
    const publisher = await connect(nodeB().url, V5);
    try {
      await membersSeen(group, 2);
      // Each PUBACK comes once its message is kept for a member: all 40 are assigned after this.
      await publishMany(publisher, 40, (i) => ({ topic: `leave/${i}`, payload: String(i) }));
      const held = () => leaver.publishedPayloads();
      await pollUntil(
        () => held().length + stay.inbox.received.length >= 40,
        10_000,
        () => "40 messages between the two members",
      );
      const withheld = held();
      assert.ok(withheld.length >= 10, `the leaver holds ${withheld.length} unacknowledged`);
      const before = await metric(nodeA(), "sluice_shared_redelivered_total", { group });
      leaver.send({ cmd: "disconnect" });
      leaver.stream.end();
      await until(
        [stay.client],
        () => stay.inbox.received.length >= 40,
        10_000,
        "the leaver's messages",
      );
      assert.deepEqual(sortedNumbers(payloads(stay)), range(0, 40), "each once, none lost");
      const moved = (await metric(nodeA(), "sluice_shared_redelivered_total", { group })) - before;
      assert.equal(moved, withheld.length, "every message the leaver held, counted as redelivered");
    } finally {
      leaver.stream.destroy();
      await end(publisher, stay.client);
    }
  });

  it("takeover through the other node with messages in flight: the new connection (or a member) gets them", async () => {
    const group = "take/take/#";
    const stay = await member("take-stay", nodeB().url, V5, `$share/${group}`);
    const old = await withholdingMember(nodeA(), "take-me", `$share/${group}`, 5, true);
    const publisher = await connect(nodeB().url, V5);
    let taker: MqttClient | undefined;
    try {
      await membersSeen(group, 2);
      await publishMany(publisher, 40, (i) => ({ topic: `take/${i}`, payload: String(i) }));
      await pollUntil(
        () => old.publishedPayloads().length + stay.inbox.received.length >= 40,
        10_000,
        () => "40 messages between the two members",
      );
      const inFlight = old.publishedPayloads();
      assert.ok(inFlight.length >= 10, `the old connection holds ${inFlight.length}`);
      const taken = await connectWithConnack(nodeB().url, {
        ...V5,
        clientId: "take-me",
        clean: false,
        properties: { sessionExpiryInterval: 300 },
      });
      taker = taken.client;
      assert.equal(taken.sessionPresent, true, "the session (and its subscription) resumed");
      await old.closedWithin(5_000);
      const takerGot = () => taken.inbox.received.map((r) => r.payload.toString());
      await pollUntil(
        () => new Set([...takerGot(), ...payloads(stay)]).size >= 40,
        10_000,
        () => "the old connection's messages delivered again",
      );
      const all = [...takerGot(), ...payloads(stay)];
      assert.deepEqual(sortedNumbers(all), range(0, 40), "each once, none lost");
      // The old connection's leave and the new one's join race (they run on different nodes):
      // the queue goes with the session to the new connection, or, when the leave comes first,
      // to the other member, counted as redelivered.
      const toStay = payloads(stay).filter((p) => inFlight.includes(p));
      let redelivered = 0;
      for (const node of nodes) {
        redelivered += await metric(node, "sluice_shared_redelivered_total", { group });
      }
      process.stdout.write(
        `# takeover: ${inFlight.length} in flight; to the new connection ${takerGot().length}, ` +
          `to the other member ${toStay.length} (${redelivered} counted redelivered)\n`,
      );
      assert.deepEqual(sortedNumbers([...takerGot(), ...toStay]), sortedNumbers(inFlight));
      assert.equal(redelivered, toStay.length);
    } finally {
      old.stream.destroy();
      await end(publisher, stay.client, taker);
    }
  });

  it("no member online: messages wait (up to maxQueued) for the persistent member, the rest dropped and counted", async () => {
    const group = "late/late/#";
    const session = { ...V5, clean: false, properties: { sessionExpiryInterval: 300 } };
    const first = await member("late-member", nodeA().url, session, `$share/${group}`);
    const publisher = await connect(nodeB().url, V5);
    let back: MqttClient | undefined;
    try {
      await membersSeen(group, 1);
      await end(first.client);
      await membersSeen(group, 0);
      const extra = 30;
      await publishMany(publisher, MAX_QUEUED + extra, (i) => ({
        topic: "late/x",
        payload: String(i),
      }));
      assert.equal(
        await metric(nodeB(), "sluice_shared_dropped_total", { group, reason: "backlog_full" }),
        extra,
      );
      await waitForMetric(nodeB(), "sluice_shared_backlog", group, MAX_QUEUED);
      // Back through the balancer, on whichever node.
      const resumed = await connectWithConnack(lb.url, { ...session, clientId: "late-member" });
      back = resumed.client;
      assert.equal(resumed.sessionPresent, true);
      await withDeadline(resumed.inbox.waitFor(MAX_QUEUED), 10_000, "the backlog");
      assert.deepEqual(
        resumed.inbox.received.map((r) => r.payload.toString()),
        range(0, MAX_QUEUED),
        "the first maxQueued messages, in order",
      );
      await Promise.all(nodes.map((n) => waitForMetric(n, "sluice_shared_backlog", group, 0)));
      assert.equal(resumed.inbox.received.length, MAX_QUEUED, "no more than the cap");
    } finally {
      await end(publisher, back);
      // The session would hold the group: end it.
      const cleanup = await connect(nodeA().url, { ...V5, clientId: "late-member", clean: true });
      await end(cleanup);
    }
  });

  it("SIGKILL of a node holding members mid-stream: every acknowledged message reaches a member", async () => {
    const group = "death/death/#";
    const dead = [
      await member("death-back", nodeA().url, V5, `$share/${group}`),
      await member("death-gone", nodeA().url, V5, `$share/${group}`),
    ];
    const live = [
      await member("death-s1", nodeB().url, V5, `$share/${group}`),
      await member("death-s2", nodeB().url, V4, `$share/${group}`),
    ];
    const publisher = await connect(nodeB().url, V5);
    const back: Member[] = [];
    try {
      await membersSeen(group, 4);
      // "death-back" returns through the balancer once its node is gone; "death-gone" does not.
      const returned = new Promise<void>((resolve, reject) => {
        dead[0]?.client.once("close", () => {
          member("death-back", lb.url, V5, `$share/${group}`).then((m) => {
            back.push(m);
            resolve();
          }, reject);
        });
      });
      let noticed = false;
      const gone = nodeB().process.waitForLog(
        (l) => l.event === "shared.member_gone" && l.clientId === "death-gone",
      );
      void gone.then(() => {
        noticed = true;
      });
      const acked: string[] = [];
      let sent = 0;
      const send = async () => {
        const payload = String(sent++);
        await publisher.publishAsync(`death/${sent % 8}`, payload, { qos: 1 });
        acked.push(payload);
      };
      while (sent < 400) await send();
      const killedAt = Date.now();
      nodeA().process.kill("SIGKILL");
      // Publishing goes on until the survivor has seen the dead node's member gone, and past it
      // (about 2,600 acknowledged QoS 1 messages a second here: the time bound is the one meant).
      while (!noticed && sent < 40_000 && Date.now() - killedAt < 10_000) await send();
      const noticedAfter = Date.now() - killedAt;
      assert.ok(noticed, `the survivor saw death-gone gone (${sent} sent)`);
      const afterNotice = sent + 200;
      while (sent < afterNotice) await send();
      await withDeadline(returned, 10_000, "death-back reconnected through HAProxy");
      const everyone = () => [...dead, ...live, ...back];
      const lost = () => {
        const seen = new Set(everyone().flatMap(payloads));
        return acked.filter((p) => !seen.has(p));
      };
      await pollUntil(
        () => lost().length === 0,
        15_000,
        () => `every acknowledged message at some member (${lost().length} missing)`,
      );
      const recoveredIn = Date.now() - killedAt;
      // Who got each duplicate: another member (moved, so counted as redelivered), or the same
      // client id again ("death-back" before the kill and after its return: its queue, handed to
      // its new connection on joining).
      const holders = new Map<string, string[]>();
      for (const m of everyone()) {
        const who = m === dead[0] ? "death-back(before)" : m.name;
        for (const p of payloads(m)) holders.set(p, [...(holders.get(p) ?? []), who]);
      }
      const pairs = new Map<string, number>();
      let toAnother = 0;
      for (const names of holders.values()) {
        if (names.length < 2) continue;
        pairs.set(names.join("+"), (pairs.get(names.join("+")) ?? 0) + 1);
        const clientIds = new Set(names.map((n) => n.replace("(before)", "")));
        toAnother += clientIds.size - 1;
      }
      const received = everyone().flatMap(payloads);
      const duplicates = received.length - new Set(received).size;
      const redelivered = await metric(nodeB(), "sluice_shared_redelivered_total", { group });
      const dropped = await metric(nodeB(), "sluice_shared_dropped_total", { group });
      process.stdout.write(
        `# SIGKILL: ${acked.length} acknowledged (${acked.length - 400} after the kill), 0 lost, all at a member ` +
          `${recoveredIn} ms after the kill; member gone seen after ${noticedAfter} ms; ${duplicates} duplicates ` +
          `(${[...pairs].map(([k, v]) => `${k}: ${v}`).join(", ") || "none"}), ${redelivered} counted redelivered; ` +
          `the returned member got ${back[0]?.inbox.received.length ?? 0}\n`,
      );
      assert.equal(acked.length, sent, "the survivor acknowledged every publish");
      assert.equal(dropped, 0);
      assert.ok(redelivered > 0, "the dead node's members held messages that moved");
      assert.ok(
        redelivered >= toAnother,
        `${toAnother} duplicates at another member, ${redelivered} redelivered`,
      );
    } finally {
      await end(publisher, ...[...dead, ...live, ...back].map((m) => m.client));
    }
  });
});

/**
 * Waits for `count` messages across the members, then checks that each key's messages went to
 * one member and arrived in the order sent (payload `<...>:<sequence>` per publisher).
 */
async function orderedByKey(
  members: Member[],
  count: number,
  keyOf: (payload: string) => string,
): Promise<void> {
  const clients = members.map((m) => m.client);
  const total = () => members.reduce((sum, m) => sum + m.inbox.received.length, 0);
  await until(clients, () => total() >= count, 10_000, `${count} messages`);
  assert.equal(total(), count);
  const holder = new Map<string, string>();
  for (const m of members) {
    const lastByPublisher = new Map<string, number>();
    for (const payload of payloads(m)) {
      const key = keyOf(payload);
      assert.equal(holder.get(key) ?? m.name, m.name, `key ${key} went to one member`);
      holder.set(key, m.name);
      const parts = payload.split(":");
      const publisher = parts[0] as string;
      const sequence = Number(parts.at(-1));
      assert.ok(
        sequence > (lastByPublisher.get(publisher) ?? -1),
        `in order from publisher ${publisher}`,
      );
      lastByPublisher.set(publisher, sequence);
    }
  }
  const used = new Set(holder.values());
  assert.ok(used.size >= 2, `keys spread over ${used.size} members`);
}

/** mosquitto_sub as a 3.1.1 member: one payload per line. */
function spawnMosquittoSub(
  port: number,
  clientId: string,
  filter: string,
): { lines: string[]; stop(): void } {
  const child: ChildProcess = spawn("mosquitto_sub", [
    ...["-V", "311", "-h", "127.0.0.1", "-p", String(port)],
    ...["-i", clientId, "-q", "1", "-t", filter],
  ]);
  reapOnExit(child);
  const lines: string[] = [];
  let partial = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    partial += chunk;
    const complete = partial.split("\n");
    partial = complete.pop() ?? "";
    lines.push(...complete);
  });
  return {
    lines,
    stop: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill();
    },
  };
}
