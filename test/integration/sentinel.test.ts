import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { startNode } from "../../harness/in-process-node.js";
import { connect, end, Inbox, type MqttClient, subscribe } from "../../harness/mqtt-client.js";
import { RedisSentinels } from "../../harness/redis-sentinel.js";
import { type LogLine, SluiceProcess } from "../../harness/sluice-process.js";

/**
 * The promise for Sentinel: a primary failover is followed automatically. Each
 * scenario has one primary, one replica and three Sentinels on loopback, and two node
 * processes configured with the Sentinels only. The nodes must survive, follow the new primary
 * without a restart and carry messages again.
 */
const BEFORE_KILL = 50;
/** Sentinel takes 1 s to call the primary down, then votes and promotes; ioredis backs off to 2 s. */
const FAILOVER_BOUND_MS = 20_000;
/**
 * After a switchover Sentinel demotes the old primary, and so drops its clients, no sooner
 * than 8 s on: nodes that left it before this bound followed the announcement, not the drop.
 */
const FOLLOW_BOUND_MS = 5_000;
const RECONNECT_MS = 250;

/** A Sentinel-managed Redis and two node processes using it. */
class SentinelCluster {
  readonly nodes: SluiceProcess[] = [];
  readonly endpoints: Array<{ mqtt: string; http: string }> = [];
  readonly clients: MqttClient[] = [];

  private constructor(
    readonly redis: RedisSentinels,
    readonly keyPrefix: string,
    private readonly dir: string,
  ) {}

  static async start(label: string): Promise<SentinelCluster> {
    const redis = await RedisSentinels.start(`sluice-${label}`);
    const dir = await mkdtemp(join(tmpdir(), `sluice-${label}-`));
    const cluster = new SentinelCluster(redis, `${label}${randomBytes(4).toString("hex")}:`, dir);
    try {
      await cluster.open(label);
      return cluster;
    } catch (error) {
      await cluster.stop().catch(() => {});
      throw error;
    }
  }

  private async open(label: string): Promise<void> {
    const { redis } = this;
    const sentinels = redis.endpoints.map((e) => `{ host: ${e.host}, port: ${e.port} }`).join(", ");
    for (const name of [`${label}-1`, `${label}-2`]) {
      const file = join(this.dir, `${name}.yaml`);
      await writeFile(
        file,
        `nodeId: ${name}\nlisteners: [{ type: tcp, host: 127.0.0.1, port: 0 }]\nhttp: { host: 127.0.0.1, port: 0 }\n` +
          `auth: { allowAnonymous: true }\nshutdown: { drainSeconds: 0 }\nlog: { level: debug, format: json }\n` +
          // One replica, none left after a failover: replica confirmations (on by default with
          // Sentinel) would withhold every QoS 1/2 acknowledgement after it.
          `redis: { sentinels: [${sentinels}], name: ${redis.name}, keyPrefix: "${this.keyPrefix}", replicaAcks: { replicas: 0 } }\n`,
      );
      this.nodes.push(SluiceProcess.spawn(["start", "--config", file]));
    }
    for (const node of this.nodes) {
      const { ports, httpPort } = await node.ready();
      this.endpoints.push({
        mqtt: `mqtt://127.0.0.1:${ports.tcp}`,
        http: `http://127.0.0.1:${httpPort}`,
      });
    }
  }

  mqtt(index: number): string {
    return this.endpoint(index).mqtt;
  }

