import { performance } from "node:perf_hooks";
import type { Logger } from "../observability/logger.js";
import type { ReadBatching } from "./read-batching.js";

/** The node's own deliveries that wait for their clients' windows. */
export interface DeliveryBacklog {
  /** Waiting deliveries of clients that acknowledged one within `activeMs`. */
  waitingDeliveries(activeMs: number): number;
  /** Deliveries waiting now, every client's. */
  readonly waiting: number;
  /** Calls `listener` as deliveries are made to wait while at least `limit` wait. */
  watchBacklog(limit: number, listener: () => void): void;
  /** Calls `listener` as acknowledgements bring the deliveries waiting down to `mark` or under. */
  watchDrained(mark: number, listener: () => void): void;
}

/** The node's Redis subscription, whose reading can be paused. */
export interface PausableSubscription {
  /** Stops or restarts reading; true if the subscription could be paused (it is connected). */
  pauseReading(paused: boolean): boolean;
}

export interface SubscriptionThrottleSettings {
  /** Waiting deliveries past which the node stops reading (`redis.backpressure.waitingDeliveries`). */
  waitingDeliveries: number;
  /** How often the backlog and the event loop are looked at (default TICK_MS). */
  tickMs?: number;
}

export interface SubscriptionThrottleMetrics {
  subscriptionPaused(): void;
  subscriptionResumed(seconds: number): void;
  /** The node slept `seconds` between passes over its connections while paused (ReadBatching). */
  pausedSleep(seconds: number): void;
}

/** How often the backlog and the event loop are looked at. */
const TICK_MS = 50;
/** Event-loop utilisation from which the node counts as saturated (or a tick this late). */
const SATURATED = 0.9;
/** A tick this late means the node was busy, or held back by its CPU quota, for that long. */
const LATE_MS = 20;
/** A client that acknowledged nothing for this long is stuck, not slowed by the node. */
const ACTIVE_MS = 1_000;
/** Reading resumes once the backlog is down to this share of its bound. */
const RESUME_AT = 0.5;
const WARN_EVERY_MS = 30_000;

/**
 * Stops reading the node's Redis subscription while the node is saturated and its subscribers'
 * windows are full, so that the messages it cannot deliver yet wait in Redis' output buffer for
 * it, where every node's backpressure sees them (SubscriptionLag) and slows the publishers,
 * instead of being read, decoded and dropped from full queues here. Measured without it: two
 * nodes, publishers on one, subscribers on the other, 0.4 core each, QoS 1: the first node
 * acknowledged 38.6k msg/s and the second delivered 13.3k, spending its CPU on what it then
 * dropped.
 *
 * Both conditions are needed. A backlog on an idle node means slow clients, which the node's
 * queue limits deal with per client: pausing would slow every publisher in the cluster to the
 * slowest subscriber. A saturated node without a backlog sheds QoS 0 at egress as always.
 * Clients that stopped acknowledging altogether are not counted (DeliveryBacklog).
 *
 * While paused, the node mostly waits for acknowledgements: ReadBatching makes it read them
 * in batches rather than one per read.
 */
export class SubscriptionThrottle {
  private readonly timer: NodeJS.Timeout;
  private lastUtilization = performance.eventLoopUtilization();
  private lastTickAt = performance.now();
  private paused = false;
  /** Whether the event loop was saturated at the last look. */
  private saturated = false;
  /** Deliveries waiting at the last look. */
  private waitingAtTick = 0;
  private pausedAt = 0;
  private lastWarnAt = Number.NEGATIVE_INFINITY;
  private readonly tickMs: number;
  /** ReadBatching's sleep total at the last look. */
  private sleptAtTick = 0;

