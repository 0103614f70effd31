import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { checkCpuController, NodeCpuBudget } from "../../harness/cpu-cgroup.js";
import { withDeadline } from "../../harness/deadline.js";
import { connect, end, type MqttClient } from "../../harness/mqtt-client.js";
import { metricSum } from "../../harness/node-metrics.js";
import { reapOnExit } from "../../harness/reaper.js";
import { RedisServer } from "../../harness/redis-server.js";
import { SluiceProcess } from "../../harness/sluice-process.js";

/**
 * Backpressure across nodes (issue 14): publishers on node A, subscribers on node B, real
 * processes on one real Redis. A message published on A is read by B from Redis; when B cannot
 * keep up, A's publishers must slow to B's pace instead of A acknowledging what B then drops
 * from full queues (or what Redis cuts off with B's subscription).
 */
const LAG_BOUND = 256 * 1024;
const STALL_MS = 2_000;

let dir: string;
let redis: RedisServer;
const nodes: SluiceProcess[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-xbp-"));
  // No output-buffer limit: the stopped node's subscription must outlast the test's 24 MB.
  redis = await RedisServer.start({
    args: ["--client-output-buffer-limit", "pubsub", "0", "0", "0"],
  });
});
after(async () => {
  for (const node of nodes) {
    node.kill("SIGCONT");
    node.kill("SIGKILL");
    await node.exited;
  }
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

interface Node {
  process: SluiceProcess;
  url: string;
  http: string;
}

async function startNode(nodeId: string, keyPrefix: string): Promise<Node> {
  const file = join(dir, `${nodeId}-${keyPrefix.slice(0, -1)}.yaml`);
  await writeFile(
    file,
    `nodeId: ${nodeId}\n` +
      "listeners: [{ type: tcp, host: 127.0.0.1, port: 0 }]\nhttp: { host: 127.0.0.1, port: 0 }\n" +
      "auth: { allowAnonymous: true }\nshutdown: { drainSeconds: 0 }\nlog: { level: info, format: json }\n" +
      "limits: { queue: { maxInflight: 20, maxQueuedPerClient: 1000 } }\n" +
      `redis: { url: "${redis.url}", keyPrefix: "${keyPrefix}", backpressure: { subscriptionLagBytes: ${LAG_BOUND}, waitingDeliveries: 200, remoteStallMs: ${STALL_MS} } }\n`,
  );
  const process = SluiceProcess.spawn(["start", "--config", file], { SLUICE_LOG_LEVEL: "info" });
  nodes.push(process);
  const ready = await process.ready();
  return {
    process,
    url: `mqtt://127.0.0.1:${ready.ports.tcp}`,
    http: `http://127.0.0.1:${ready.httpPort}`,
  };
}

/** Why a CPU quota cannot be set here (the test is skipped, saying so), or undefined. */
function cpuQuotaUnavailable(): string | undefined {
  try {
    checkCpuController();
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}

/** Subscribers that record each publisher's sequence numbers in the order they arrive. */
async function subscribers(url: string, count: number, filter: string) {
  const clients: MqttClient[] = [];
  const got: Array<Map<string, number[]>> = [];
  for (let i = 0; i < count; i++) {
    const client = await connect(url, {
      clientId: `xbp-sub-${i}-${randomBytes(2).toString("hex")}`,
    });
    const seen = new Map<string, number[]>();
    client.on("message", (_topic, payload) => {
      const [publisher = "", sequence] = payload.toString().split(":");
      const list = seen.get(publisher) ?? [];
      seen.set(publisher, list);
      list.push(Number(sequence));
    });
    await client.subscribeAsync(filter, { qos: 1 });
    clients.push(client);
    got.push(seen);
  }
  return { clients, got };
}

/**
 * mosquitto_sub processes (fast C clients, so that the node, not the subscribers, is the
 * limit) that record each publisher's sequence numbers in the order they arrive.
 */
async function mosquittoSubscribers(url: string, count: number, filter: string) {
  const { hostname, port } = new URL(url);
  const processes: ChildProcess[] = [];
  const got: Array<Map<string, number[]>> = [];
  for (let i = 0; i < count; i++) {
    // Line-buffered: a pipe would hold its output in 4 KiB blocks.
    const child = spawn("stdbuf", [
      ...["-oL", "mosquitto_sub"],
      ...["-h", hostname, "-p", port, "-q", "1", "-t", filter, "-F", "%p"],
      ...["-i", `xbp-msub-${i}-${randomBytes(2).toString("hex")}`, "-d"],
    ]);
    reapOnExit(child);
    processes.push(child);
    const seen = new Map<string, number[]>();
    got.push(seen);
    let partial = "";
    let subscribed: () => void = () => {};
    const ready = new Promise<void>((resolve) => {
      subscribed = resolve;
    });
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      const lines = (partial + chunk).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) {
        // -d prints the client's own protocol log on stdout too
        if (line.includes("SUBACK")) subscribed();
        const message = /^(p\d+):(\d+):x/.exec(line);
        if (message === null) continue;
        const [, publisher = "", sequence] = message;
        const list = seen.get(publisher) ?? [];
        seen.set(publisher, list);
        list.push(Number(sequence));
      }
    });
    await withDeadline(ready, 10_000, "mosquitto_sub subscribed");
  }
  return { processes, got };
}

/** Publishes `count` QoS 1 messages without waiting for each PUBACK (no end-to-end window). */
function publishAll(client: MqttClient, name: string, topic: string, count: number, size: number) {
  const padding = "x".repeat(size);
  const acked = new Array<Promise<unknown>>(count);
  for (let i = 0; i < count; i++) {
    acked[i] = client.publishAsync(topic, `${name}:${i}:${padding}`, { qos: 1 });
  }
  return Promise.all(acked);
}

