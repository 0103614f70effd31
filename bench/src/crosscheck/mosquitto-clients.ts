import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import type { RunningBroker } from "../brokers/broker.js";
import type { CleanupRegistry } from "../lifecycle/cleanup-registry.js";
import type { CrossCheck } from "../scenarios/scenario.js";
import { ProcessCpuMeter, type WatchedProcess } from "../system/process-cpu.js";

export interface ClientsLoad {
  publishers: number;
  subscribers: number;
  qos: 0 | 1 | 2;
  payloadBytes: number;
  inflightWindow: number;
  warmupMs: number;
  measureMs: number;
}

/**
 * MQTT's own clients would miss nothing at start: mosquitto_sub prints nothing when its
 * SUBACK arrives, so the publishers start after this pause, and warm-up covers the rest.
 */
const SUBSCRIBE_PAUSE_MS = 750;

/**
 * The independent cross-check: Eclipse Mosquitto's command-line clients (C, libmosquitto) run
 * the same case as our generator, pairwise topics: each publisher is `yes <payload>` piped into
 * `mosquitto_pub -l` (one message per line, as fast as the broker takes them, at most
 * `-M window` unacknowledged at QoS 1), each subscriber a `mosquitto_sub` whose printed bytes
 * we count. Deliveries/s over the same kind of window are comparable to our messages/s; this
 * tool cannot tell latency, losses or duplicates (every payload is the same).
 */
export async function mosquittoClientsThroughput(
  broker: RunningBroker,
  load: ClientsLoad,
  cleanup: CleanupRegistry,
): Promise<CrossCheck> {
  const runId = randomBytes(4).toString("hex");
  const topic = (publisher: number): string => `bench/xc/${runId}/${publisher}`;
  const children: ChildProcess[] = [];
  const stops: Array<() => Promise<void>> = [];
  let delivered = 0;
  let failure: string | undefined;
  let errors = "";
  const start = (
    command: string,
    args: string[],
    stdin: "ignore" | "pipe" = "ignore",
  ): ChildProcess => {
    const child = spawn(command, args, { stdio: [stdin, "pipe", "pipe"] });
    child.stderr?.setEncoding("utf8").on("data", (text: string) => {
      errors = `${errors}${command}: ${text}`.slice(-500);
    });
    children.push(child);
    stops.push(cleanup.addChild(command, child, 500));
    return child;
  };
  try {
    for (let i = 0; i < load.subscribers; i++) {
      const { host, port } = address(broker.subscriberUrls, i);
      const subscriber = start("mosquitto_sub", [
        "-h",
        host,
        "-p",
        port,
        "-q",
        String(load.qos),
        "-i",
        `xc-${runId}-s${i}`,
        "-t",
        topic(i % load.publishers),
      ]);
      // Each message is printed as its payload plus a newline.
      subscriber.stdout?.on("data", (chunk: Buffer) => {
        delivered += chunk.length;
      });
      subscriber.on("exit", (code) => {
        failure ??= `mosquitto_sub exited (${code})`;
      });
    }
    await sleep(SUBSCRIBE_PAUSE_MS);
    const line = "x".repeat(load.payloadBytes);
    for (let i = 0; i < load.publishers; i++) {
      const { host, port } = address(broker.publisherUrls, i);
      const source = start("yes", [line]);
      const publisher = start(
        "mosquitto_pub",
        [
          "-h",
          host,
          "-p",
          port,
          "-q",
          String(load.qos),
          "-i",
          `xc-${runId}-p${i}`,
          "-M",
          String(load.inflightWindow),
          "-t",
          topic(i),
          "-l",
        ],
        "pipe",
      );
      // Through us rather than an inherited pipe: backpressure from mosquitto_pub pauses `yes`.
      publisher.stdin?.on("error", () => {});
      if (publisher.stdin) source.stdout?.pipe(publisher.stdin);
      publisher.on("exit", (code) => {
        failure ??= `mosquitto_pub exited (${code})`;
      });
    }
    const tools: WatchedProcess[] = children.flatMap((c) =>
      c.pid ? [{ role: "tool", pid: c.pid }] : [],
    );
    const meter = new ProcessCpuMeter(tools);
    await sleep(load.warmupMs);
    const before = delivered;
    meter.begin();
    await sleep(load.measureMs);
    const after = delivered;
    const cpu = meter.end();
    const bytesPerMessage = load.payloadBytes + 1;
    return {
      tool: "mosquitto_pub/mosquitto_sub",
      measures: "end-to-end deliveries/s (same case, Mosquitto's C clients)",
      messagesPerSecond: (after - before) / bytesPerMessage / (load.measureMs / 1000),
      toolCpuPercent: cpu.tool ?? 0,
      ...(failure ? { error: `${failure}: ${errors.trim()}` } : {}),
    };
  } finally {
    await Promise.allSettled(stops.map((stop) => stop()));
  }
}

function address(urls: readonly string[], index: number): { host: string; port: string } {
  const url = new URL(urls[index % urls.length] ?? "");
  return { host: url.hostname, port: url.port };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
