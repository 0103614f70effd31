import hdr from "hdr-histogram-js";
import type { LoadClient } from "./load-client.js";
import type { SubscriptionReport } from "./messages.js";
import { PAYLOAD_HEADER_BYTES } from "./payload.js";
import type { SubscriberPlan } from "./plan.js";
import { SequenceTracker } from "./sequence-tracker.js";

type Histogram = ReturnType<typeof hdr.build>;

/** Latencies in microseconds, 3 significant digits (0.1 % resolution), up to 2 minutes. */
export function createLatencyHistogram(): Histogram {
  return hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 120_000_000,
    numberOfSignificantValueDigits: 3,
    autoResize: true,
  });
}

interface Subscription {
  plan: SubscriberPlan;
  /** By publisher index; one map for all members of a shared group. */
  trackers: Map<number, SequenceTracker>;
  /** Messages this subscription's client received (a group member's own share). */
  received: number;
  /** The group's first member here: the one whose report carries the group's losses. */
  reportsGroup: boolean;
}

/**
 * The subscriptions of one generator process: per subscription and publisher, which sequence
 * numbers arrived (losses and duplicates); for the measurement window, how many messages
 * arrived and their end-to-end latency (send time from the payload, receive time here).
 * Members of a shared group share their trackers: the group as a whole should receive each
 * message once, so losses and duplicates are the group's (reported on its first member).
 */
export class SubscriberSet {
  private readonly subscriptions: Subscription[] = [];
  private receivedCount = 0;
  private windowReceivedCount = 0;
  private windowStartNs = BigInt(Number.MAX_SAFE_INTEGER) * 1_000_000n;
  private windowEndNs = 0n;
  readonly histogram = createLatencyHistogram();
  private readonly groups = new Map<string, Map<number, SequenceTracker>>();

  /** Attaches a connected, subscribed client to its subscription's accounting. */
  attach(client: LoadClient, plan: SubscriberPlan): void {
    const shared = plan.group === undefined ? undefined : this.groups.get(plan.group);
    const trackers = shared ?? new Map<number, SequenceTracker>();
    if (plan.group !== undefined && shared === undefined) this.groups.set(plan.group, trackers);
    const subscription: Subscription = {
      plan,
      trackers,
      received: 0,
      reportsGroup: shared === undefined,
    };
    this.subscriptions.push(subscription);
    client.on("message", (_topic, payload) => this.accept(subscription, payload));
  }

  /** Messages arriving in [start, end) count towards throughput and latency. */
  setWindow(startNs: bigint, endNs: bigint): void {
    this.windowStartNs = startNs;
    this.windowEndNs = endNs;
  }

  /**
   * Messages received, a duplicate not counted again: what the coordinator waits for once the
   * publishers stop (a group's redeliveries must not end that wait early).
   */
  get received(): number {
    return this.receivedCount;
  }

  get windowReceived(): number {
    return this.windowReceivedCount;
  }

  /** For end-to-end flow control: see DeliveredThrough. */
  deliveredThrough(publisherCount: number): Array<number | null> {
    const through: Array<number | null> = new Array(publisherCount).fill(null);
    for (const { plan, trackers } of this.subscriptions) {
      for (const publisher of plan.expectsFrom) {
        const seen = (trackers.get(publisher)?.highest ?? -1) + 1;
        const current = through[publisher];
        through[publisher] =
          current === null || current === undefined ? seen : Math.min(current, seen);
      }
    }
    return through;
  }

  /** Losses and duplicates per subscription, given how many each publisher published. */
  reports(published: Record<number, number>): SubscriptionReport[] {
    return this.subscriptions.map(({ plan, trackers, received, reportsGroup }) => {
      let duplicates = 0;
      let lost = 0;
      if (!reportsGroup) return { index: plan.index, received, lost, duplicates };
      for (const tracker of trackers.values()) duplicates += tracker.duplicates;
      for (const publisher of plan.expectsFrom) {
        const count = published[publisher] ?? 0;
        lost += trackers.get(publisher)?.lost(count) ?? count;
      }
      return { index: plan.index, received, lost, duplicates };
    });
  }

  private accept(subscription: Subscription, payload: Buffer): void {
    const now = process.hrtime.bigint();
    if (payload.length < PAYLOAD_HEADER_BYTES) return;
    const publisher = payload.readUInt32BE(0);
    let tracker = subscription.trackers.get(publisher);
    if (!tracker) {
      tracker = new SequenceTracker();
      subscription.trackers.set(publisher, tracker);
    }
    if (tracker.record(payload.readUInt32BE(4))) this.receivedCount++;
    subscription.received++;
    if (now >= this.windowStartNs && now < this.windowEndNs) {
      this.windowReceivedCount++;
      const latencyMicros = Number((now - payload.readBigUInt64BE(8)) / 1000n);
      this.histogram.recordValue(Math.max(1, latencyMicros));
    }
  }
}
