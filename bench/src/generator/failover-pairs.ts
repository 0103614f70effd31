import mqtt, { type MqttClient } from "mqtt";
import { withTimeout } from "../lifecycle/cleanup-registry.js";

/**
 * QoS 1 publisher/subscriber pairs with persistent sessions (clean: false) for the failover
 * scenario: each publisher sends sequence-numbered messages on its own topic at a fixed rate,
 * its subscriber records what arrives, so that after a node's death we can tell, per pair,
 * when delivery resumed, which acknowledged messages never arrived and which came twice.
 */
export interface PairOptions {
  url: string;
  pairs: number;
  /** Messages per second per publisher. */
  ratePerPublisher: number;
  /** mqtt.js reconnect period (ms): how soon a dropped client tries the load balancer again. */
  reconnectPeriodMs: number;
  runId: string;
}

interface Pair {
  publisher: MqttClient;
  subscriber: MqttClient;
  topic: string;
  next: number;
  /** Sequence numbers the broker acknowledged (PUBACK). */
  acknowledged: Set<number>;
  /** Times each sequence number arrived. */
  received: Map<number, number>;
  /** Arrival time of the first message published after the kill. */
  resumedAt: number | undefined;
  /** Whether either client lost its connection after the kill. */
  dropped: boolean;
}

export interface PairReport {
  acknowledged: number;
  lost: number;
  duplicates: number;
  /** ms from the kill to the first delivery of a message sent after it; undefined: never. */
  resumeMs: number | undefined;
  dropped: boolean;
}

function connected(client: MqttClient): Promise<void> {
  return new Promise((resolve, reject) => {
    client.once("connect", () => resolve());
    client.once("error", reject);
  });
}

export class FailoverPairs {
  private readonly pairs: Pair[] = [];
  private timer: NodeJS.Timeout | undefined;
  private killedAt = 0;

  private constructor(private readonly options: PairOptions) {}

  static async connect(options: PairOptions): Promise<FailoverPairs> {
    const set = new FailoverPairs(options);
    try {
      for (let i = 0; i < options.pairs; i++) await set.addPair(i);
    } catch (error) {
      set.close();
      throw error;
    }
    return set;
  }

  private async addPair(index: number): Promise<void> {
    const { runId, url, reconnectPeriodMs } = this.options;
    const common = {
      reconnectPeriod: reconnectPeriodMs,
      connectTimeout: 5_000,
      protocolVersion: 4 as const,
      clean: false,
      keepalive: 10,
    };
    const pair: Pair = {
      publisher: mqtt.connect(url, { ...common, clientId: `${runId}-pub-${index}` }),
      subscriber: mqtt.connect(url, { ...common, clientId: `${runId}-sub-${index}` }),
      topic: `bench/${runId}/fo/${index}`,
      next: 1,
      acknowledged: new Set(),
      received: new Map(),
      resumedAt: undefined,
      dropped: false,
    };
    this.pairs.push(pair);
    // Refused reconnects while the load balancer still routes to the dead node are expected;
    // without a listener a second 'error' event would throw and end the whole bench.
    for (const client of [pair.publisher, pair.subscriber]) client.on("error", () => {});
    // mqtt.js retries for ever: a pair that cannot connect fails the run instead of hanging it.
    await withTimeout(
      Promise.all([connected(pair.subscriber), connected(pair.publisher)]),
      15_000,
      `connecting failover pair ${index}`,
    );
    await pair.subscriber.subscribeAsync(pair.topic, { qos: 1 });
    pair.subscriber.on("message", (_topic, payload) => {
      const [seq, sentAt] = payload.toString().split(":").map(Number);
      if (seq === undefined || sentAt === undefined) return;
      pair.received.set(seq, (pair.received.get(seq) ?? 0) + 1);
      if (this.killedAt > 0 && pair.resumedAt === undefined && sentAt > this.killedAt)
        pair.resumedAt = Date.now();
    });
    for (const client of [pair.publisher, pair.subscriber])
      client.on("close", () => {
        if (this.killedAt > 0) pair.dropped = true;
      });
  }

  /** Publishing at the set rate, in 20 ms ticks; mqtt.js queues while a client is away. */
  start(): void {
    const perTick = this.options.ratePerPublisher / 50;
    let owed = 0;
    this.timer = setInterval(() => {
      owed += perTick;
      const count = Math.floor(owed);
      owed -= count;
      for (const pair of this.pairs)
        for (let i = 0; i < count; i++) {
          const seq = pair.next++;
          pair.publisher.publish(pair.topic, `${seq}:${Date.now()}`, { qos: 1 }, (error) => {
            if (!error) pair.acknowledged.add(seq);
          });
        }
    }, 20);
  }

  /** Marks the moment of the kill: resume times count from here. */
  markKill(at: number): void {
    this.killedAt = at;
  }

  stopPublishing(): void {
    clearInterval(this.timer);
  }

  /** Acknowledged messages not (yet) received, over all pairs. */
  missing(): number {
    let missing = 0;
    for (const pair of this.pairs)
      for (const seq of pair.acknowledged) if (!pair.received.has(seq)) missing++;
    return missing;
  }

  report(): PairReport[] {
    return this.pairs.map((pair) => {
      let lost = 0;
      for (const seq of pair.acknowledged) if (!pair.received.has(seq)) lost++;
      let duplicates = 0;
      for (const times of pair.received.values()) duplicates += times - 1;
      return {
        acknowledged: pair.acknowledged.size,
        lost,
        duplicates,
        resumeMs: pair.resumedAt === undefined ? undefined : pair.resumedAt - this.killedAt,
        dropped: pair.dropped,
      };
    });
  }

  close(): void {
    this.stopPublishing();
    for (const pair of this.pairs) {
      pair.publisher.end(true);
      pair.subscriber.end(true);
    }
  }
}