  /** /readyz status and the sluice_redis_up value of a node. */
  async probe(index: number): Promise<{ ready: number; redisUp: string | undefined }> {
    const { http } = this.endpoint(index);
    const ready = (await fetch(`${http}/readyz`)).status;
    const metrics = await fetch(`${http}/metrics`).then((r) => r.text());
    return { ready, redisUp: /^sluice_redis_up\{[^}]*\} (\d)$/m.exec(metrics)?.[1] };
  }

  /** Where each node's log is now, to wait for events logged after it. */
  marks(): LogLine[] {
    return this.nodes.map((n) => n.lines.at(-1) ?? {});
  }

  /** On each node, the first line with this event after its mark (past or future), bounded. */
  eventsAfter(event: string, marks: LogLine[], ms: number): Promise<LogLine[]> {
    return bounded(
      Promise.all(
        this.nodes.map((node, i) =>
          node.waitForLog(
            (l) => l.event === event && node.lines.indexOf(l) > node.lines.indexOf(marks[i] ?? {}),
          ),
        ),
      ),
      ms,
      `${event} on every node`,
    );
  }

  assertRunning(): void {
    for (const [i, node] of this.nodes.entries()) {
      assert.equal(node.child.exitCode, null, `node ${i + 1} still running`);
      assert.equal(node.child.signalCode, null, `node ${i + 1} still running`);
    }
  }

  /** A QoS 1 message published through node 2 reaches `subscriber` on node 1. */
  async assertCarried(publisher: MqttClient, subscriber: MqttClient, payload: string) {
    const arrived = new Promise<void>((resolve) =>
      subscriber.on("message", (_topic, message) => {
        if (message.toString() === payload) resolve();
      }),
    );
    await bounded(publisher.publishAsync("line/after", payload, { qos: 1 }), 15_000, "PUBACK");
    await bounded(arrived, 15_000, `delivery of ${payload}`);
  }

  /** A new client on node 1 reads a retained message. */
  async readRetained(topic: string): Promise<{ payload: string; retain: boolean }> {
    const reader = await connect(this.mqtt(0));
    try {
      const inbox = new Inbox(reader);
      await subscribe(reader, topic, 1);
      const [message] = await bounded(inbox.waitFor(1), 10_000, `retained ${topic}`);
      return { payload: String(message?.payload), retain: message?.packet.retain === true };
    } finally {
      await end(reader);
    }
  }

  async stop(): Promise<void> {
    await end(...this.clients);
    for (const node of this.nodes) node.kill("SIGTERM");
    const exits = await Promise.all(this.nodes.map((n) => n.exited));
    await this.redis.stop();
    await rm(this.dir, { recursive: true, force: true });
    for (const [i, exit] of exits.entries()) assert.equal(exit.code, 0, `node ${i + 1} exit code`);
  }

  private endpoint(index: number): { mqtt: string; http: string } {
    const found = this.endpoints[index];
    if (!found) throw new Error(`node ${index + 1} did not start`);
    return found;
  }
}

/** Rejects after `ms` with a message naming what did not happen. */
function bounded<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Reads until `check` holds or `ms` pass (for states no event reports); returns the last read. */
async function pollUntil<T>(read: () => Promise<T>, check: (value: T) => boolean, ms: number) {
  const deadline = Date.now() + ms;
  let value = await read();
  while (!check(value) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    value = await read();
  }
  return value;
}

/** A persistent QoS 1 subscriber on node 1 and a QoS 1 publisher on node 2, both reconnecting. */
async function subscriberAndPublisher(cluster: SentinelCluster) {
  const subscriber = await connect(cluster.mqtt(0), {
    clientId: "sentinel-sub",
    clean: false,
    reconnectPeriod: RECONNECT_MS,
  });
  cluster.clients.push(subscriber);
  const inbox = new Inbox(subscriber);
  assert.equal(await subscribe(subscriber, "line/#", 1), 1);
  const publisher = await connect(cluster.mqtt(1), {
    clientId: "sentinel-pub",
    reconnectPeriod: RECONNECT_MS,
  });
  cluster.clients.push(publisher);
  await publisher.publishAsync("line/warmup", "warmup", { qos: 1 });
  await bounded(inbox.waitFor(1), 10_000, "warm-up message across nodes");
  return { subscriber, inbox, publisher };
}

let crash: SentinelCluster | undefined;
let switchover: SentinelCluster | undefined;

before(async () => {
  // Both set-ups at once: most of their time is Sentinels discovering each other.
  const [a, b] = await Promise.allSettled([
    SentinelCluster.start("crash"),
    SentinelCluster.start("switch"),
  ]);
  if (a.status === "fulfilled") crash = a.value;
  if (b.status === "fulfilled") switchover = b.value;
  if (a.status === "rejected") throw a.reason;
  if (b.status === "rejected") throw b.reason;
});
after(async () => {
  await Promise.all([crash?.stop(), switchover?.stop()]);
});

