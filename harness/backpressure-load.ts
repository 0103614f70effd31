import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { checkCpuController, NodeCpuBudget } from "./cpu-cgroup.js";
import { withDeadline } from "./deadline.js";
import { connect, end, type MqttClient } from "./mqtt-client.js";
import { metricSum } from "./node-metrics.js";
import { reapOnExit } from "./reaper.js";
import { SluiceProcess } from "./sluice-process.js";

/**
 * The backpressure-across-nodes tests' nodes and load: real node processes, fast subscribers
 * that record what arrives, publishers with no end-to-end window, and the checks of what
 * arrived.
 */

export interface LoadNode {
  process: SluiceProcess;
  url: string;
  http: string;
}

/**
 * Starts a node process whose config's `redis` holds `redis` (YAML flow mappings' entries: the
 * Redis to use, key prefix, backpressure), with small in-flight windows and queues. The
 * process is added to `started`, for the test to end it.
 */
export async function startLoadNode(
  dir: string,
  nodeId: string,
  redis: string,
  started: SluiceProcess[],
): Promise<LoadNode> {
  const file = join(dir, `${nodeId}-${randomBytes(3).toString("hex")}.yaml`);
  await writeFile(
    file,
    `nodeId: ${nodeId}\n` +
      "listeners: [{ type: tcp, host: 127.0.0.1, port: 0 }]\nhttp: { host: 127.0.0.1, port: 0 }\n" +
      "auth: { allowAnonymous: true }\nshutdown: { drainSeconds: 0 }\nlog: { level: info, format: json }\n" +
      "limits: { queue: { maxInflight: 20, maxQueuedPerClient: 1000 } }\n" +
      `redis: { ${redis} }\n`,
  );
  const process = SluiceProcess.spawn(["start", "--config", file], { SLUICE_LOG_LEVEL: "info" });
  started.push(process);
  const ready = await process.ready();
  return {
    process,
    url: `mqtt://127.0.0.1:${ready.ports.tcp}`,
    http: `http://127.0.0.1:${ready.httpPort}`,
  };
}

/**
 * Node b, held to a tenth of a core (a real cgroup), gets two fast QoS 1 subscribers; two
 * publishers on node a send 5,000 QoS 1 messages each with no window. Every message must reach
 * both subscribers, in order, none dropped: b stopped reading its subscription, a held its
 * publishers naming node-b, and Redis cut nothing.
 */
export async function saturatedBurst(a: LoadNode, b: LoadNode, topic: string): Promise<void> {
  // B gets a tenth of a core: it reads from Redis far slower than A takes PUBLISHes.
  const quota = new NodeCpuBudget(0.1);
  const clients: MqttClient[] = [];
  const children: ChildProcess[] = [];
  try {
    quota.place(b.process.child.pid as number, "node-b");
    const subs = await mosquittoSubscribers(b.url, 2, `${topic}/#`);
    children.push(...subs.processes);
    const publishers = ["p0", "p1"];
    const count = 5_000;
    const sending = await Promise.all(
      publishers.map((name) => connect(a.url, { clientId: `xbp-${name}` })),
    );
    clients.push(...sending);
    await withDeadline(
      Promise.all(sending.map((c, i) => publishAll(c, `p${i}`, `${topic}/${i}`, count, 200))),
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
    const metric = (node: LoadNode, name: string) => metricSum(node.http, name);
    assert.equal(await metric(b, "sluice_dropped_messages_total"), 0, "B dropped nothing");
    assert.ok(
      (await metric(b, "sluice_cluster_subscription_paused_total")) > 0,
      "B stopped reading Redis while its subscribers' windows were full",
    );
    assert.ok(
      (await metric(b, "sluice_cluster_paused_sleep_seconds_total")) > 0,
      "B, paused, slept between passes to read its subscribers' PUBACKs in batches",
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
}

/** Why a CPU quota cannot be set here (the test is skipped, saying so), or undefined. */
export function cpuQuotaUnavailable(): string | undefined {
  try {
    checkCpuController();
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}

/**
 * mosquitto_sub processes (fast C clients, so that the node, not the subscribers, is the
 * limit) that record each publisher's sequence numbers in the order they arrive, from payloads
 * `<publisher>:<sequence>:x...`.
 */
export async function mosquittoSubscribers(url: string, count: number, filter: string) {
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
export function publishAll(
  client: MqttClient,
  name: string,
  topic: string,
  count: number,
  size: number,
) {
  const padding = "x".repeat(size);
  const acked = new Array<Promise<unknown>>(count);
  for (let i = 0; i < count; i++) {
    acked[i] = client.publishAsync(topic, `${name}:${i}:${padding}`, { qos: 1 });
  }
  return Promise.all(acked);
}

/** Waits until `done()` holds; past `ms`, fails saying where things stood. */
export async function waitUntil(done: () => boolean, ms: number, state: () => Promise<string>) {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) assert.fail(`not within ${ms} ms: ${await state()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export function assertAllInOrder(
  got: Map<string, number[]>,
  publishers: string[],
  count: number,
): void {
  const expected = Array.from({ length: count }, (_, i) => i);
  for (const name of publishers) {
    assert.deepEqual(got.get(name), expected, `every message of ${name}, once, in order`);
  }
}
