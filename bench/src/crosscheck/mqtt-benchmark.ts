import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { RunningBroker } from "../brokers/broker.js";
import type { CrossCheck } from "../scenarios/scenario.js";

const run = promisify(execFile);

/** Where bench/tools/install-mqtt-benchmark.sh puts the binary; MQTT_BENCHMARK overrides. */
export const MQTT_BENCHMARK_PATH =
  process.env.MQTT_BENCHMARK ??
  fileURLToPath(new URL("../../../../bench/.tools/bin/mqtt-benchmark", import.meta.url));

const TIMEOUT_MS = 60_000;

export function mqttBenchmarkInstalled(): boolean {
  return existsSync(MQTT_BENCHMARK_PATH);
}

/** The totals of `mqtt-benchmark -format json` that we report. */
export interface MqttBenchmarkTotals {
  /** Sum over clients of each client's successes / its run time. */
  totalMessagesPerSecond: number;
  successes: number;
  failures: number;
  /** Mean time from publish to completion (QoS 0: written; QoS 1: PUBACK), ms. */
  meanPublishMs: number;
}

/** Parses mqtt-benchmark's JSON output (`{"runs": [...], "totals": {...}}`). */
export function parseMqttBenchmarkJson(output: string): MqttBenchmarkTotals {
  const start = output.indexOf("{");
  if (start < 0) throw new Error("mqtt-benchmark printed no JSON");
  const parsed = JSON.parse(output.slice(start)) as {
    totals?: {
      total_msgs_per_sec?: number;
      successes?: number;
      failures?: number;
      msg_time_mean_avg?: number;
    };
  };
  const totals = parsed.totals;
  if (!totals || typeof totals.total_msgs_per_sec !== "number")
    throw new Error("mqtt-benchmark JSON has no totals.total_msgs_per_sec");
  return {
    totalMessagesPerSecond: totals.total_msgs_per_sec,
    successes: totals.successes ?? 0,
    failures: totals.failures ?? 0,
    meanPublishMs: totals.msg_time_mean_avg ?? 0,
  };
}

/**
 * github.com/krylovsk/mqtt-benchmark against the broker's publisher side, when installed.
 * It measures something else than our generator: each client publishes `count` messages one
 * at a time (it waits for each publish token: the PUBACK at QoS 1), with no subscribers, and
 * adds up per-client publish rates. So it is latency-bound (one message in flight per client)
 * where ours keeps a window of 100 out; expect it lower at QoS 1, and read it as a check of
 * the broker's publish path, not of delivery.
 */
export async function mqttBenchmarkThroughput(
  broker: RunningBroker,
  load: { publishers: number; qos: 0 | 1 | 2; payloadBytes: number; countPerClient: number },
): Promise<CrossCheck | undefined> {
  if (!mqttBenchmarkInstalled()) return undefined;
  const url = new URL(broker.publisherUrls[0] ?? "");
  const args = [
    "-broker",
    `tcp://${url.hostname}:${url.port}`,
    "-topic",
    `bench/mb/${randomBytes(4).toString("hex")}`,
    "-clients",
    String(load.publishers),
    "-count",
    String(load.countPerClient),
    "-qos",
    String(load.qos),
    "-size",
    String(load.payloadBytes),
    "-format",
    "json",
    "-quiet",
  ];
  // Newer versions pause 1 s between messages unless told otherwise.
  if (await supportsFlag("message-interval")) args.push("-message-interval", "0");
  const base = {
    tool: "mqtt-benchmark",
    measures: "publishes/s summed over clients, one in flight each, no subscribers",
  };
  try {
    const { stdout } = await run(MQTT_BENCHMARK_PATH, args, {
      timeout: TIMEOUT_MS,
      maxBuffer: 16 << 20,
    });
    const totals = parseMqttBenchmarkJson(stdout);
    return {
      ...base,
      messagesPerSecond: totals.totalMessagesPerSecond,
      ...(totals.failures > 0 ? { error: `${totals.failures} publishes failed` } : {}),
    };
  } catch (error) {
    return {
      ...base,
      messagesPerSecond: 0,
      error: error instanceof Error ? error.message : String(error),
    };
  }
}

async function supportsFlag(flag: string): Promise<boolean> {
  try {
    const { stdout, stderr } = await run(MQTT_BENCHMARK_PATH, ["-h"], { timeout: 5_000 });
    return `${stdout}${stderr}`.includes(`-${flag}`);
  } catch (error) {
    // Go's flag package prints the usage to stderr and exits 2 for -h.
    const { stdout = "", stderr = "" } = error as { stdout?: string; stderr?: string };
    return `${stdout}${stderr}`.includes(`-${flag}`);
  }
}
