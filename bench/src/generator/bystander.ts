import mqtt, { type MqttClient } from "mqtt";
import { withTimeout } from "../lifecycle/cleanup-registry.js";

/** Latency percentiles of one measurement window (ms), over `samples` messages. */
export interface BystanderLatency {
  samples: number;
  p50Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
  /** Sent in the window and still not delivered when it closed (counted at their age then). */
  late: number;
}

function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? null;
}

/**
 * A QoS 1 publisher and its subscriber that have nothing to do with a storm, on the broker
 * the storm hits: the publisher sends a numbered message every `intervalMs`, the subscriber
 * records when each arrives, and `window()` gives the send-to-delivery latency of the messages
 * sent since `mark()` (one process measures both ends: the same clock).
 */
export class Bystander {
  private readonly sentAt = new Map<number, number>();
  private readonly latencies = new Map<number, number>();
  private next = 0;
  private markedAt = 0;
  private timer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly publisher: MqttClient,
    private readonly subscriber: MqttClient,
    private readonly topic: string,
  ) {}

  static async start(url: string, runId: string, intervalMs: number): Promise<Bystander> {
    const options = { clean: true, reconnectPeriod: 0, connectTimeout: 10_000 } as const;
    const subscriber = mqtt.connect(url, { ...options, clientId: `${runId}-bystander-sub` });
    const publisher = mqtt.connect(url, { ...options, clientId: `${runId}-bystander-pub` });
    const topic = `bystander/${runId}`;
    const bystander = new Bystander(publisher, subscriber, topic);
    try {
      await withTimeout(
        Promise.all([connected(subscriber), connected(publisher)]),
        15_000,
        "bystander connecting",
      );
      await subscriber.subscribeAsync(topic, { qos: 1 });
    } catch (error) {
      await bystander.stop();
      throw error;
    }
    subscriber.on("message", (_topic, payload) => bystander.delivered(payload));
    bystander.timer = setInterval(() => bystander.send(), intervalMs);
    return bystander;
  }

  /** Starts a measurement window: latencies count for messages sent from now on. */
  mark(): void {
    this.markedAt = this.next;
  }

  /** The latencies of the messages sent since mark(). */
  window(): BystanderLatency {
    const now = performance.now();
    const values: number[] = [];
    let late = 0;
    for (let n = this.markedAt; n < this.next; n++) {
      const latency = this.latencies.get(n);
      if (latency !== undefined) values.push(latency);
      else {
        late++;
        values.push(now - (this.sentAt.get(n) ?? now));
      }
    }
    values.sort((a, b) => a - b);
    return {
      samples: values.length,
      p50Ms: percentile(values, 50),
      p99Ms: percentile(values, 99),
      maxMs: values[values.length - 1] ?? null,
      late,
    };
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await Promise.allSettled([this.publisher.endAsync(true), this.subscriber.endAsync(true)]);
  }

  private send(): void {
    const n = this.next++;
    this.sentAt.set(n, performance.now());
    const payload = Buffer.alloc(4);
    payload.writeUInt32BE(n);
    this.publisher.publish(this.topic, payload, { qos: 1 });
  }

  private delivered(payload: Buffer): void {
    if (payload.length !== 4) return;
    const n = payload.readUInt32BE(0);
    const sent = this.sentAt.get(n);
    if (sent !== undefined && !this.latencies.has(n))
      this.latencies.set(n, performance.now() - sent);
  }
}

function connected(client: MqttClient): Promise<void> {
  return new Promise((resolve, reject) => {
    client.once("connect", () => resolve());
    client.once("error", reject);
  });
}