function started(cluster: SentinelCluster | undefined): SentinelCluster {
  if (!cluster) throw new Error("the cluster did not start");
  return cluster;
}

describe("Sentinel: the primary dies", () => {
  it("nodes survive, turn not-ready, follow the promoted replica and carry messages again", async (t) => {
    const cluster = started(crash);
    const { redis } = cluster;
    const { subscriber, inbox, publisher } = await subscriberAndPublisher(cluster);
    const drops = { subscriber: 0, publisher: 0 };
    subscriber.on("close", () => drops.subscriber++);
    publisher.on("close", () => drops.publisher++);

    // Acknowledged messages, the last one just before the kill: their delivery may be cut.
    const acked: string[] = [];
    for (let i = 0; i < BEFORE_KILL; i++) {
      await publisher.publishAsync("line/before", `before-${i}`, { qos: 1 });
      acked.push(`before-${i}`);
    }
    const marks = cluster.marks();
    const killedAt = Date.now();
    await redis.killPrimary();
    const switched = redis
      .waitForSwitch(FAILOVER_BOUND_MS)
      .then((port) => ({ port, at: Date.now() }));

    // Both nodes notice, stay up and turn not-ready: the outage lasts at least Sentinel's 1 s.
    const downs = await cluster.eventsAfter("redis.down", marks, FAILOVER_BOUND_MS);
    for (let i = 0; i < cluster.nodes.length; i++) {
      const { ready, redisUp } = await cluster.probe(i);
      assert.equal(ready, 503, `node ${i + 1} not ready while the primary is gone`);
      assert.equal(redisUp, "0", `node ${i + 1} sluice_redis_up 0`);
    }

    // Sentinel promotes the replica; the nodes hear of it and reconnect to it on their own.
    const { port: promoted, at: switchedAt } = await switched;
    assert.equal(promoted, redis.replicaPort, "the replica is the new primary");
    const announced = await cluster.eventsAfter("redis.switch_master", marks, FAILOVER_BOUND_MS);
    for (const line of announced) assert.equal(line.to, `127.0.0.1:${redis.replicaPort}`);
    const ups = await cluster.eventsAfter("redis.up", downs, FAILOVER_BOUND_MS);
    cluster.assertRunning();
    for (let i = 0; i < cluster.nodes.length; i++) {
      const { ready, redisUp } = await cluster.probe(i);
      assert.equal(ready, 200, `node ${i + 1} ready again without a restart`);
      assert.equal(redisUp, "1", `node ${i + 1} sluice_redis_up 1`);
    }
    const everyPromoted = [redis.replicaPort, redis.replicaPort, redis.replicaPort];
    assert.deepEqual(await redis.waitForEverySwitch(FAILOVER_BOUND_MS), everyPromoted);
    assert.deepEqual(await redis.reportedPrimaryPorts(), everyPromoted);

    // Publish through node 2, receive on node 1, over the new primary: live, or from the
    // persistent session if node 1 dropped the subscriber (it does when it cannot write a
    // delivery's state to Redis).
    await cluster.assertCarried(publisher, subscriber, "after-failover");
    const workingAt = Date.now();

    // A retained message set through node 2 after the failover is read through node 1.
    await publisher.publishAsync("line/state", "running", { qos: 1, retain: true });
    assert.deepEqual(await cluster.readRetained("line/state"), {
      payload: "running",
      retain: true,
    });

    // Acknowledged before the kill and never delivered: Redis replicates asynchronously, so a
    // failover may lose writes; report the figure rather than assert it is always 0.
    const deliveries = new Map<string, number>();
    for (const m of inbox.received) {
      const payload = m.payload.toString();
      deliveries.set(payload, (deliveries.get(payload) ?? 0) + 1);
    }
    const lost = acked.filter((payload) => !deliveries.has(payload));
    const duplicates = acked.filter((payload) => (deliveries.get(payload) ?? 0) > 1).length;
    const at = (line: LogLine) => Number(line.time) - killedAt;
    t.diagnostic(
      `primary killed -> replica promoted ${switchedAt - killedAt} ms; redis.down ${downs.map(at).join("/")} ms; ` +
        `redis.up ${ups.map(at).join("/")} ms; publish/receive working ${workingAt - killedAt} ms; ` +
        `acknowledged before the kill and lost: ${lost.length} of ${acked.length}` +
        (lost.length > 0 ? ` (${lost.join(", ")})` : "") +
        `, delivered twice: ${duplicates}; ` +
        `connections dropped: subscriber ${drops.subscriber}, publisher ${drops.publisher}`,
    );
  });
});

