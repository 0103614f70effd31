import { EventEmitter } from "node:events";
import type { Logger } from "../observability/logger.js";
import type { RedisClient } from "../redis/redis-client.js";

export interface RedisFenceOptions {
  /** How often a PING goes out (one at a time). */
  probeMs: number;
  /** No round trip for this long: fence. */
  afterMs: number;
}

/** What the fence reports, kept narrow so the module can be reasoned about alone. */
export interface RedisFenceMetrics {
  observeRedisRoundTrip(seconds: number): void;
  setFenced(fenced: boolean): void;
}

export interface RedisFenceEvents {
  /** No round trip for `afterMs`: the node must let go of its clients and turn not-ready. */
  fenced: [];
  /** A round trip again after a fence. */
  unfenced: [];
}

/**
 * Whether this node still reaches Redis, from the answers to a PING it sends every `probeMs`.
 * In a partition the node's TCP connections to Redis neither fail nor answer (the packets are
 * dropped, and TCP retransmits for many minutes), so ioredis reports nothing; meanwhile the
 * node cannot acknowledge or deliver, and the rest of the cluster stops hearing from it. After
 * `afterMs` without an answer the fence goes up ('fenced'); the first answer after that takes it
 * down ('unfenced'). What the node does then is its wiring's (ClusterSignals, readiness).
 */
export class RedisFence extends EventEmitter<RedisFenceEvents> {
  private timer: NodeJS.Timeout | undefined;
  private lastAnswerAt = performance.now();
  private probing = false;
  private up = false;

  constructor(
    private readonly redis: RedisClient,
    private readonly options: RedisFenceOptions,
    private readonly metrics: RedisFenceMetrics,
    private readonly log: Logger,
  ) {
    super();
  }

  /** Whether the fence is up: the node must not serve clients. */
  get fenced(): boolean {
    return this.up;
  }

  start(): void {
    this.metrics.setFenced(false);
    this.lastAnswerAt = performance.now();
    this.timer = setInterval(() => this.tick(), this.options.probeMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private tick(): void {
    const silentMs = performance.now() - this.lastAnswerAt;
    if (!this.up && silentMs > this.options.afterMs) this.raise(silentMs);
    if (this.probing) return;
    this.probing = true;
    const sentAt = performance.now();
    this.redis.ping().then(
      () => {
        this.probing = false;
        const now = performance.now();
        this.lastAnswerAt = now;
        this.metrics.observeRedisRoundTrip((now - sentAt) / 1000);
        if (this.up) this.lower(now - sentAt);
      },
      () => {
        // Redis refused or the connection dropped: only answers count, silence is timed above.
        this.probing = false;
      },
    );
  }

  private raise(silentMs: number): void {
    this.up = true;
    this.metrics.setFenced(true);
    this.log.error(
      { event: "redis.fenced", silentMs: Math.round(silentMs), afterMs: this.options.afterMs },
      "no Redis round trip for too long: fencing this node (clients disconnected, not ready)",
    );
    this.emit("fenced");
  }

  private lower(roundTripMs: number): void {
    this.up = false;
    this.metrics.setFenced(false);
    this.log.warn(
      { event: "redis.unfenced", roundTripMs: Math.round(roundTripMs) },
      "Redis answers again: the node serves clients again",
    );
    this.emit("unfenced");
  }
}