/** Waits until `done()` holds; past `ms`, fails saying where things stood. */
async function waitUntil(done: () => boolean, ms: number, state: () => Promise<string>) {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) assert.fail(`not within ${ms} ms: ${await state()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function assertAllInOrder(got: Map<string, number[]>, publishers: string[], count: number): void {
  const expected = Array.from({ length: count }, (_, i) => i);
  for (const name of publishers) {
    assert.deepEqual(got.get(name), expected, `every message of ${name}, once, in order`);
  }
}

describe("cluster backpressure across nodes", () => {
  it(
    "a saturated subscribers' node slows the other node's publishers: nothing acknowledged is dropped",
    { skip: cpuQuotaUnavailable() },
    async () => {
      const prefix = `x${randomBytes(3).toString("hex")}:`;
      const a = await startNode("node-a", prefix);
      const b = await startNode("node-b", prefix);
      // B gets a tenth of a core: it reads from Redis far slower than A takes PUBLISHes.
      const quota = new NodeCpuBudget(0.1);
      const clients: MqttClient[] = [];
      const children: ChildProcess[] = [];
      try {
        quota.place(b.process.child.pid as number, "node-b");
        const subs = await mosquittoSubscribers(b.url, 2, "xbp/sat/#");
        children.push(...subs.processes);
        const publishers = ["p0", "p1"];
        const count = 5_000;
        const sending = await Promise.all(
          publishers.map((name) => connect(a.url, { clientId: `xbp-${name}` })),
        );
        clients.push(...sending);
        await withDeadline(
          Promise.all(sending.map((c, i) => publishAll(c, `p${i}`, `xbp/sat/${i}`, count, 200))),
          90_000,
          "every PUBACK",
        );
        await waitUntil(
          () => subs.got.every((seen) => publishers.every((p) => seen.get(p)?.length === count)),
          90_000,
          async () =>
            `received ${subs.got.map((seen) => publishers.map((p) => seen.get(p)?.length ?? 0))}; ` +
            `B dropped ${await metricSum(b.http, "sluice_dropped_messages_total")}, ` +
            `paused ${await metricSum(b.http, "sluice_cluster_subscription_paused_total")}; ` +
            `A held ${await metricSum(a.http, "sluice_cluster_backpressure_total")}`,
        );
        for (const seen of subs.got) assertAllInOrder(seen, publishers, count);
        const metric = (node: Node, name: string) => metricSum(node.http, name);
        assert.equal(await metric(b, "sluice_dropped_messages_total"), 0, "B dropped nothing");
        assert.ok(
          (await metric(b, "sluice_cluster_subscription_paused_total")) > 0,
          "B stopped reading Redis while its subscribers' windows were full",
        );
        assert.ok(
          (await metric(a, "sluice_cluster_backpressure_total")) > 0,
          "A paused its publishers for B's lag",
        );
        assert.equal(await metric(b, "sluice_redis_subscription_resets_total"), 0, "no cut");
        const held = a.process.lines.find((l) => l.event === "cluster.backpressure");
        assert.equal(held?.pausedNode ?? held?.laggingNode, "node-b", "A said who held it");
      } finally {
        quota.releaseAll();
        for (const child of children) child.kill("SIGKILL");
        await end(...clients);
      }
    },
  );

  it("a stopped node holds the publishers for remoteStallMs, then no longer; resumed, it gets everything", async () => {
    const prefix = `y${randomBytes(3).toString("hex")}:`;
    const a = await startNode("node-a", prefix);
    const b = await startNode("node-b", prefix);
    const clients: MqttClient[] = [];
    try {
      const subs = await subscribers(b.url, 1, "xbp/stop/#");
      clients.push(...subs.clients);
      const publisher = await connect(a.url, { clientId: "xbp-stop-pub" });
      clients.push(publisher);
      const count = 6_000;
      b.process.kill("SIGSTOP");
      const startedAt = Date.now();
      // 6,000 x 4 KB: 24 MB, more than the kernel's socket buffers between Redis and B take
      // (up to 4 + 6 MB here), so Redis' output buffer for B grows.
      await withDeadline(
        publishAll(publisher, "p", "xbp/stop/t", count, 4_000),
        30_000,
        "every PUBACK once B no longer counts",
      );
      const tookMs = Date.now() - startedAt;
      const held = a.process.lines.find((l) => l.event === "cluster.backpressure");
      const stalled = a.process.lines.find((l) => l.event === "cluster.remote_lag_stalled");
      assert.equal(held?.laggingNode, "node-b", "A held its publishers for B");
      assert.equal(stalled?.node, "node-b", "then took B for stalled");
      assert.ok(tookMs >= STALL_MS, `the publisher was held ${tookMs} ms, at least ${STALL_MS}`);
      b.process.kill("SIGCONT");
      await withDeadline(
        (async () => {
          while (subs.got[0]?.get("p")?.length !== count)
            await new Promise((resolve) => setTimeout(resolve, 50));
        })(),
        30_000,
        "every message once B runs again",
      );
      assertAllInOrder(subs.got[0] as Map<string, number[]>, ["p"], count);
      await a.process.waitForEvent("cluster.remote_lag_draining");
      assert.equal(await metricSum(b.http, "sluice_redis_subscription_resets_total"), 0);
    } finally {
      b.process.kill("SIGCONT");
      await end(...clients);
    }
  });
});