describe("Sentinel: a switchover, the old primary staying up", () => {
  it("closing a node closes its connections to the Sentinels", async () => {
    const { redis, keyPrefix } = started(switchover);
    const baseline = await redis.sentinelSubscribers();
    const node = await startNode({
      nodeId: "in-process",
      redis: { sentinels: redis.endpoints, name: redis.name, keyPrefix: `${keyPrefix}in:` },
    });
    const plusOne = baseline.map((n) => n + 1);
    const listening = await pollUntil(
      () => redis.sentinelSubscribers(),
      (counts) => counts.every((n, i) => n === plusOne[i]),
      FOLLOW_BOUND_MS,
    );
    await node.stop();
    assert.deepEqual(listening, plusOne, "the node listens to every Sentinel");
    const closed = await pollUntil(
      () => redis.sentinelSubscribers(),
      (counts) => counts.every((n, i) => n === baseline[i]),
      FOLLOW_BOUND_MS,
    );
    assert.deepEqual(closed, baseline);
  });

  it("nodes move to the promoted replica at once, and what they write there is kept", async (t) => {
    const cluster = started(switchover);
    const { redis } = cluster;
    const { subscriber, publisher } = await subscriberAndPublisher(cluster);
    assert.equal((await redis.clientsOn("primary")).length, 6, "3 connections per node");

    const marks = cluster.marks();
    const startedAt = Date.now();
    assert.equal(await redis.switchover(), "+OK");
    assert.equal(await redis.waitForSwitch(FAILOVER_BOUND_MS), redis.replicaPort);
    const switchedAt = Date.now();

    // Every connection leaves the old primary on the announcement, long before Sentinel would
    // drop them: until then the old primary takes writes that its demotion throws away.
    const downs = await cluster.eventsAfter("redis.down", marks, FOLLOW_BOUND_MS);
    await cluster.eventsAfter("redis.up", downs, FOLLOW_BOUND_MS);
    const left = await pollUntil(
      () => redis.clientsOn("primary"),
      (clients) => clients.length === 0,
      Math.max(0, switchedAt + FOLLOW_BOUND_MS - Date.now()),
    );
    assert.deepEqual(left, [], "no node connection left on the old primary");
    const followedAt = Date.now();
    const moved = await pollUntil(
      () => redis.clientsOn("replica"),
      (clients) => clients.length === 6,
      FOLLOW_BOUND_MS,
    );
    assert.equal(moved.length, 6, "all on the new primary");
    cluster.assertRunning();
    for (let i = 0; i < cluster.nodes.length; i++) {
      assert.equal((await cluster.probe(i)).ready, 200, `node ${i + 1} ready`);
    }

    await cluster.assertCarried(publisher, subscriber, "after-switchover");
    await publisher.publishAsync("line/state", "switched", { qos: 1, retain: true });
    // Once Sentinel has made the old primary a replica (resynced from the new one), what the
    // nodes wrote after the switch is still there.
    await redis.waitForDemotion(FAILOVER_BOUND_MS);
    assert.deepEqual(await cluster.readRetained("line/state"), {
      payload: "switched",
      retain: true,
    });
    await cluster.assertCarried(publisher, subscriber, "after-demotion");
    t.diagnostic(
      `SENTINEL FAILOVER -> switch ${switchedAt - startedAt} ms; ` +
        `nodes off the old primary ${followedAt - switchedAt} ms after the switch (at most)`,
    );
  });
});