  constructor(
    private readonly settings: SubscriptionThrottleSettings,
    private readonly backlog: DeliveryBacklog,
    private readonly subscription: PausableSubscription,
    private readonly metrics: SubscriptionThrottleMetrics,
    private readonly log: Logger,
    /** Batches the node's reads while paused: the acknowledgements it waits for come many a read. */
    private readonly batching?: ReadBatching,
  ) {
    this.tickMs = settings.tickMs ?? TICK_MS;
    this.timer = setInterval(() => this.tick(), this.tickMs);
    this.timer.unref();
    backlog.watchBacklog(settings.waitingDeliveries, () => {
      if (this.paused) return;
      // Saturated at the last look, busy since, or a burst: a node that had caught up reads
      // what waited for it (megabytes, in the kernel's buffers) in a few milliseconds, well
      // before the next look, and what passed the bound would be dropped from full queues.
      const overdue = performance.now() - this.lastTickAt >= this.tickMs + LATE_MS;
      const burst = backlog.waiting - this.waitingAtTick >= settings.waitingDeliveries;
      if (this.saturated || overdue || burst) this.pause(settings.waitingDeliveries);
    });
    // Reads again as soon as the backlog is down to the mark, not at the next look: by then
    // the subscribers have often taken the rest and the node sits idle, with the cluster's
    // publishers held for it meanwhile.
    backlog.watchDrained(Math.floor(settings.waitingDeliveries * RESUME_AT), () => {
      if (this.paused) this.resume();
    });
  }

  /** Whether the node is not reading its subscription now. */
  get active(): boolean {
    return this.paused;
  }

  stop(): void {
    clearInterval(this.timer);
    if (this.paused) this.resume();
    this.countSleep();
  }

  private tick(): void {
    const utilization = performance.eventLoopUtilization(this.lastUtilization);
    this.lastUtilization = performance.eventLoopUtilization();
    const now = performance.now();
    const lateMs = now - this.lastTickAt - this.tickMs;
    this.lastTickAt = now;
    this.countSleep();
    // A CPU quota (a container's limit) stops a node that has work without its event loop
    // being busy: that shows as a late tick, not in the utilisation. Sleeping between passes
    // (ReadBatching) counts as busy: it fills only the gaps between acknowledgements that come
    // faster than the gap, so the node stays paused until they have halved the backlog. Left
    // out, it made a node under a CPU quota look idle and read again too soon: a burst from
    // Redis into full queues, and drops (the Redis Cluster backpressure test, once in four).
    const saturated = utilization.utilization >= SATURATED || lateMs >= LATE_MS;
    this.saturated = saturated;
    const waiting = this.backlog.waitingDeliveries(ACTIVE_MS);
    this.waitingAtTick = this.backlog.waiting;
    const bound = this.settings.waitingDeliveries;
    if (!this.paused) {
      if (saturated && waiting >= bound) this.pause(waiting);
    } else if (!saturated || waiting <= bound * RESUME_AT) {
      this.resume();
    } else {
      // A subscriber connection made anew since (a reconnect) reads until told otherwise.
      this.subscription.pauseReading(true);
    }
  }

  /** Counts in the metrics what was slept since the last call. */
  private countSleep(): void {
    if (this.batching === undefined) return;
    const slept = this.batching.sleptMs - this.sleptAtTick;
    this.sleptAtTick = this.batching.sleptMs;
    if (slept > 0) this.metrics.pausedSleep(slept / 1000);
  }

  private pause(waiting: number): void {
    if (!this.subscription.pauseReading(true)) return;
    this.paused = true;
    this.batching?.start();
    this.pausedAt = performance.now();
    this.metrics.subscriptionPaused();
    if (this.pausedAt - this.lastWarnAt < WARN_EVERY_MS) return;
    this.lastWarnAt = this.pausedAt;
    this.log.info(
      { event: "cluster.subscription_paused", waitingDeliveries: waiting },
      "this node's subscribers are behind and the node is saturated: it reads its Redis subscription again once they catch up",
    );
  }

  private resume(): void {
    this.paused = false;
    this.batching?.stop();
    this.subscription.pauseReading(false);
    this.metrics.subscriptionResumed((performance.now() - this.pausedAt) / 1000);
  }
}
